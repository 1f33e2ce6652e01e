// Package build compiles a prepared upstream tree into one binary, the way
// the release's own Makefile did (its tags, its main package, its version
// variables), with the flags that make the output reproducible: -trimpath,
// an empty build id and a fixed source date.
//
// nokmem runs go build with an argument vector instead of upstream's make:
// the Makefiles of runc's rc era mark a patched tree "-dirty", use flags that
// current Go rejects (go build -i), and cannot be made reproducible from
// outside. The tags and -X variables are the ones those Makefiles pass.
package build

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/matrix"
	"github.com/nokmem/nokmem/verify/target"
)

// Mode selects where the compiler runs.
type Mode string

const (
	ModeHost      Mode = "host"      // the Go toolchain of this machine
	ModeContainer Mode = "container" // golang:<era> image through docker
)

// Request is one build.
type Request struct {
	// GOPATH is the GOPATH root; the tree is at GOPATH/src/<ImportPath>.
	GOPATH     string
	ImportPath string // e.g. github.com/opencontainers/runc
	Layout     matrix.Layout
	Tags       []string
	// LDFlagsX are -X assignments (name=value) from the upstream Makefile.
	LDFlagsX   []string
	Package    string // main package, relative ("." for runc)
	Output     string // absolute path of the binary to write
	SourceDate time.Time
	Mode       Mode
	Toolchain  Toolchain
	// Static, if set, builds the way the release's `make static` does.
	Static *Static
	// GOAMD64 is the x86-64 level to compile for (v1 unless a target allows more).
	GOAMD64 string
	// GOCACHE, if set, is the Go build cache to use: one per toolchain and
	// C toolchain, because Go before 1.16 does not key cgo objects on the
	// flags pkg-config returns, and would reuse stale ones.
	GOCACHE string
}

// Static is a release's `make static`: extra tags, and an -installsuffix
// in the releases that used one. Every runc static target links with
// -ldflags "-w -extldflags -static" and CGO_ENABLED=1.
type Static struct {
	Tags          []string `json:"tags"`
	InstallSuffix string   `json:"installSuffix,omitempty"`
}

// StaticLDFlags are the linker flags of every runc release's static target.
var StaticLDFlags = []string{"-w", "-extldflags", "-static"}

// cgoDefaults are Go's own defaults, set explicitly so that neither the
// caller's environment nor a `go env -w` file changes them unrecorded.
var cgoDefaults = map[string]string{
	"CC": "gcc", "CXX": "g++",
	"CGO_CFLAGS": "-O2 -g", "CGO_CPPFLAGS": "", "CGO_CXXFLAGS": "-O2 -g", "CGO_LDFLAGS": "-O2 -g",
}

// inherited are the only variables a build takes from the caller: where
// things are (PATH, HOME, caches, the module proxy, certificates), never
// what changes the output. GOFLAGS, GOAMD64, CGO_*, GOEXPERIMENT, KUBE_*,
// GOLDFLAGS and the rest are set by nokmem or not at all.
var inherited = []string{
	"PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "LANG", "LC_ALL", "TZ", "XDG_CACHE_HOME", "XDG_CONFIG_HOME",
	"GOCACHE", "GOMODCACHE", "GOPROXY", "GONOPROXY", "GONOSUMDB", "GOPRIVATE", "GOSUMDB", "GOINSECURE",
	"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
	"SSL_CERT_FILE", "SSL_CERT_DIR", "PKG_CONFIG_PATH", "DOCKER_HOST", "DOCKER_CONFIG",
}

// BaseEnv keeps the allow-listed variables of environ (os.Environ()).
func BaseEnv(environ []string) []string {
	var out []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if slices.Contains(inherited, k) {
			out = append(out, kv)
		}
	}
	return out
}

// isolated is a command whose environment is BaseEnv plus env.
func isolated(args []string, dir string, env map[string]string) run.Cmd {
	return run.Cmd{Args: args, Dir: dir, Env: append(BaseEnv(os.Environ()), envList(env)...), Isolated: true}
}

// Result records what was actually run.
type Result struct {
	Args      []string          `json:"args"`
	Env       map[string]string `json:"env"`
	Toolchain Toolchain         `json:"toolchain"`
	Mode      Mode              `json:"mode"`
}

// Dir returns the source directory of r.
func (r *Request) Dir() string {
	return filepath.Join(r.GOPATH, "src", filepath.FromSlash(r.ImportPath))
}

// Builder runs builds.
type Builder struct {
	Runner run.Runner
	// Docker is the docker client binary used in container mode.
	Docker string
}

// goMinor parses "go1.12.17" or "1.12" into 12.
func goMinor(v string) int { return target.GoMinor(v) }

