package container

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/nokmem/nokmem/internal/fixture"
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

// With a Docker engine (opt-in: none runs on the CI machine), the image
// catches a kmem-writing build and passes a nokmem one.
func TestVerifierImageAgainstEngine(t *testing.T) {
	if !Available(context.Background(), run.Local{}, "") {
		t.Skip("no Docker engine answers (start one and set DOCKER_HOST to run this test)")
	}
	r := fixture.NewRuncRepo(t)
	v := &Verifier{Runner: run.Local{}, Root: "../..", Privileged: os.Getenv("NOKMEM_DOCKER_PRIVILEGED") != "0"}
	for _, c := range []struct {
		tags []string
		pass bool
	}{{[]string{"seccomp"}, false}, {[]string{"seccomp", "nokmem"}, true}} {
		rep, err := v.Verify(context.Background(), "runc", r.BuildRunc(t, "v1.0.0-rc9", c.tags, false))
		if err != nil {
			t.Fatal(err)
		}
		if rep.Passed != c.pass {
			t.Errorf("tags %v: passed=%v\n%s", c.tags, rep.Passed, rep.Summary())
		}
	}
}
