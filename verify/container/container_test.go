package container

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nokmem/nokmem/internal/run"
)

func TestRunArgs(t *testing.T) {
	v := &Verifier{Privileged: true, Dynamic: "require"}
	got := strings.Join(v.RunArgs("img:1", "/o", "runc", "runc"), " ")
	want := "docker run --rm --network=none --privileged -v /sys/fs/cgroup:/sys/fs/cgroup --tmpfs /run:rw,exec --tmpfs /tmp:rw,exec,mode=1777 -v /o:/out img:1 -json /out/report.json -dynamic require runc /artifact/runc"
	if got != want {
		t.Errorf("privileged:\n%s\nwant\n%s", got, want)
	}
	v = &Verifier{}
	got = strings.Join(v.RunArgs("img:1", "/o", "runc", "runc"), " ")
	if strings.Contains(got, "--privileged") || !strings.Contains(got, "--cap-add ALL --cap-drop SYS_RESOURCE") {
		t.Errorf("unprivileged: %s", got)
	}
}

func TestSharedLibrariesFromHeaders(t *testing.T) {
	libs, err := SharedLibraries("/bin/ls")
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(libs, " ")
	if !strings.Contains(joined, "libc.so.6") || !strings.Contains(joined, "ld-linux-x86-64.so.2") {
		t.Errorf("libraries of /bin/ls: %v", libs)
	}
}

type fake struct{ err error }

func (f fake) Run(ctx context.Context, c run.Cmd) ([]byte, error) { return nil, f.err }

func TestAvailable(t *testing.T) {
	if !Available(context.Background(), fake{}, "") {
		t.Error("engine that answers is not available")
	}
	if Available(context.Background(), fake{errors.New("Cannot connect")}, "") {
		t.Error("engine that does not answer is available")
	}
}
