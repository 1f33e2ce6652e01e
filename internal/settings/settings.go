// Package settings reads nokmem's environment settings, in one place, and
// validates them all at once. Mage has no optional arguments, so every
// optional input of a target is one of these variables.
package settings

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/nokmem/nokmem/internal/attest"
	"github.com/nokmem/nokmem/internal/build"
	"github.com/nokmem/nokmem/internal/packaging"
	"github.com/nokmem/nokmem/internal/pipeline"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/internal/source"
	"github.com/nokmem/nokmem/verify"
	"github.com/nokmem/nokmem/verify/target"
	"github.com/nokmem/nokmem/verify/vm"
)

// Setting documents one environment variable.
type Setting struct {
	Name, Default, Help string
}

// All lists every setting; README and `mage -l` help are written from it.
var All = []Setting{
	{"NOKMEM_RUNC_REPO", "https://github.com/opencontainers/runc.git", "git URL or local path of runc (an internal mirror or a local clone)"},
	{"NOKMEM_KUBERNETES_REPO", "https://github.com/kubernetes/kubernetes.git", "git URL or local path of kubernetes (only the tag is fetched, at depth 1)"},
	{"NOKMEM_ALLOW_UNPINNED", "0", "1: accept kubelet releases without a pinned commit where they are refused: builds under CI=true, and release and publish:mirror of unpinned artifacts (local builds of them only warn; the provenance says unpinned)"},
	{"NOKMEM_ACCEPT_GO_MISMATCH", "0", "1: build kubelet with a host Go whose minor differs from the release's"},
	{"NOKMEM_KUBE_VERSION_SUFFIX", "", "build metadata appended to the kubelet version, e.g. +nokmem.1 (never a - suffix)"},
	{"NOKMEM_CACHE", "$XDG_CACHE_HOME/nokmem or ~/.cache/nokmem", "source cache and work trees"},
	{"NOKMEM_DIST", "./dist", "output directory"},
	{"NOKMEM_MATRIX_OVERLAY", "", "extra matrix directory whose <project>.yaml entries add to or replace the project's"},
	{"NOKMEM_PATCHES_OVERLAY", "", "extra patches directory (with a runc/ subdirectory, or the patches themselves)"},
	{"NOKMEM_BUILD_MODE", "host", "host (this machine's Go) or container (golang:<era> image through docker)"},
	{"NOKMEM_GO", "go", "the go binary to build with in host mode"},
	{"NOKMEM_GO_TOOLCHAIN", "", "host (NOKMEM_GO), era (the release's own Go minor, latest patch, through the module proxy; GOPROXY is honoured) or an exact version such as go1.22.12; unset: the matrix's choice per release"},
	{"NOKMEM_TARGET", "el7", "the nodes the binaries are for: el7, el8, el9 or debian11 (glibc, libseccomp, kernel, x86-64 level); a binary that cannot start there fails verification"},
	{"NOKMEM_BUILD_IMAGE", "golang:<era>", "container image for container mode; for runc it needs gcc, libc6-dev, libseccomp-dev and pkg-config (golang:<era> lacks libseccomp), checked before fetching"},
	{"NOKMEM_ALLOW_STATIC_ONLY", "0", "1: accept static verification alone where the dynamic check cannot run (not root, no cgroup v1)"},
	{"NOKMEM_DYNAMIC", "auto", "auto, require or off (off only for verify targets; require makes builds fail where the dynamic check cannot run)"},
	{"NOKMEM_PACKAGE_RELEASE", "1.nokmem", "package release field (sorts after upstream's 0 / 00; RPMs add the target's dist tag, e.g. .el7); raise it to republish changed bytes"},
	{"NOKMEM_MAINTAINER", "nokmem builder <nokmem@nokmem.invalid>", "the packages' maintainer, \"Full Name <address>\": who answers for them (package warns while it is the default, an address nobody reads)"},
	{"NOKMEM_MIRROR_URL", "file://<dir>", "where nodes reach publish:mirror's directory (http(s):// or file://), written into the published nokmem.repo and nokmem.sources"},
	{"NOKMEM_SIGNING_KEY", "", "armored OpenPGP private key file (RSA, signing with its primary key, for EL7's rpm); when set, every artifact's provenance.intoto.json, every RPM, the mirror's repomd.xml and apt InRelease/Release.gpg, and the SHA256SUMS of the mirror and the release are signed, and cache hits and verify targets require the statement's signature"},
	{"NOKMEM_SIGNING_PASSPHRASE", "", "passphrase of the signing key, if it is encrypted"},
	{"NOKMEM_VERIFY_PUBKEY", "", "armored OpenPGP public key file: cache hits, verify:runc/kubelet and verify:dist require statements (and a release's SHA256SUMS) signed by it; unset: the signing key's own public key, if set"},
	{"NOKMEM_GITHUB_REPO", "", "owner/name of the GitHub repository that release publishes to"},
	{"NOKMEM_GITHUB_API", "https://api.github.com/", "GitHub (Enterprise) API base URL, e.g. https://ghe.example.com/api/v3/"},
	{"NOKMEM_GITHUB_UPLOAD", "https://uploads.github.com/", "GitHub (Enterprise) upload URL, e.g. https://ghe.example.com/api/uploads/"},
	{"NOKMEM_PUBLISH", "0", "1: release really publishes; 0 is a dry run that says what it would do. The token is read from GITHUB_TOKEN"},
	{"GITHUB_TOKEN", "", "the GitHub token release publishes with (NOKMEM_PUBLISH=1); never printed"},
	{"NOKMEM_VERIFY_RUNTIME", "auto", "where the dynamic check runs: docker (the verifier image; verify targets), host, vm (a throwaway QEMU VM with its own cgroup v1 kernel; verify targets and builds, no root needed), or auto (vm where this host cannot verify natively and QEMU and a kernel are found, else docker for verify targets when an engine answers, else host)"},
	{"NOKMEM_VM_KERNEL", "a /boot/vmlinuz-* with cgroup v1 memory, kmem and fanotify", "the VM's kernel (vmlinuz), e.g. an EL7 /boot/vmlinuz-3.10.0-*.el7.x86_64 to prove on the fleet's kernel (Debian 12: apt-get install linux-image-cloud-amd64 qemu-system-x86)"},
	{"NOKMEM_VM_TIMEOUT", "5m", "time limit of one check in a VM (boot or restore, self-test, runs); a VM still running then is killed and the check fails"},
	{"NOKMEM_VM_SNAPSHOT", "1", "1: a check restores a snapshot of a guest booted once (kept in NOKMEM_CACHE/vm, checked by its sha256) instead of booting; 0: every check boots its own VM"},
	{"NOKMEM_DOCKER_PRIVILEGED", "1", "0: run the verifier container with every capability but SYS_RESOURCE instead of --privileged"},
	{"NOKMEM_RUNTIME_DEFAULT", "0", "runtime:containerd and runtime:docker: 1 also makes nokmem the default runtime (nokmem runtime --default)"},
	{"NOKMEM_RUNTIME_REMOVE", "0", "runtime:containerd and runtime:docker: 1 takes the nokmem runtime out, and the default back to runc (nokmem runtime --remove)"},
}

