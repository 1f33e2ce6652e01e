package build

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nokmem/nokmem/internal/run"
)

// The trim flags reach every package through the variables Kubernetes'
// golang.sh reads, in the form each Go understands.
func TestTrimFlagsPerGo(t *testing.T) {
	for _, c := range []struct {
		goVersion, flags, gcflags string
	}{
		{"go1.26.8", "-trimpath", ""},
		{"go1.13.15", "-trimpath", ""},
		// No -trimpath before Go 1.13; package patterns from Go 1.10.
		{"go1.11.13", "-gcflags=all=-trimpath=/c/k -asmflags=all=-trimpath=/c/k", ""},
		{"go1.10.8", "-gcflags=all=-trimpath=/c/k -asmflags=all=-trimpath=/c/k", ""},
		// Go 1.9 applies -gcflags to every package; 1.9's golang.sh passes
		// -gcflags "${GOGCFLAGS:-}" after GOFLAGS.
		{"go1.9.3", "-asmflags=-trimpath=/c/k", "-trimpath=/c/k"},
	} {
		f, gc := TrimFlags(c.goVersion, "/c/k")
		if strings.Join(f, " ") != c.flags || gc != c.gcflags {
			t.Errorf("%s: GOFLAGS %q GOGCFLAGS %q", c.goVersion, f, gc)
		}
	}
}

// -tags=nokmem is the last word of GOFLAGS: Kubernetes 1.18-1.22 take the
// text after the last "-tags=" up to the next "-".
func TestKubeletEnv(t *testing.T) {
	r := &KubeletRequest{Tree: "/c/gopath/src/k8s.io/kubernetes", GOPATH: "/c/gopath", Tag: true, Version: "v1.14.10", Commit: "abc",
		SourceDate: time.Unix(100, 0), Toolchain: Toolchain{GoBin: "/tc/bin/go", Version: "go1.12.17", GOROOT: "/tc"}, Goldflags: "-buildid=", GoldflagsSet: true}
	env := KubeletEnv(r)
	want := map[string]string{
		"GOFLAGS":   "-gcflags=all=-trimpath=/c/gopath/src/k8s.io/kubernetes -asmflags=all=-trimpath=/c/gopath/src/k8s.io/kubernetes -tags=nokmem",
		"GOLDFLAGS": "-buildid=", "KUBE_GIT_VERSION": "v1.14.10", "KUBE_GIT_COMMIT": "abc", "KUBE_GIT_TREE_STATE": "clean",
		"KUBE_STATIC_OVERRIDES": "kubelet", "SOURCE_DATE_EPOCH": "100", "GOROOT": "/tc", "GOPATH": "/c/gopath", "GO111MODULE": "off", "GOAMD64": "v1", "GOENV": "off",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s=%q, want %q", k, env[k], v)
		}
	}
	for _, k := range []string{"GOGCFLAGS", "KUBE_GIT_VERSION_FILE", "KUBE_OUTPUT_SUBPATH", "KUBE_BUILD_PLATFORMS"} {
		if v, ok := env[k]; ok {
			t.Errorf("%s=%q is set", k, v)
		}
	}
	r.Tag, r.GoldflagsSet, r.Toolchain.Version = false, false, "go1.26.8"
	if env := KubeletEnv(r); env["GOFLAGS"] != "-trimpath" || env["GOLDFLAGS"] != "" {
		t.Errorf("patch build, Go 1.26: GOFLAGS %q GOLDFLAGS %q", env["GOFLAGS"], env["GOLDFLAGS"])
	}
}

func TestSafeKubePath(t *testing.T) {
	if err := SafeKubePath("/home/ci/.cache/nokmem/work/kubelet/v1.13.12+x/gopath"); err != nil {
		t.Error(err)
	}
	for _, p := range []string{"/home/a b/cache", "/tmp/$(reboot)", "/tmp/x;y", "/tmp/'q'"} {
		if err := SafeKubePath(p); err == nil {
			t.Errorf("%q accepted", p)
		}
	}
}

// toolRunner answers `<tool> --version` from a table; a missing entry is
// a program that cannot be found.
type toolRunner map[string]string

func (f toolRunner) Run(ctx context.Context, c run.Cmd) ([]byte, error) {
	out, ok := f[c.Args[0]]
	if !ok {
		return nil, &run.Error{Args: c.Args, Err: errors.New("executable file not found in $PATH")}
	}
	return []byte(out), nil
}