// Args returns the go build command line and the environment for r.
func Args(r *Request) ([]string, map[string]string, error) {
	if r.Output == "" || !filepath.IsAbs(r.Output) {
		return nil, nil, errors.New("build: output must be an absolute path")
	}
	minor := goMinor(r.Toolchain.Version)
	if minor == 0 {
		return nil, nil, fmt.Errorf("build: unknown Go version %q", r.Toolchain.Version)
	}
	goamd64 := r.GOAMD64
	if goamd64 == "" {
		goamd64 = "v1"
	}
	env := map[string]string{
		"CGO_ENABLED":  "1",
		"GOOS":         "linux",
		"GOARCH":       "amd64",
		"GOAMD64":      goamd64,
		"GOEXPERIMENT": "",
		// The go env file (go env -w) is read unless GOENV=off, and Go
		// before 1.16 takes an empty GOFLAGS from the environment as unset:
		// a GOFLAGS=-buildvcs=false there stops go1.13.
		"GOENV":             "off",
		"GOFLAGS":           "",
		"GOTOOLCHAIN":       "local",
		"SOURCE_DATE_EPOCH": strconv.FormatInt(r.SourceDate.Unix(), 10),
		"GOPATH":            r.GOPATH,
	}
	maps.Copy(env, cgoDefaults)
	if r.GOCACHE != "" {
		env["GOCACHE"] = r.GOCACHE
	}
	maps.Copy(env, r.Toolchain.Env())
	args := []string{"build"}
	switch r.Layout {
	case matrix.LayoutGodeps:
		env["GO111MODULE"] = "off"
		env["GOPATH"] = filepath.Join(r.Dir(), "Godeps", "_workspace") + string(os.PathListSeparator) + r.GOPATH
	case matrix.LayoutGOPATH:
		env["GO111MODULE"] = "off"
	case matrix.LayoutGoMod:
		env["GO111MODULE"] = "on"
		env["GOPROXY"] = "off"
		args = append(args, "-mod=vendor")
	default:
		return nil, nil, fmt.Errorf("build: unknown layout %q", r.Layout)
	}
	tags := slices.Clone(r.Tags)
	var ldflags []string
	if r.Static != nil {
		tags = append(tags, r.Static.Tags...)
		ldflags = append(ldflags, StaticLDFlags...)
		if r.Static.InstallSuffix != "" {
			args = append(args, "-installsuffix", r.Static.InstallSuffix)
		}
	}
	ldflags = append(ldflags, "-buildid=")
	for _, x := range r.LDFlagsX {
		ldflags = append(ldflags, "-X", x)
	}
	switch trim := "-trimpath=" + r.GOPATH + "/src"; {
	case minor >= 13:
		args = append(args, "-trimpath")
	case minor >= 10:
		// Before Go 1.13 the same effect needs explicit path rewriting,
		// for the C files of cgo packages too (nsenter's __FILE__, DWARF).
		args = append(args, "-gcflags=all="+trim, "-asmflags=all="+trim)
		env["CGO_CFLAGS"] += " -ffile-prefix-map=" + r.GOPATH + "=/gopath"
	default:
		// Before Go 1.10 -gcflags applied to every package and had no pattern.
		args = append(args, "-gcflags="+trim, "-asmflags="+trim)
		env["CGO_CFLAGS"] += " -ffile-prefix-map=" + r.GOPATH + "=/gopath"
	}
	if minor >= 18 {
		args = append(args, "-buildvcs=false")
	}
	// Tags are comma-separated from Go 1.13; older Go splits on spaces only.
	sep := ","
	if minor < 13 {
		sep = " "
	}
	args = append(args, "-tags", strings.Join(tags, sep), "-ldflags", strings.Join(ldflags, " "), "-o", r.Output, r.Package)
	return args, env, nil
}

// Build compiles r.
func (b *Builder) Build(ctx context.Context, r *Request) (*Result, error) {
	args, env, err := Args(r)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(r.Output), 0o755); err != nil {
		return nil, err
	}
	res := &Result{Env: env, Toolchain: r.Toolchain, Mode: r.Mode}
	var cmd run.Cmd
	switch r.Mode {
	case ModeHost, "":
		res.Mode = ModeHost
		cmd = isolated(append([]string{r.Toolchain.GoBin}, args...), r.Dir(), env)
	case ModeContainer:
		if r.GOCACHE != "" {
			// Made here, not by docker (which would make it root's).
			if err := os.MkdirAll(r.GOCACHE, 0o755); err != nil {
				return nil, err
			}
		}
		cmd = containerCmd(b.docker(), r, args, env)
	default:
		return nil, fmt.Errorf("build: unknown mode %q (want host or container)", r.Mode)
	}
	res.Args = cmd.Args
	if _, err := b.runBuild(ctx, cmd); err != nil {
		os.Remove(r.Output)
		return nil, fmt.Errorf("go build failed: %w", err)
	}
	if err := os.Chtimes(r.Output, r.SourceDate, r.SourceDate); err != nil {
		return nil, err
	}
	return res, nil
}

func (b *Builder) docker() string {
	if b.Docker != "" {
		return b.Docker
	}
	return "docker"
}

// containerCmd runs the same go build inside the toolchain image, with the
// GOPATH, the output directory and the build cache (per toolchain and C
// toolchain, as in host mode) mounted.
func containerCmd(docker string, r *Request, args []string, env map[string]string) run.Cmd {
	mounts := []string{r.GOPATH, filepath.Dir(r.Output)}
	if r.GOCACHE != "" {
		mounts = append(mounts, r.GOCACHE)
	}
	return dockerRun(docker, mounts, r.Dir(), env, r.Toolchain.image(), append([]string{"go"}, args...)...)
}

func envList(env map[string]string) []string {
	var out []string
	for _, k := range sortedKeys(env) {
		out = append(out, k+"="+env[k])
	}
	return out
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
