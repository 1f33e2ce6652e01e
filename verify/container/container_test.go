package container

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nokmem/nokmem/internal/fixture"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/internal/testenv"
	"github.com/nokmem/nokmem/verify"
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
	// A dynamic glibc binary of our own: the host's /bin/ls may be
	// anything (busybox, musl, static).
	testenv.RequireTools(t, "gcc")
	dir := t.TempDir()
	src, bin := filepath.Join(dir, "hello.c"), filepath.Join(dir, "hello")
	if err := os.WriteFile(src, []byte("#include <stdio.h>\nint main(void) { puts(\"hello\"); return 0; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := (run.Local{}).Run(context.Background(), run.Cmd{Args: []string{"gcc", "-o", bin, src}}); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	libs, err := SharedLibraries(bin)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(libs, " ")
	if !strings.Contains(joined, "libc.so.6") || !strings.Contains(joined, "ld-linux-x86-64.so.2") {
		t.Errorf("libraries of a dynamic glibc binary: %v", libs)
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

// needEngine skips without a Docker engine, and fails under CI=true, where
// .ci/run starts one.
func needEngine(t *testing.T) {
	t.Helper()
	if !Available(context.Background(), run.Local{}, "") {
		if testenv.InCI() {
			t.Fatalf("CI=true but no Docker engine answers (DOCKER_HOST=%q): .ci/run starts one", os.Getenv("DOCKER_HOST"))
		}
		t.Skip("no Docker engine answers (start one and set DOCKER_HOST to run this test)")
	}
}

// With a Docker engine (.ci/run starts a private one; elsewhere opt-in),
// the image catches a kmem-writing build and passes a nokmem one, static
// and dynamically linked (its libraries copied into the image). Under
// CI=true the dynamic check must have run inside the container.
func TestVerifierImageAgainstEngine(t *testing.T) {
	needEngine(t)
	r := fixture.NewRuncRepo(t)
	v := &Verifier{Runner: run.Local{}, Root: "../..", Privileged: os.Getenv("NOKMEM_DOCKER_PRIVILEGED") != "0"}
	if testenv.InCI() {
		v.Dynamic = "require"
	}
	for _, c := range []struct {
		tags []string
		link string
		pass bool
	}{
		{[]string{"seccomp"}, fixture.LinkPureGo, false},
		{[]string{"seccomp", "nokmem"}, fixture.LinkPureGo, true},
		{[]string{"seccomp", "nokmem"}, fixture.LinkDynamic, true},
	} {
		rep, err := v.Verify(context.Background(), "runc", r.BuildRuncLinked(t, "v1.0.0-rc9", c.tags, false, c.link))
		if err != nil {
			t.Fatal(err)
		}
		if rep.Passed != c.pass {
			t.Errorf("tags %v %s: passed=%v\n%s", c.tags, c.link, rep.Passed, rep.Summary())
		}
		want := verify.DynPass
		if !c.pass {
			want = verify.DynFail
		}
		if testenv.InCI() && (rep.Dynamic == nil || rep.Dynamic.Status != want) {
			t.Errorf("tags %v %s: the dynamic check in the container did not give %s:\n%s", c.tags, c.link, want, rep.Summary())
		}
	}
}

// The path a user takes: go tool mage verify:file with
// NOKMEM_VERIFY_RUNTIME=docker verifies in the container, writes the report
// and sets the exit status.
func TestVerifyFileTargetInContainer(t *testing.T) {
	needEngine(t)
	r := fixture.NewRuncRepo(t)
	dist := t.TempDir()
	for _, c := range []struct {
		tags []string
		pass bool
	}{{[]string{"seccomp", "nokmem"}, true}, {[]string{"seccomp"}, false}} {
		bin := r.BuildRunc(t, "v1.0.0-rc9", c.tags, false)
		cmd := exec.Command("go", "tool", "mage", "verify:file", "runc", bin)
		cmd.Dir = "../.."
		cmd.Env = append(os.Environ(), "NOKMEM_VERIFY_RUNTIME=docker", "NOKMEM_DIST="+dist)
		if testenv.InCI() {
			cmd.Env = append(cmd.Env, "NOKMEM_DYNAMIC=require")
		}
		out, err := cmd.CombinedOutput()
		if (err == nil) != c.pass || !strings.Contains(string(out), "verifying in the verifier container") {
			t.Errorf("tags %v: %v\n%s", c.tags, err, out)
		}
		reports, _ := filepath.Glob(filepath.Join(dist, "reports", "file-runc-*.verify.json"))
		if len(reports) == 0 {
			t.Errorf("tags %v: no report in %s", c.tags, dist)
		}
	}
}