func TestCheckKubeletToolsNamesEveryMissingTool(t *testing.T) {
	all := toolRunner{"make": "GNU Make 4.3\n", "bash": "GNU bash, version 5.2.15(1)-release (x86_64-pc-linux-gnu)\n", "rsync": "rsync  version 3.2.7\n", "git": "git version 2.39.5\n"}
	if err := CheckKubeletTools(context.Background(), all); err != nil {
		t.Fatal(err)
	}
	bad := toolRunner{"make": "GNU Make 4.3\n", "bash": "GNU bash, version 3.2.57(1)-release (x86_64-apple-darwin)\n", "git": "git version 2.39.5\n"}
	err := CheckKubeletTools(context.Background(), bad)
	var mt *MissingToolsError
	if !errors.As(err, &mt) || len(mt.Missing) != 2 {
		t.Fatalf("want rsync and bash named, got %v", err)
	}
	msg := err.Error()
	for _, w := range []string{"rsync (hack/lib/golang.sh's place_bins", "bash 4 or newer (found GNU bash, version 3.2.57", "apt-get install make bash rsync git", "Nothing was fetched"} {
		if !strings.Contains(msg, w) {
			t.Errorf("message lacks %q:\n%s", w, msg)
		}
	}
	bsd := toolRunner{"make": "usage: make [-BeikNnqrSstWwX]", "bash": "GNU bash, version 5.2.15(1)-release", "rsync": "rsync version 3", "git": "git version 2"}
	if err := CheckKubeletTools(context.Background(), bsd); err == nil || !strings.Contains(err.Error(), "GNU make") {
		t.Errorf("BSD make accepted: %v", err)
	}
}

// dockerRunner answers the image check as an image would.
type dockerRunner struct {
	out  string
	args []string
}

const testImageID = "sha256:5bce98f709043451a7b3d1c2e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d"

func (d *dockerRunner) Run(ctx context.Context, c run.Cmd) ([]byte, error) {
	if len(c.Args) > 2 && c.Args[1] == "image" && c.Args[2] == "inspect" {
		return []byte(testImageID + "\n"), nil
	}
	d.args = c.Args
	return []byte(d.out), nil
}

func TestCheckKubeletImage(t *testing.T) {
	golang := &dockerRunner{out: "missing rsync\nbash 5\ngo version go1.11.13 linux/amd64\n"}
	_, _, err := (&Builder{Runner: golang}).CheckKubeletImage(context.Background(), "golang:1.11.13")
	if err == nil || !strings.Contains(err.Error(), "the build image golang:1.11.13 lacks what Kubernetes' make needs: rsync") ||
		!strings.Contains(err.Error(), "kube-cross") {
		t.Fatalf("golang image accepted or badly explained: %v", err)
	}
	if got := strings.Join(golang.args[:6], " "); got != "docker run --rm --network=none --entrypoint sh" || golang.args[6] != "golang:1.11.13" {
		t.Errorf("the image is not an argument of its own: %q", golang.args)
	}
	cross := &dockerRunner{out: "bash 4\ngo version go1.11.13 linux/amd64\n"}
	v, id, err := (&Builder{Runner: cross}).CheckKubeletImage(context.Background(), "k8s.gcr.io/kube-cross:v1.11.13-1")
	if err != nil || v != "go1.11.13" || id != testImageID {
		t.Fatalf("kube-cross: %q %q %v", v, id, err)
	}
}

// The runc image check reads the Go, the C compiler and libseccomp from
// the image, names everything missing at once, and passes the tags and
// static as arguments, never inside the script.
func TestCheckRuncImage(t *testing.T) {
	golang := &dockerRunner{out: "go: go version go1.12.17 linux/amd64\ncc: gcc (Debian 8.3.0-6) 8.3.0\nmissing: libseccomp\nlibc.a: /usr/lib/x86_64-linux-gnu/libc.a\n"}
	_, err := (&Builder{Runner: golang}).CheckRuncImage(context.Background(), "golang:1.12", []string{"seccomp", "nokmem"}, true)
	var ie *ImageError
	if !errors.As(err, &ie) || len(ie.Missing) != 1 || !strings.Contains(err.Error(), "libseccomp-dev pkg-config") || !strings.Contains(err.Error(), "host mode") {
		t.Fatalf("golang image without libseccomp: %v", err)
	}
	if n := len(golang.args); n < 4 || golang.args[n-4] != runcImageScript || golang.args[n-2] != "seccomp" || golang.args[n-1] != "static" || !slices.Contains(golang.args, "golang:1.12") {
		t.Errorf("image check command: %q", golang.args)
	}
	bare := &dockerRunner{out: "missing: go\nmissing: gcc\nmissing: libseccomp\n"}
	if _, err := (&Builder{Runner: bare}).CheckRuncImage(context.Background(), "debian:12", []string{"seccomp"}, false); !errors.As(err, &ie) || len(ie.Missing) != 3 {
		t.Errorf("bare image: %v", err)
	}
	full := &dockerRunner{out: "go: go version go1.12.17 linux/amd64\ncc: gcc (Debian 12.2.0-14) 12.2.0\nlibseccomp: 2.5.4\npkgconfig: -lseccomp\nlibseccomp.a: /usr/lib/x86_64-linux-gnu/libseccomp.a\nlibc.a: /usr/lib/x86_64-linux-gnu/libc.a\n"}
	info, err := (&Builder{Runner: full}).CheckRuncImage(context.Background(), "mine:1.12", []string{"seccomp"}, true)
	if err != nil || info.ID != testImageID || info.GoVersion != "go1.12.17" || info.Cgo.Libseccomp != "2.5.4" || info.Cgo.LibseccompStatic == "" || !strings.HasPrefix(info.Cgo.CC, "gcc ") {
		t.Fatalf("full image: %+v %v", info, err)
	}
}
