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
)

// Mode selects where the compiler runs.
type Mode string

const (
	ModeHost      Mode = "host"      // the Go toolchain of this machine
	ModeContainer Mode = "container" // golang:<era> image through docker
)

// Toolchain is a resolved Go.
type Toolchain struct {
	GoBin   string `json:"goBin"`
	Version string `json:"version"` // e.g. go1.26.8
	Image   string `json:"image,omitempty"`
}

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
func goMinor(v string) int {
	v = strings.TrimPrefix(v, "go")
	parts := strings.Split(v, ".")
	if len(parts) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	return n
}

// Args returns the go build command line and the environment for r.
func Args(r *Request) ([]string, map[string]string, error) {
	if r.Output == "" || !filepath.IsAbs(r.Output) {
		return nil, nil, errors.New("build: output must be an absolute path")
	}
	minor := goMinor(r.Toolchain.Version)
	if minor == 0 {
		return nil, nil, fmt.Errorf("build: unknown Go version %q", r.Toolchain.Version)
	}
	env := map[string]string{
		"CGO_ENABLED":       "1",
		"GOOS":              "linux",
		"GOARCH":            "amd64",
		"GOFLAGS":           "",
		"GOTOOLCHAIN":       "local",
		"SOURCE_DATE_EPOCH": strconv.FormatInt(r.SourceDate.Unix(), 10),
		"GOPATH":            r.GOPATH,
	}
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
	ldflags := []string{"-buildid="}
	for _, x := range r.LDFlagsX {
		ldflags = append(ldflags, "-X", x)
	}
	if minor >= 13 {
		args = append(args, "-trimpath")
	} else {
		// Before Go 1.13 the same effect needs explicit path rewriting.
		trim := "-trimpath=" + r.GOPATH + "/src"
		args = append(args, "-gcflags=all="+trim, "-asmflags=all="+trim)
	}
	if minor >= 18 {
		args = append(args, "-buildvcs=false")
	}
	args = append(args, "-tags", strings.Join(r.Tags, ","), "-ldflags", strings.Join(ldflags, " "), "-o", r.Output, r.Package)
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
		cmd = run.Cmd{Args: append([]string{r.Toolchain.GoBin}, args...), Dir: r.Dir(), Env: envList(env)}
	case ModeContainer:
		cmd = containerCmd(b.docker(), r, args, env)
	default:
		return nil, fmt.Errorf("build: unknown mode %q (want host or container)", r.Mode)
	}
	res.Args = cmd.Args
	if _, err := b.Runner.Run(ctx, cmd); err != nil {
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
// GOPATH bind-mounted at the same path so -trimpath output is identical.
func containerCmd(docker string, r *Request, args []string, env map[string]string) run.Cmd {
	c := []string{docker, "run", "--rm", "--network=none",
		"-v", r.GOPATH + ":" + r.GOPATH,
		"-v", filepath.Dir(r.Output) + ":" + filepath.Dir(r.Output),
		"-w", r.Dir()}
	for _, k := range sortedKeys(env) {
		c = append(c, "-e", k+"="+env[k])
	}
	c = append(c, r.Toolchain.Image, "go")
	return run.Cmd{Args: append(c, args...)}
}

func envList(env map[string]string) []string {
	var out []string
	for _, k := range sortedKeys(env) {
		out = append(out, k+"="+env[k])
	}
	return out
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
