package build

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nokmem/nokmem/internal/run"
)

// Toolchain sources (NOKMEM_GO_TOOLCHAIN).
const (
	// SourceDefault lets the matrix entry choose (runc) or uses the era
	// Go (kubelet).
	SourceDefault = ""
	// SourceHost is this machine's Go (NOKMEM_GO, else go on PATH).
	SourceHost = "host"
	// SourceEra is the release's own Go minor at its latest patch, fetched
	// through the Go module proxy (GOPROXY is honoured).
	SourceEra = "era"
)

// Toolchain is a resolved Go.
type Toolchain struct {
	GoBin   string `json:"goBin"`
	Version string `json:"version"` // e.g. go1.26.8
	// GOROOT is set for downloaded toolchains: Go before 1.10 cannot find
	// its own root from the executable's path, so it is always passed.
	GOROOT string `json:"goroot,omitempty"`
	// Source is host, era or an exact version that was asked for.
	Source string `json:"source,omitempty"`
	Image  string `json:"image,omitempty"`
	// ImageID is the checked image's ID (CheckRuncImage), which the
	// container build runs instead of the Image name.
	ImageID string `json:"imageID,omitempty"`
}

// image is what docker runs: the checked ID when there is one.
func (t Toolchain) image() string {
	if t.ImageID != "" {
		return t.ImageID
	}
	return t.Image
}

// Env returns the variables a command run with this toolchain needs.
func (t Toolchain) Env() map[string]string {
	if t.GOROOT == "" {
		return map[string]string{}
	}
	return map[string]string{"GOROOT": t.GOROOT}
}

// ToolchainRequest says which Go to use.
type ToolchainRequest struct {
	Mode Mode
	// Era is the Go of the release: a minor ("1.12", runc) or an exact
	// release ("1.11.13", Kubernetes).
	Era string
	// GoBin, if set, is an explicit go binary (NOKMEM_GO).
	GoBin string
	// Toolchain is NOKMEM_GO_TOOLCHAIN: "", "host", "era" or an exact
	// version such as go1.22.12.
	Toolchain string
	// Default is what "" means for this release: host or era.
	Default string
	// Image overrides the container image (NOKMEM_BUILD_IMAGE).
	Image string
	// CacheDir keeps era resolutions so a cache hit needs no network.
	CacheDir string
}

var (
	toolchainRE = regexp.MustCompile(`^go1\.[0-9]+(\.[0-9]+)?$`)
	// go version prints "go version go1.7.6 linux/amd64" (every release),
	// "go version devel go1.27-abcdef Tue Jan 1 …" for a development build.
	goVersionRE = regexp.MustCompile(`^go version (?:devel )?(go1(?:\.[0-9]+){0,2}(?:(?:rc|beta)[0-9]+)?)[-+ ]`)
	// golang.org/toolchain module versions: v0.0.1-go1.8.7.linux-amd64.
	toolchainModRE = regexp.MustCompile(`^v0\.0\.1-go(1\.[0-9]+)(?:\.([0-9]+))?\.linux-amd64$`)
)

// ParseGoVersion reads the Go version from `go version` output (every Go
// since 1.0 prints it; `go env GOVERSION` exists only from Go 1.16).
func ParseGoVersion(out string) (string, error) {
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if m := goVersionRE.FindStringSubmatch(strings.TrimSpace(line) + " "); m != nil {
			return m[1], nil
		}
	}
	return "", fmt.Errorf("cannot read a Go version from %q", strings.TrimSpace(out))
}

// ValidToolchainSetting checks a NOKMEM_GO_TOOLCHAIN value.
func ValidToolchainSetting(v string) error {
	if v == SourceDefault || v == SourceHost || v == SourceEra || toolchainRE.MatchString(v) {
		return nil
	}
	return fmt.Errorf("want host, era or a Go version such as go1.22.12, not %q", v)
}