// Env is the parsed environment.
type Env struct {
	RuncRepo         string
	KubeRepo         string
	AllowUnpinned    bool
	AcceptGoMismatch bool
	KubeSuffix       string
	PackageRelease   string
	Maintainer       string
	MirrorURL        string
	SigningKey       string
	SigningPass      string
	VerifyPubKey     string
	GitHubRepo       string
	GitHubAPI        string
	GitHubUpload     string
	Publish          bool
	Cache            string
	Dist             string
	MatrixOverlay    string
	PatchesOverlay   string
	Mode             build.Mode
	GoBin            string
	GoToolchain      string
	Target           string
	BuildImage       string
	AllowStaticOnly  bool
	Dynamic          string
	VerifyRuntime    string
	VMKernel         string
	VMTimeout        time.Duration
	VMSnapshot       bool
	Privileged       bool
	CI               bool // CI=true: unpinned kubelet releases are refused
	RuntimeDefault   bool
	RuntimeRemove    bool
}

// Read parses the environment through getenv, reporting every bad value.
func Read(getenv func(string) string) (*Env, error) {
	var errs []error
	or := func(k, def string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return def
	}
	e := &Env{
		RuncRepo:       or("NOKMEM_RUNC_REPO", "https://github.com/opencontainers/runc.git"),
		KubeRepo:       or("NOKMEM_KUBERNETES_REPO", "https://github.com/kubernetes/kubernetes.git"),
		KubeSuffix:     getenv("NOKMEM_KUBE_VERSION_SUFFIX"),
		PackageRelease: getenv("NOKMEM_PACKAGE_RELEASE"),
		Maintainer:     getenv("NOKMEM_MAINTAINER"),
		MirrorURL:      getenv("NOKMEM_MIRROR_URL"),
		SigningKey:     getenv("NOKMEM_SIGNING_KEY"),
		SigningPass:    getenv("NOKMEM_SIGNING_PASSPHRASE"),
		VerifyPubKey:   getenv("NOKMEM_VERIFY_PUBKEY"),
		GitHubRepo:     getenv("NOKMEM_GITHUB_REPO"),
		GitHubAPI:      getenv("NOKMEM_GITHUB_API"),
		GitHubUpload:   getenv("NOKMEM_GITHUB_UPLOAD"),
		Dist:           or("NOKMEM_DIST", "dist"),
		MatrixOverlay:  getenv("NOKMEM_MATRIX_OVERLAY"),
		PatchesOverlay: getenv("NOKMEM_PATCHES_OVERLAY"),
		Mode:           build.Mode(or("NOKMEM_BUILD_MODE", "host")),
		GoBin:          getenv("NOKMEM_GO"),
		GoToolchain:    getenv("NOKMEM_GO_TOOLCHAIN"),
		Target:         or("NOKMEM_TARGET", pipeline.DefaultTarget),
		BuildImage:     getenv("NOKMEM_BUILD_IMAGE"),
		Dynamic:        or("NOKMEM_DYNAMIC", "auto"),
		VerifyRuntime:  or("NOKMEM_VERIFY_RUNTIME", "auto"),
		Privileged:     true,
		CI:             getenv("CI") == "true",
	}
	switch e.VerifyRuntime {
	case "auto", "host", "docker", "vm":
	default:
		errs = append(errs, fmt.Errorf("NOKMEM_VERIFY_RUNTIME=%q: want auto, host, docker or vm", e.VerifyRuntime))
	}
	e.VMKernel = getenv("NOKMEM_VM_KERNEL")
	switch v := getenv("NOKMEM_VM_SNAPSHOT"); v {
	case "", "1", "true":
		e.VMSnapshot = true
	case "0", "false":
	default:
		errs = append(errs, fmt.Errorf("NOKMEM_VM_SNAPSHOT=%q: want 0 or 1", v))
	}
	if v := getenv("NOKMEM_VM_TIMEOUT"); v != "" {
		if d, err := time.ParseDuration(v); err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("NOKMEM_VM_TIMEOUT=%q: want a duration such as 5m", v))
		} else {
			e.VMTimeout = d
		}
	}
	switch v := getenv("NOKMEM_DOCKER_PRIVILEGED"); v {
	case "", "1", "true":
	case "0", "false":
		e.Privileged = false
	default:
		errs = append(errs, fmt.Errorf("NOKMEM_DOCKER_PRIVILEGED=%q: want 0 or 1", v))
	}
	if err := source.CheckURL(e.RuncRepo); err != nil {
		errs = append(errs, fmt.Errorf("NOKMEM_RUNC_REPO: %w", err))
	}
	if err := build.ValidToolchainSetting(e.GoToolchain); err != nil {
		errs = append(errs, fmt.Errorf("NOKMEM_GO_TOOLCHAIN: %w", err))
	}
	if _, err := target.Lookup(e.Target); err != nil {
		errs = append(errs, fmt.Errorf("NOKMEM_TARGET: %w", err))
	}
	if e.Mode != build.ModeHost && e.Mode != build.ModeContainer {
		errs = append(errs, fmt.Errorf("NOKMEM_BUILD_MODE=%q: want host or container", e.Mode))
	}
	switch e.Dynamic {
	case "auto", "require", "off":
	default:
		errs = append(errs, fmt.Errorf("NOKMEM_DYNAMIC=%q: want auto, require or off", e.Dynamic))
	}
	if err := source.CheckURL(e.KubeRepo); err != nil {
		errs = append(errs, fmt.Errorf("NOKMEM_KUBERNETES_REPO: %w", err))
	}
	for _, b := range []struct {
		name string
		dst  *bool
	}{{"NOKMEM_ALLOW_STATIC_ONLY", &e.AllowStaticOnly}, {"NOKMEM_ALLOW_UNPINNED", &e.AllowUnpinned}, {"NOKMEM_ACCEPT_GO_MISMATCH", &e.AcceptGoMismatch}, {"NOKMEM_PUBLISH", &e.Publish},
		{"NOKMEM_RUNTIME_DEFAULT", &e.RuntimeDefault}, {"NOKMEM_RUNTIME_REMOVE", &e.RuntimeRemove}} {
		switch v := getenv(b.name); v {
		case "", "0", "false":
		case "1", "true":
			*b.dst = true
		default:
			errs = append(errs, fmt.Errorf("%s=%q: want 0 or 1", b.name, v))
		}
	}
	for _, k := range []string{"NOKMEM_MATRIX_OVERLAY", "NOKMEM_PATCHES_OVERLAY"} {
		if d := getenv(k); d != "" {
			if st, err := os.Stat(d); err != nil || !st.IsDir() {
				errs = append(errs, fmt.Errorf("%s=%q: not a directory", k, d))
			}
		}
	}
	if e.PackageRelease != "" && !regexp.MustCompile(`^[0-9][0-9A-Za-z.+~]*$`).MatchString(e.PackageRelease) {
		errs = append(errs, fmt.Errorf("NOKMEM_PACKAGE_RELEASE=%q: want a release such as 2.nokmem", e.PackageRelease))
	}
	if e.Maintainer != "" {
		if err := packaging.CheckMaintainer(e.Maintainer); err != nil {
			errs = append(errs, fmt.Errorf("NOKMEM_MAINTAINER: %w", err))
		}
	}
	if u := e.MirrorURL; u != "" && !regexp.MustCompile(`^(https?://[^/\s]+|file://)/?[^\s]*$`).MatchString(u) {
		errs = append(errs, fmt.Errorf("NOKMEM_MIRROR_URL=%q: want an http(s):// or file:// URL", u))
	}
	if e.GitHubRepo != "" && !regexp.MustCompile(`^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$`).MatchString(e.GitHubRepo) {
		errs = append(errs, fmt.Errorf("NOKMEM_GITHUB_REPO=%q: want owner/name", e.GitHubRepo))
	}
	e.Cache = getenv("NOKMEM_CACHE")
	if e.Cache == "" {
		base := getenv("XDG_CACHE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				errs = append(errs, errors.New("NOKMEM_CACHE is unset and there is no home directory"))
			}
			base = filepath.Join(home, ".cache")
		}
		e.Cache = filepath.Join(base, "nokmem")
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("bad settings:\n  %s", strings.Join(errStrings(errs), "\n  "))
	}
	return e, nil
}

