package build

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
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
	for _, want := range []string{"docker run --rm --network=none --name " + ContainerPrefix, " -v /w/gopath:/w/gopath ", fmt.Sprintf(" --user %d:%d ", os.Getuid(), os.Getgid()), "-w /w/gopath/src/github.com/opencontainers/runc", "-e GO111MODULE=off", "golang:1.12 go build"} {
		if !strings.Contains(got, want) {
			t.Errorf("container command lacks %q:\n%s", want, got)
		}
	}
}

func TestBuildFailureRemovesOutput(t *testing.T) {
	f := &fakeRunner{err: errors.New("exit status 2")}
	r := req(matrix.LayoutGOPATH, "go1.26.8")
	r.Output = t.TempDir() + "/runc"
	// What a link that failed half-way leaves behind.
	if err := os.WriteFile(r.Output, []byte("\x7fELF half"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := (&Builder{Runner: f}).Build(context.Background(), r)
	if err == nil || !strings.Contains(err.Error(), "go build failed") {
		t.Fatalf("err %v", err)
	}
	if _, err := os.Lstat(r.Output); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed build left its output %s (%v)", r.Output, err)
	}
}

func TestResolveToolchain(t *testing.T) {
	f := &fakeRunner{out: map[string]string{"go version": "go version go1.26.8 linux/amd64\n"}}
	tc, err := ResolveToolchain(context.Background(), f, ToolchainRequest{Mode: ModeHost, Era: "1.12"})
	if err != nil || tc.Version != "go1.26.8" || tc.Source != SourceHost {
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

// An era toolchain is the newest patch the proxy lists, downloaded through
// the go command's toolchain switch, and run with GOROOT set (Go before
// 1.10 cannot find its root by itself).
func TestResolveEraToolchain(t *testing.T) {
	f := &fakeRunner{out: map[string]string{
		"go version": "go version go1.26.8 linux/amd64\n",
		"go list -m -versions golang.org/toolchain": "golang.org/toolchain v0.0.1-go1.8.linux-amd64 v0.0.1-go1.8.7.linux-amd64 v0.0.1-go1.8.3.linux-amd64 v0.0.1-go1.8.7.darwin-amd64 v0.0.1-go1.9.7.linux-amd64\n",
		"go env GOROOT": "/mod/golang.org/toolchain@v0.0.1-go1.8.7.linux-amd64\n",
		"/mod/golang.org/toolchain@v0.0.1-go1.8.7.linux-amd64/bin/go version": "go version go1.8.7 linux/amd64\n",
	}}
	cache := t.TempDir()
	tc, err := ResolveToolchain(context.Background(), f, ToolchainRequest{Mode: ModeHost, Era: "1.8", Default: SourceEra, CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	if tc.Version != "go1.8.7" || tc.GOROOT != "/mod/golang.org/toolchain@v0.0.1-go1.8.7.linux-amd64" || tc.Source != SourceEra || tc.Env()["GOROOT"] != tc.GOROOT {
		t.Fatalf("era toolchain %+v", tc)
	}
	var sawSwitch bool
	for i, c := range f.calls {
		if strings.Join(c, " ") == "go env GOROOT" && slices.Contains(f.env[i], "GOTOOLCHAIN=go1.8.7") {
			sawSwitch = true
		}
	}
	if !sawSwitch {
		t.Errorf("go1.8.7 was not fetched through GOTOOLCHAIN: %v %v", f.calls, f.env)
	}
	// The resolution is remembered: offline, a cache hit needs no listing.
	f.out["go list -m -versions golang.org/toolchain"] = ""
	n := len(f.calls)
	if tc2, err := ResolveToolchain(context.Background(), f, ToolchainRequest{Mode: ModeHost, Era: "1.8", Toolchain: SourceEra, CacheDir: cache}); err != nil || tc2.Version != "go1.8.7" {
		t.Fatalf("remembered era: %+v %v", tc2, err)
	}
	for _, c := range f.calls[n:] {
		if slices.Contains(c, "list") {
			t.Errorf("listed the proxy again: %v", c)
		}
	}
}

func TestParseGoVersionEveryEra(t *testing.T) {
	for out, want := range map[string]string{
		"go version go1.7.6 linux/amd64":                                             "go1.7.6",
		"go version go1.8 linux/amd64":                                               "go1.8",
		"go version go1.10.8 linux/amd64":                                            "go1.10.8",
		"go version go1.11.13 linux/amd64":                                           "go1.11.13",
		"go version go1.16.15 linux/amd64":                                           "go1.16.15",
		"go version go1.21.0 linux/amd64":                                            "go1.21.0",
		"go version go1.22rc1 linux/amd64":                                           "go1.22rc1",
		"go version go1.26.8 linux/amd64":                                            "go1.26.8",
		"go version go1.26.8 X:nocoverageredesign linux/amd64":                       "go1.26.8",
		"go: downloading go1.8.7\ngo version go1.8.7 linux/amd64":                    "go1.8.7",
		"go version devel go1.27-1a2b3c4d Tue Nov 3 12:00:00 2026 +0000 linux/amd64": "go1.27",
	} {
		got, err := ParseGoVersion(out)
		if err != nil || got != want {
			t.Errorf("ParseGoVersion(%q) = %q, %v; want %q", out, got, err, want)
		}
	}
	for _, bad := range []string{"", "go version  linux/amd64", "gccgo (GCC) 12.2.0"} {
		if v, err := ParseGoVersion(bad); err == nil {
			t.Errorf("ParseGoVersion(%q) = %q, want an error", bad, v)
		}
	}
}

func TestPickLatestPatch(t *testing.T) {
	vs := strings.Fields("v0.0.1-go1.7.1.linux-amd64 v0.0.1-go1.7.6.linux-amd64 v0.0.1-go1.8.linux-amd64 v0.0.1-go1.10.linux-amd64 v0.0.1-go1.10.8.linux-amd64 v0.0.1-go1.12.17.linux-arm64 v0.0.1-go1.21.0.linux-amd64 v0.0.1-go1.21rc2.linux-amd64")
	for minor, want := range map[string]string{"1.7": "go1.7.6", "1.8": "go1.8", "1.10": "go1.10.8", "1.21": "go1.21.0"} {
		if got, err := PickLatestPatch(vs, minor); err != nil || got != want {
			t.Errorf("PickLatestPatch(%s) = %q, %v; want %s", minor, got, err, want)
		}
	}
	if _, err := PickLatestPatch(vs, "1.12"); err == nil {
		t.Error("an arm64-only minor was accepted for linux/amd64")
	}
}

func TestStaticArgsFollowTheReleaseMakefile(t *testing.T) {
	r := req(matrix.LayoutGOPATH, "go1.26.8")
	r.Static = &Static{Tags: []string{"netgo", "osusergo", "static_build"}, InstallSuffix: "netgo"}
	args, env, err := Args(r)
	if err != nil {
		t.Fatal(err)
	}
	want := "build -installsuffix netgo -trimpath -buildvcs=false -tags seccomp,nokmem,netgo,osusergo,static_build -ldflags -w -extldflags -static -buildid= -X main.version=1.0.0-rc9 -o /d/runc ."
	if got := strings.Join(args, " "); got != want {
		t.Errorf("static args:\n%s\nwant\n%s", got, want)
	}
	if env["CGO_ENABLED"] != "1" || env["GOAMD64"] != "v1" || env["CC"] != "gcc" || env["CGO_LDFLAGS"] != "-O2 -g" || env["GOEXPERIMENT"] != "" {
		t.Errorf("static env %v", env)
	}
	// Go before 1.10 has no package patterns in -gcflags; before 1.13 tags are space-separated.
	args, _, _ = Args(req(matrix.LayoutGOPATH, "go1.8.7"))
	if s := strings.Join(args, " "); !strings.Contains(s, "-gcflags=-trimpath=/w/gopath/src") || !strings.Contains(s, "-tags seccomp nokmem") {
		t.Errorf("go1.8 args: %s", s)
	}
}

func TestBaseEnvKeepsOnlyLocationsNotBuildInputs(t *testing.T) {
	got := BaseEnv([]string{"PATH=/bin", "HOME=/root", "GOFLAGS=-tags=x", "GOAMD64=v3", "CGO_CFLAGS=-march=native", "KUBE_GIT_VERSION_FILE=/x",
		"GOLDFLAGS=-s", "GOPROXY=https://proxy.internal", "GOCACHE=/c", "CC=clang", "GOEXPERIMENT=boringcrypto", "KUBE_BUILD_PLATFORMS=linux/arm64"})
	want := []string{"PATH=/bin", "HOME=/root", "GOPROXY=https://proxy.internal", "GOCACHE=/c"}
	if !slices.Equal(got, want) {
		t.Errorf("BaseEnv = %v, want %v", got, want)
	}
}

func TestCheckCgoDeps(t *testing.T) {
	f := &fakeRunner{out: map[string]string{"gcc --version": "gcc (Debian 12.2.0-14) 12.2.0\nCopyright", "pkg-config --modversion libseccomp": "2.5.4\n",
		"pkg-config --variable=libdir libseccomp": t.TempDir() + "\n",
		// A .pc file on PKG_CONFIG_PATH can add compiler flags: recorded.
		"pkg-config --cflags --libs --static libseccomp": "-march=x86-64-v3  -lseccomp\n"}}
	info, err := CheckCgoDeps(context.Background(), f, []string{"seccomp", "nokmem"}, false)
	if err != nil || info.CC != "gcc (Debian 12.2.0-14) 12.2.0" || info.Libseccomp != "2.5.4" || info.PkgConfig != "-march=x86-64-v3 -lseccomp" {
		t.Fatalf("%+v %v", info, err)
	}
	// A static build needs libseccomp.a, which the fake libdir lacks.
	if _, err := CheckCgoDeps(context.Background(), f, []string{"seccomp"}, true); err == nil || !strings.Contains(err.Error(), "libseccomp.a") {
		t.Fatalf("missing static archive: %v", err)
	}
	f.err = errors.New("exit status 1")
	if _, err := CheckCgoDeps(context.Background(), f, []string{"seccomp", "nokmem"}, false); err == nil || !strings.Contains(err.Error(), "gcc") {
		t.Fatalf("%v", err)
	}
}
