package build

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nokmem/nokmem/internal/run"
)

// KubeletRequest is a kubelet build, done the way Kubernetes builds itself.
type KubeletRequest struct {
	Tree string // the Kubernetes work tree, a physical path (golang.sh's KUBE_ROOT)
	// GOPATH holds the tree at GOPATH/src/k8s.io/kubernetes: Kubernetes
	// builds with GO111MODULE=off up to 1.2x, go.mod or not.
	GOPATH string
	// Tag adds -tags=nokmem to GOFLAGS, as its last word: Kubernetes
	// 1.18-1.22 extract the tags with a sed that keeps everything from
	// "-tags=" up to the next "-" (kubernetes#88008, #104315).
	Tag bool
	// Version is KUBE_GIT_VERSION: the release tag, plus an optional
	// +build-metadata suffix.
	Version string
	// Commit is KUBE_GIT_COMMIT: the upstream commit of the tag, not the
	// local commit that holds a vendor patch (which exists nowhere else).
	Commit     string
	SourceDate time.Time
	Mode       Mode
	Toolchain  Toolchain
	// GOAMD64 is the x86-64 level to compile for.
	GOAMD64 string
	// Goldflags is GOLDFLAGS when GoldflagsSet: golang.sh's own default
	// plus -buildid= (kube.Scripts.Goldflags).
	Goldflags    string
	GoldflagsSet bool
}

// KubeletOutputs are where Kubernetes' build leaves the kubelet.
var KubeletOutputs = []string{"_output/local/bin/linux/amd64/kubelet", "_output/bin/kubelet", "_output/dockerized/bin/linux/amd64/kubelet"}

// KubeletEnv returns the environment of a kubelet build: everything that
// reaches make besides the locations BaseEnv passes on, and all of it is
// recorded in the provenance.
func KubeletEnv(r *KubeletRequest) map[string]string {
	// version.sh: KUBE_GIT_TREE_STATE=clean keeps "-dirty" off the version
	// when generators rewrite tracked files under a newer Go; the provenance
	// records `git status --porcelain` after make instead.
	env := map[string]string{
		"KUBE_GIT_VERSION":    r.Version,
		"KUBE_GIT_TREE_STATE": "clean",
		"SOURCE_DATE_EPOCH":   strconv.FormatInt(r.SourceDate.Unix(), 10),
		"GOTOOLCHAIN":         "local",
		// hack/lib/golang.sh builds the binaries named in
		// KUBE_STATIC_OVERRIDES with CGO_ENABLED=0, so kubelet needs no libc
		// of the build host (the target gate checks that it took effect).
		"KUBE_STATIC_OVERRIDES": "kubelet",
		"GOAMD64":               cmp.Or(r.GOAMD64, "v1"),
		"GOEXPERIMENT":          "",
		"GOPROXY":               "off",
		// A `go env -w` file would otherwise supply what an empty variable
		// leaves unset: golang.sh runs `GOFLAGS='' go version`, and go1.15
		// fails on a GOFLAGS=-buildvcs=false written by a newer Go.
		"GOENV": "off",
	}
	if r.Commit != "" {
		env["KUBE_GIT_COMMIT"] = r.Commit
	}
	goflags, gogcflags := TrimFlags(r.Toolchain.Version, r.Tree)
	if r.Tag {
		goflags = append(goflags, "-tags=nokmem")
	}
	env["GOFLAGS"] = strings.Join(goflags, " ")
	if gogcflags != "" {
		env["GOGCFLAGS"] = gogcflags
	}
	if r.GoldflagsSet {
		env["GOLDFLAGS"] = r.Goldflags
	}
	maps.Copy(env, r.Toolchain.Env())
	if r.GOPATH != "" {
		env["GOPATH"] = r.GOPATH
		env["GO111MODULE"] = "off"
	}
	return env
}