func errStrings(errs []error) []string {
	out := make([]string, len(errs))
	for i, e := range errs {
		out[i] = e.Error()
	}
	return out
}

// Pipeline turns the settings into a pipeline configuration rooted at the
// project directory root (where matrix/ and patches/ live).
func (e *Env) Pipeline(root string) (*pipeline.Config, error) {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(root, p)
	}
	keys, err := attest.LoadKeys(abs(e.SigningKey), e.SigningPass, abs(e.VerifyPubKey))
	if err != nil {
		return nil, err
	}
	return &pipeline.Config{
		RepoURL:           e.RuncRepo,
		KubeRepoURL:       e.KubeRepo,
		AllowUnpinned:     e.AllowUnpinned,
		CI:                e.CI,
		AcceptGoMismatch:  e.AcceptGoMismatch,
		KubeVersionSuffix: e.KubeSuffix,
		CacheDir:          abs(e.Cache),
		DistDir:           abs(e.Dist),
		MatrixDir:         filepath.Join(root, "matrix"),
		PatchesDir:        filepath.Join(root, "patches"),
		MatrixOverlay:     abs(e.MatrixOverlay),
		PatchesOverlay:    abs(e.PatchesOverlay),
		Mode:              e.Mode,
		GoBin:             e.GoBin,
		GoToolchain:       e.GoToolchain,
		Target:            e.Target,
		Dynamic:           e.Dynamic,
		ToolkitRevision:   ToolkitRevision(root),
		BuildImage:        e.BuildImage,
		AllowStaticOnly:   e.AllowStaticOnly,
		Runner:            run.Local{},
		Verifier:          e.verifier(root),
		Signing:           keys,
		Log:               os.Stderr,
	}, nil
}