// ResolveToolchain finds the Go to build with and its exact version.
//
// GOTOOLCHAIN is ignored in GOPATH mode (GO111MODULE=off), so a requested
// toolchain is resolved once, from a module-mode scratch directory, to its
// GOROOT, and that GOROOT's bin/go is run directly with GOROOT set.
func ResolveToolchain(ctx context.Context, r run.Runner, req ToolchainRequest) (Toolchain, error) {
	if req.Mode == ModeContainer {
		img := req.Image
		if img == "" {
			img = "golang:" + req.Era
		}
		return Toolchain{GoBin: "go", Version: "go" + req.Era, Image: img, Source: "image"}, nil
	}
	if err := ValidToolchainSetting(req.Toolchain); err != nil {
		return Toolchain{}, fmt.Errorf("NOKMEM_GO_TOOLCHAIN: %w", err)
	}
	host := req.GoBin
	if host == "" {
		host = "go"
	}
	source := req.Toolchain
	if source == SourceDefault {
		source = req.Default
	}
	if source == SourceDefault {
		source = SourceHost
	}
	// The host go runs every case: directly, or to fetch another toolchain.
	hostTC, err := goVersion(ctx, r, host, "")
	if err != nil {
		return Toolchain{}, err
	}
	switch source {
	case SourceHost:
		hostTC.Source = SourceHost
		return hostTC, nil
	case SourceEra:
		if req.Era == "" {
			return Toolchain{}, errors.New("the release's Go is not known, so its era toolchain cannot be chosen; set NOKMEM_GO_TOOLCHAIN=host or go1.X.Y")
		}
		// An exact release (Kubernetes names one, e.g. 1.11.13) is taken
		// as is; a minor (runc's Dockerfiles name one) at its latest patch.
		v := "go" + req.Era
		if strings.Count(req.Era, ".") < 2 {
			var err error
			if v, err = latestPatch(ctx, r, host, req.Era, req.CacheDir); err != nil {
				return Toolchain{}, err
			}
		}
		tc, err := download(ctx, r, host, v)
		tc.Source = SourceEra
		return tc, err
	default:
		tc, err := download(ctx, r, host, source)
		tc.Source = source
		return tc, err
	}
}

// goVersion asks bin for its version; goroot, if set, is passed as GOROOT.
func goVersion(ctx context.Context, r run.Runner, bin, goroot string) (Toolchain, error) {
	env := []string{"GOTOOLCHAIN=local", "GOFLAGS=", "GOEXPERIMENT=", "GOENV=off"}
	if goroot != "" {
		env = append(env, "GOROOT="+goroot)
	}
	out, err := r.Run(ctx, run.Cmd{Args: []string{bin, "version"}, Env: env})
	if err != nil {
		return Toolchain{}, fmt.Errorf("no usable Go toolchain (%s); install Go or set NOKMEM_GO: %w", bin, err)
	}
	v, err := ParseGoVersion(string(out))
	if err != nil {
		return Toolchain{}, fmt.Errorf("%s: %w", bin, err)
	}
	return Toolchain{GoBin: bin, Version: v, GOROOT: goroot}, nil
}

// scratchModule makes an empty module directory for go commands that need
// module mode (toolchain switching, go list -m).
func scratchModule() (string, func(), error) {
	dir, err := os.MkdirTemp("", "nokmem-toolchain-*")
	if err != nil {
		return "", nil, err
	}
	done := func() { os.RemoveAll(dir) }
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module scratch\n"), 0o644); err != nil {
		done()
		return "", nil, err
	}
	return dir, done, nil
}

// download fetches toolchain version v (go1.X.Y) through the module proxy,
// the way the go command's own toolchain switch does, and returns its go.
func download(ctx context.Context, r run.Runner, host, v string) (Toolchain, error) {
	dir, done, err := scratchModule()
	if err != nil {
		return Toolchain{}, err
	}
	defer done()
	out, err := r.Run(ctx, run.Cmd{Args: []string{host, "env", "GOROOT"}, Dir: dir, Env: []string{"GOTOOLCHAIN=" + v, "GOFLAGS=", "GOEXPERIMENT="}})
	if err != nil {
		return Toolchain{}, fmt.Errorf("cannot get Go toolchain %s through the Go module proxy (GOPROXY=%s): %w", v, proxy(), err)
	}
	goroot := strings.TrimSpace(lastLine(out))
	tc, err := goVersion(ctx, r, filepath.Join(goroot, "bin", "go"), goroot)
	if err != nil {
		return Toolchain{}, err
	}
	if tc.Version != v {
		return Toolchain{}, fmt.Errorf("asked for Go %s, the toolchain at %s reports %s", v, goroot, tc.Version)
	}
	return tc, nil
}

func proxy() string {
	if p := os.Getenv("GOPROXY"); p != "" {
		return p
	}
	return "the default"
}

// eraTTL bounds how long a resolved "latest patch" is reused without
// asking the proxy again; offline, an older answer is used with no limit.
const eraTTL = 24 * time.Hour