// TrimFlags returns the GOFLAGS words (and, before Go 1.10, a GOGCFLAGS
// value) that keep the work tree's path out of every file name the
// compiler and assembler record, so that builds in different NOKMEM_CACHE
// directories are identical. They reach go through the variables Kubernetes'
// own golang.sh reads: 1.9-1.13 expand GOFLAGS into go's arguments, later
// releases leave it in the environment, where Go >= 1.11 reads it.
//
//   - Go >= 1.13: -trimpath.
//   - Go 1.10-1.12 have no -trimpath; golang.sh passes -gcflags and
//     -asmflags "-trimpath=${KUBE_ROOT}" without a package pattern, which
//     reaches only cmd/kubelet itself, so every vendored package keeps
//     root/_output/local/go/src/k8s.io/kubernetes/vendor/… in the binary.
//     GOFLAGS adds the same flags for all packages; golang.sh's own come
//     later on the command line and still win for cmd/kubelet.
//   - Go < 1.10 has no package patterns: -gcflags applies to every package,
//     and the 1.9 golang.sh passes -gcflags "${GOGCFLAGS:-}" after GOFLAGS.
//
// root must be the physical path golang.sh computes (cd … && pwd -P).
func TrimFlags(goVersion, root string) (goflags []string, gogcflags string) {
	switch minor := goMinor(goVersion); {
	case minor == 0 || minor >= 13:
		return []string{"-trimpath"}, ""
	case minor >= 10:
		return []string{"-gcflags=all=-trimpath=" + root, "-asmflags=all=-trimpath=" + root}, ""
	default:
		return []string{"-asmflags=-trimpath=" + root}, "-trimpath=" + root
	}
}

// SafeKubePath reports whether p can be handed to Kubernetes' scripts:
// 1.9-1.13 golang.sh run `eval "goflags=(${GOFLAGS:-})"`, so the trim
// prefix in GOFLAGS is evaluated by bash, and GOFLAGS is split on spaces.
func SafeKubePath(p string) error {
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+@,=:", r)) {
			return fmt.Errorf("%q contains %q: Kubernetes' build scripts split GOFLAGS on spaces and 1.9-1.13 evaluate it with bash, so the work tree path may hold only letters, digits and /._-+@,=:", p, r)
		}
	}
	return nil
}

// BuildKubelet runs `make all WHAT=cmd/kubelet` in the tree and returns the
// path of the kubelet it produced.
func (b *Builder) BuildKubelet(ctx context.Context, r *KubeletRequest) (*Result, string, error) {
	env := KubeletEnv(r)
	res := &Result{Env: env, Toolchain: r.Toolchain, Mode: r.Mode}
	makeArgs := []string{"make", "all", "WHAT=cmd/kubelet"}
	var cmd run.Cmd
	switch r.Mode {
	case ModeHost, "":
		res.Mode = ModeHost
		gobin := r.Toolchain.GoBin
		if p, err := exec.LookPath(gobin); err == nil {
			gobin = p
		}
		// make finds the chosen go first on PATH.
		env["PATH"] = filepath.Dir(gobin) + string(os.PathListSeparator) + os.Getenv("PATH")
		defer delete(env, "PATH")
		cmd = isolated(makeArgs, r.Tree, env)
	case ModeContainer:
		mount := r.Tree
		if r.GOPATH != "" {
			mount = r.GOPATH
		}
		cmd = dockerRun(b.docker(), []string{mount}, r.Tree, env, r.Toolchain.image(), makeArgs...)
	default:
		return nil, "", fmt.Errorf("build: unknown mode %q", r.Mode)
	}
	res.Args = cmd.Args
	if _, err := b.runBuild(ctx, cmd); err != nil {
		return nil, "", fmt.Errorf("make all WHAT=cmd/kubelet failed: %w", err)
	}
	for _, o := range KubeletOutputs {
		p := filepath.Join(r.Tree, filepath.FromSlash(o))
		if _, err := os.Stat(p); err == nil {
			return res, p, nil
		}
	}
	return nil, "", fmt.Errorf("the build finished but left no kubelet in %v", KubeletOutputs)
}