// UseVM says whether the dynamic check runs in a VM (verify/vm):
// NOKMEM_VERIFY_RUNTIME=vm, or auto on a host that cannot verify natively
// (not root, or no cgroup v1 memory hierarchy with the kmem file) where
// QEMU and a kernel are found.
func (e *Env) UseVM() bool {
	switch e.VerifyRuntime {
	case "vm":
		return true
	case "auto":
		return verify.HostProblem() != "" && vm.Problem(e.VMKernel) == ""
	}
	return false
}

// VM is the VM verifier for the nokmem tree at root.
func (e *Env) VM(root string) *vm.Verifier {
	v := &vm.Verifier{Runner: run.Local{}, Root: root, Kernel: e.VMKernel, Timeout: e.VMTimeout}
	if e.VMSnapshot {
		cache := e.Cache
		if !filepath.IsAbs(cache) {
			cache = filepath.Join(root, cache)
		}
		v.CacheDir = filepath.Join(cache, "vm")
	}
	return v
}

// verifier is what builds verify with: the VM when UseVM says so,
// otherwise this host.
func (e *Env) verifier(root string) pipeline.Verifier {
	if e.UseVM() {
		return e.VM(root)
	}
	return pipeline.DefaultVerifier{}
}

// Help renders the settings table for `mage -l` help and the README.
func Help() string {
	var b strings.Builder
	for _, s := range All {
		def := s.Default
		if def == "" {
			def = "unset"
		}
		fmt.Fprintf(&b, "  %-24s %s (default: %s)\n", s.Name, s.Help, def)
	}
	return b.String()
}

// ToolkitRevision is the git commit of the nokmem checkout at root, with
// "-dirty" when tracked files differ from it, or "unknown" outside git. It
// is part of every cache key and provenance: a new toolkit may build or
// verify differently.
func ToolkitRevision(root string) string {
	ctx := context.Background()
	out, err := run.Local{}.Run(ctx, run.Cmd{Args: []string{"git", "-C", root, "rev-parse", "HEAD"}})
	if err != nil {
		return "unknown"
	}
	rev := strings.TrimSpace(string(out))
	if st, err := (run.Local{}).Run(ctx, run.Cmd{Args: []string{"git", "-C", root, "status", "--porcelain", "--untracked-files=no"}}); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		rev += "-dirty"
	}
	return rev
}
