package build

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/matrix"
)

type fakeRunner struct {
	calls [][]string
	env   [][]string
	out   map[string]string
	err   error
}

func (f *fakeRunner) Run(ctx context.Context, c run.Cmd) ([]byte, error) {
	f.calls = append(f.calls, c.Args)
	f.env = append(f.env, c.Env)
	return []byte(f.out[strings.Join(c.Args, " ")]), f.err
}

func req(layout matrix.Layout, goVersion string) *Request {
	return &Request{GOPATH: "/w/gopath", ImportPath: "github.com/opencontainers/runc", Layout: layout,
		Tags: []string{"seccomp", "nokmem"}, LDFlagsX: []string{"main.version=1.0.0-rc9"}, Package: ".",
		Output: "/d/runc", SourceDate: time.Unix(1569931200, 0), Toolchain: Toolchain{GoBin: "go", Version: goVersion}}
}

func TestArgsPerLayoutAndGo(t *testing.T) {
	args, env, err := Args(req(matrix.LayoutGOPATH, "go1.26.8"))
	if err != nil {
		t.Fatal(err)
	}
	want := "build -trimpath -buildvcs=false -tags seccomp,nokmem -ldflags -buildid= -X main.version=1.0.0-rc9 -o /d/runc ."
	if got := strings.Join(args, " "); got != want {
		t.Errorf("args:\n%s\nwant\n%s", got, want)
	}
	if env["GO111MODULE"] != "off" || env["SOURCE_DATE_EPOCH"] != "1569931200" || env["GOFLAGS"] != "" || env["CGO_ENABLED"] != "1" {
		t.Errorf("env %v", env)
	}
	args, env, _ = Args(req(matrix.LayoutGoMod, "go1.26.8"))
	if args[1] != "-mod=vendor" || env["GO111MODULE"] != "on" || env["GOPROXY"] != "off" {
		t.Errorf("gomod: %v %v", args, env)
	}
	_, env, _ = Args(req(matrix.LayoutGodeps, "go1.26.8"))
	if env["GOPATH"] != "/w/gopath/src/github.com/opencontainers/runc/Godeps/_workspace:/w/gopath" {
		t.Errorf("godeps GOPATH %s", env["GOPATH"])
	}
	// Go 1.12 has no -trimpath and no -buildvcs.
	args, _, _ = Args(req(matrix.LayoutGOPATH, "go1.12"))
	if s := strings.Join(args, " "); strings.Contains(s, "-trimpath ") || strings.Contains(s, "buildvcs") || !strings.Contains(s, "-gcflags=all=-trimpath=/w/gopath/src") {
		t.Errorf("go1.12 args: %s", s)
	}
}

func TestContainerModeRunsTheSameBuildInTheEraImage(t *testing.T) {
	f := &fakeRunner{}
	b := &Builder{Runner: f, Docker: "docker"}
	r := req(matrix.LayoutGOPATH, "go1.12")
	r.Mode = ModeContainer
	r.Output = t.TempDir() + "/runc"
	r.Toolchain = Toolchain{GoBin: "go", Version: "go1.12", Image: "golang:1.12"}
	// The fake writes no binary, so Build fails after the command ran.
	b.Build(context.Background(), r)
	got := strings.Join(f.calls[0], " ")
	for _, want := range []string{"docker run --rm --network=none -v /w/gopath:/w/gopath", "-w /w/gopath/src/github.com/opencontainers/runc", "-e GO111MODULE=off", "golang:1.12 go build"} {
		if !strings.Contains(got, want) {
			t.Errorf("container command lacks %q:\n%s", want, got)
		}
	}
}

func TestBuildFailureRemovesOutput(t *testing.T) {
	f := &fakeRunner{err: errors.New("exit status 2")}
	r := req(matrix.LayoutGOPATH, "go1.26.8")
	r.Output = t.TempDir() + "/runc"
	_, err := (&Builder{Runner: f}).Build(context.Background(), r)
	if err == nil || !strings.Contains(err.Error(), "go build failed") {
		t.Fatalf("err %v", err)
	}
}

func TestResolveToolchain(t *testing.T) {
	f := &fakeRunner{out: map[string]string{"go env GOVERSION": "go1.26.8\n"}}
	tc, err := ResolveToolchain(context.Background(), f, ToolchainRequest{Mode: ModeHost, Era: "1.12"})
	if err != nil || tc.Version != "go1.26.8" {
		t.Fatalf("%+v %v", tc, err)
	}
	if _, err := ResolveToolchain(context.Background(), f, ToolchainRequest{Mode: ModeHost, Toolchain: "latest; rm -rf /"}); err == nil {
		t.Fatal("bad toolchain name accepted")
	}
	tc, _ = ResolveToolchain(context.Background(), f, ToolchainRequest{Mode: ModeContainer, Era: "1.12"})
	if tc.Image != "golang:1.12" {
		t.Fatalf("image %s", tc.Image)
	}
	f.err = errors.New("not found")
	if _, err := ResolveToolchain(context.Background(), f, ToolchainRequest{Mode: ModeHost, GoBin: "/nope/go"}); err == nil || !strings.Contains(err.Error(), "NOKMEM_GO") {
		t.Fatalf("missing Go: %v", err)
	}
}

func TestCheckCgoDeps(t *testing.T) {
	f := &fakeRunner{err: errors.New("exit status 1")}
	err := CheckCgoDeps(context.Background(), f, []string{"seccomp", "nokmem"})
	if err == nil || !strings.Contains(err.Error(), "apt-get install libseccomp-dev") {
		t.Fatalf("%v", err)
	}
	if got := strings.Join(f.calls[0], " "); got != "pkg-config --exists libseccomp" {
		t.Errorf("ran %s", got)
	}
	if err := CheckCgoDeps(context.Background(), f, []string{"nokmem"}); err != nil {
		t.Errorf("no seccomp tag: %v", err)
	}
}