// ProbeSource is the kmem probe's main package for the vendored
// libcontainer API style ("struct": &fs.Manager{Cgroups: cg}, before runc
// rc91; "new": fs.NewManager(cg, nil, false), rc91 on). It does what
// kubelet's cgroupfs driver does for QoS and pod cgroups:
// manager.Apply(-1) on a new cgroup with a memory limit.
func ProbeSource(style string) (string, error) {
	var mk string
	switch style {
	case "struct":
		mk = "&fs.Manager{Cgroups: cg}"
	case "new":
		mk = "fs.NewManager(cg, nil, false)"
	default:
		return "", fmt.Errorf("the vendored libcontainer has neither fs.Manager{Cgroups} nor fs.NewManager(cg, paths, rootless); no kmem probe for it")
	}
	return `// Code generated by nokmem; the kmem probe. DO NOT EDIT.
package main

import (
	"fmt"
	"os"

	"github.com/opencontainers/runc/libcontainer/cgroups/fs"
	"github.com/opencontainers/runc/libcontainer/configs"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: kmem-probe CGROUP_PATH")
		os.Exit(2)
	}
	cg := &configs.Cgroup{Path: os.Args[1], Resources: &configs.Resources{Memory: 64 << 20}}
	m := ` + mk + `
	if err := m.Apply(-1); err != nil {
		fmt.Fprintln(os.Stderr, "apply:", err)
		os.Exit(1)
	}
	fmt.Println("created", os.Args[1])
}
`, nil
}

// BuildProbe compiles the probe inside the tree with the same tags and
// module mode as the kubelet.
func (b *Builder) BuildProbe(ctx context.Context, r *KubeletRequest, style, out string) error {
	src, err := ProbeSource(style)
	if err != nil {
		return err
	}
	dir := filepath.Join(r.Tree, "_output", "nokmem-kmem-probe")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		return err
	}
	env := KubeletEnv(r)
	// The trim flags are also given as arguments: go before 1.11 does not
	// read GOFLAGS, and go before 1.10 does not read GOGCFLAGS at all.
	goflags, gogcflags := TrimFlags(r.Toolchain.Version, r.Tree)
	args := append([]string{"build", "-o", out, "-ldflags=-buildid="}, goflags...)
	if gogcflags != "" {
		args = append(args, "-gcflags="+gogcflags)
	}
	if r.Tag {
		args = append(args, "-tags", "nokmem")
	}
	args = append(args, "./_output/nokmem-kmem-probe")
	cmd := isolated(append([]string{r.Toolchain.GoBin}, args...), r.Tree, env)
	if r.Mode == ModeContainer {
		mount := r.Tree
		if r.GOPATH != "" {
			mount = r.GOPATH
		}
		cmd = dockerRun(b.docker(), []string{mount, filepath.Dir(out)}, r.Tree, env, r.Toolchain.image(), append([]string{"go"}, args...)...)
	}
	_, err = b.runBuild(ctx, cmd)
	if err != nil {
		return fmt.Errorf("build the kmem probe: %w", err)
	}
	return nil
}

// A KubeletTool is a program Kubernetes' make runs besides go.
type KubeletTool struct {
	Name string
	// Why says what the build needs it for.
	Why string
}

// KubeletTools are checked before anything is fetched (host mode) or in the
// build image (container mode).
var KubeletTools = []KubeletTool{
	{"make", "GNU make runs build/root/Makefile (.EXPORT_ALL_VARIABLES)"},
	{"bash", "bash 4 or newer runs hack/make-rules/build.sh and hack/lib/*.sh (arrays, mapfile)"},
	{"rsync", "hack/lib/golang.sh's place_bins copies the built binaries with rsync"},
	{"git", "hack/lib/version.sh and the source step run git"},
}

var (
	bashVersionRE = regexp.MustCompile(`(?m)version ([0-9]+)\.([0-9]+)`)
	imageLineRE   = regexp.MustCompile(`(?m)^(missing|bash) (\S+)$`)
)

// MissingToolsError lists what Kubernetes' build needs and cannot find.
type MissingToolsError struct {
	Where   string // "this machine" or the image
	Missing []string
	Image   bool
}