// latestPatch returns the newest go1.<minor>.N the module proxy serves.
func latestPatch(ctx context.Context, r run.Runner, host, minor, cacheDir string) (string, error) {
	memo := ""
	if cacheDir != "" {
		memo = filepath.Join(cacheDir, "toolchains", "go"+minor+".latest")
		if st, err := os.Stat(memo); err == nil && time.Since(st.ModTime()) < eraTTL {
			if b, err := os.ReadFile(memo); err == nil && toolchainRE.MatchString(strings.TrimSpace(string(b))) {
				return strings.TrimSpace(string(b)), nil
			}
		}
	}
	dir, done, err := scratchModule()
	if err != nil {
		return "", err
	}
	defer done()
	out, err := r.Run(ctx, run.Cmd{Args: []string{host, "list", "-m", "-versions", "golang.org/toolchain"}, Dir: dir, Env: []string{"GOTOOLCHAIN=local", "GOFLAGS=-mod=mod", "GOEXPERIMENT="}})
	if err != nil {
		if b, rerr := os.ReadFile(memo); memo != "" && rerr == nil {
			return strings.TrimSpace(string(b)), nil
		}
		return "", fmt.Errorf("cannot list Go toolchains on the module proxy (GOPROXY=%s) to pick the latest go%s: %w", proxy(), minor, err)
	}
	v, err := PickLatestPatch(strings.Fields(lastLine(out)), minor)
	if err != nil {
		return "", err
	}
	if memo != "" {
		if err := os.MkdirAll(filepath.Dir(memo), 0o755); err == nil {
			os.WriteFile(memo, []byte(v+"\n"), 0o644)
		}
	}
	return v, nil
}

// PickLatestPatch chooses, from golang.org/toolchain module versions, the
// highest linux-amd64 release of Go minor (e.g. "1.8" → go1.8.7).
func PickLatestPatch(versions []string, minor string) (string, error) {
	best := -1
	for _, mv := range versions {
		m := toolchainModRE.FindStringSubmatch(mv)
		if m == nil || m[1] != minor {
			continue
		}
		patch := 0
		if m[2] != "" {
			patch, _ = strconv.Atoi(m[2])
		}
		best = max(best, patch)
	}
	switch {
	case best < 0:
		return "", fmt.Errorf("the Go module proxy serves no go%s toolchain for linux/amd64", minor)
	case best == 0 && !slices.Contains(versions, "v0.0.1-go"+minor+".0.linux-amd64"):
		// Before Go 1.21 the first release of a minor was "go1.8", not "go1.8.0".
		return "go" + minor, nil
	}
	return fmt.Sprintf("go%s.%d", minor, best), nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// CgoInfo describes the C side of a cgo build: it changes the bytes of a
// static binary, so it is part of the cache key and the provenance.
type CgoInfo struct {
	CC         string `json:"cc"`
	Libseccomp string `json:"libseccomp,omitempty"`
	// LibseccompStatic is the archive linked into a static binary.
	LibseccompStatic string `json:"libseccompStatic,omitempty"`
	// PkgConfig is what pkg-config tells cgo for libseccomp (a .pc file
	// found through PKG_CONFIG_PATH may add compiler flags).
	PkgConfig string `json:"pkgConfig,omitempty"`
}

// CheckCgoDeps makes sure the C libraries the tags need are installed
// before a long build fails on them (host mode only), and reports the C
// compiler and libseccomp versions. A static build also needs the static
// archive (Debian's libseccomp-dev ships libseccomp.a).
func CheckCgoDeps(ctx context.Context, r run.Runner, tags []string, static bool) (CgoInfo, error) {
	var info CgoInfo
	out, err := r.Run(ctx, run.Cmd{Args: []string{"gcc", "--version"}})
	if err != nil {
		return info, errors.New("cgo needs a C compiler: install gcc (Debian/Ubuntu: apt-get install gcc libc6-dev; RHEL/CentOS: yum install gcc glibc-static)")
	}
	info.CC = firstLine(string(out))
	if !slices.Contains(tags, "seccomp") {
		return info, nil
	}
	out, err = r.Run(ctx, run.Cmd{Args: []string{"pkg-config", "--modversion", "libseccomp"}})
	if err != nil {
		return info, fmt.Errorf("the seccomp build tag needs libseccomp and pkg-config: install them " +
			"(Debian/Ubuntu: apt-get install libseccomp-dev pkg-config; RHEL/CentOS: yum install libseccomp-devel pkgconfig), " +
			"or build in container mode (NOKMEM_BUILD_MODE=container)")
	}
	info.Libseccomp = strings.TrimSpace(lastLine(out))
	if out, err := r.Run(ctx, run.Cmd{Args: []string{"pkg-config", "--cflags", "--libs", "--static", "libseccomp"}}); err == nil {
		info.PkgConfig = strings.Join(strings.Fields(string(out)), " ")
	}
	if static {
		out, err := r.Run(ctx, run.Cmd{Args: []string{"pkg-config", "--variable=libdir", "libseccomp"}})
		lib := filepath.Join(strings.TrimSpace(lastLine(out)), "libseccomp.a")
		if _, serr := os.Stat(lib); err != nil || serr != nil {
			return info, fmt.Errorf("a static runc links libseccomp statically, but %s is missing: install the static library "+
				"(Debian/Ubuntu: libseccomp-dev ships it; RHEL/CentOS: yum install libseccomp-static) or point PKG_CONFIG_PATH at a libseccomp built with --enable-static", lib)
		}
		info.LibseccompStatic = lib
	}
	return info, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