func (e *MissingToolsError) Error() string {
	if e.Image {
		return fmt.Sprintf("the build image %s lacks what Kubernetes' make needs: %s. The golang:<version> images have no rsync; "+
			"use Kubernetes' own build image (k8s.gcr.io/kube-cross:<the tree's build/build-image/cross/VERSION>, which its dockerized build uses) "+
			"or an image FROM golang:<the release's Go> with rsync added, and set NOKMEM_BUILD_IMAGE to it. Nothing was fetched",
			e.Where, strings.Join(e.Missing, "; "))
	}
	return fmt.Sprintf("Kubernetes' own build (make all WHAT=cmd/kubelet) needs programs %s lacks: %s. "+
		"Install them (Debian/Ubuntu: apt-get install make bash rsync git; RHEL/CentOS: yum install make bash rsync git) "+
		"or build in container mode with an image that has them (NOKMEM_BUILD_MODE=container, NOKMEM_BUILD_IMAGE). Nothing was fetched",
		e.Where, strings.Join(e.Missing, "; "))
}

// CheckKubeletTools makes sure this machine has every program Kubernetes'
// make needs (KubeletTools) and reports all that are missing at once.
func CheckKubeletTools(ctx context.Context, r run.Runner) error {
	var missing []string
	for _, t := range KubeletTools {
		out, err := r.Run(ctx, run.Cmd{Args: []string{t.Name, "--version"}})
		switch {
		case err != nil:
			missing = append(missing, t.Name+" ("+t.Why+")")
		case t.Name == "make" && !strings.HasPrefix(strings.TrimSpace(string(out)), "GNU Make"):
			missing = append(missing, "GNU make (found "+firstLine(string(out))+"; "+t.Why+")")
		case t.Name == "bash":
			if m := bashVersionRE.FindStringSubmatch(string(out)); m == nil || atoi(m[1]) < 4 {
				missing = append(missing, "bash 4 or newer (found "+firstLine(string(out))+"; "+t.Why+")")
			}
		}
	}
	if len(missing) > 0 {
		return &MissingToolsError{Where: "this machine", Missing: missing}
	}
	return nil
}

// kubeletImageScript reports what an image lacks; it is a constant (the
// image name is an argument of docker run, never part of a shell string).
const kubeletImageScript = `for t in make bash rsync git go; do command -v "$t" >/dev/null 2>&1 || echo "missing $t"; done
command -v bash >/dev/null 2>&1 && bash -c 'echo "bash ${BASH_VERSINFO[0]}"'
command -v go >/dev/null 2>&1 && go version
true`

// CheckKubeletImage makes sure a build image has what Kubernetes' make
// needs (KubeletTools and go) and returns the Go it has, as `go version`
// prints it, and the image's ID, which the build then runs.
func (b *Builder) CheckKubeletImage(ctx context.Context, image string) (goVersion, id string, err error) {
	out, err := b.Runner.Run(ctx, run.Cmd{Args: []string{b.docker(), "run", "--rm", "--network=none", "--entrypoint", "sh", image, "-c", kubeletImageScript}})
	if err != nil {
		return "", "", fmt.Errorf("cannot run the build image %s (NOKMEM_BUILD_IMAGE) to check it: %w", image, err)
	}
	var missing []string
	for _, m := range imageLineRE.FindAllStringSubmatch(string(out), -1) {
		switch {
		case m[1] == "missing":
			why := "go of the release"
			for _, t := range KubeletTools {
				if t.Name == m[2] {
					why = t.Why
				}
			}
			missing = append(missing, m[2]+" ("+why+")")
		case m[1] == "bash" && atoi(m[2]) < 4:
			missing = append(missing, "bash 4 or newer (found bash "+m[2]+")")
		}
	}
	if len(missing) > 0 {
		return "", "", &MissingToolsError{Where: image, Missing: missing, Image: true}
	}
	v, err := ParseGoVersion(string(out))
	if err != nil {
		return "", "", fmt.Errorf("build image %s: %w", image, err)
	}
	id, err = b.ImageID(ctx, image)
	return v, id, err
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
