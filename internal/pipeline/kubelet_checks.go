package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/nokmem/nokmem/internal/build"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/matrix"
	"github.com/nokmem/nokmem/verify/target"
)

// kubePrereqs is what the checks before fetching found out.
type kubePrereqs struct {
	// imageGo is the Go of the build image (container mode).
	imageGo string
	// imageID is the checked build image, which the build runs.
	imageID string
}

// kubeletPrereqs checks, before anything is fetched, everything Kubernetes'
// own build needs, and says in one message how to get what is missing:
//   - the work tree path must survive Kubernetes' scripts (SafeKubePath);
//   - host mode: GNU make, bash >= 4, rsync, git on this machine, and the
//     Go: the release's Go minor (from the matrix) is downloaded now, or,
//     when the matrix does not name it, this machine's go must be able to
//     download toolchains (go1.21 or newer); an explicit host or go1.X.Y
//     setting is resolved now;
//   - container mode: NOKMEM_BUILD_IMAGE, and that image has the tools.
func (c *Config) kubeletPrereqs(ctx context.Context, rel matrix.Release) (*kubePrereqs, error) {
	work, err := filepath.Abs(filepath.Join(c.CacheDir, "work", "kubelet", rel.Version, "gopath", "src", filepath.FromSlash(KubeImportPath)))
	if err != nil {
		return nil, err
	}
	if err := build.SafeKubePath(work); err != nil {
		return nil, &UserError{Msg: fmt.Sprintf("NOKMEM_CACHE=%s: the kubelet work tree %v; set NOKMEM_CACHE to a plainer path. Nothing was fetched", c.CacheDir, err)}
	}
	if c.Mode == build.ModeContainer {
		if c.BuildImage == "" {
			return nil, &UserError{Msg: "container mode builds kubelet with Kubernetes' own make, which needs the release's Go, GNU make, bash 4 or newer, rsync and git in the image; " +
				"the golang:<version> images lack rsync. Set NOKMEM_BUILD_IMAGE to Kubernetes' own build image (k8s.gcr.io/kube-cross:<the tree's build/build-image/cross/VERSION>, " +
				"e.g. v1.11.13-1 for v1.13.12) or to an image FROM golang:<the release's Go> with rsync added, or build in host mode (the default). Nothing was fetched"}
		}
		v, id, err := (&build.Builder{Runner: c.Runner}).CheckKubeletImage(ctx, c.BuildImage)
		if err != nil {
			return nil, &UserError{Msg: err.Error()}
		}
		return &kubePrereqs{imageGo: v, imageID: id}, nil
	}
	if err := build.CheckKubeletTools(ctx, c.Runner); err != nil {
		return nil, &UserError{Msg: err.Error()}
	}
	req := build.ToolchainRequest{Mode: c.Mode, GoBin: c.GoBin, Toolchain: c.GoToolchain, Default: build.SourceEra, CacheDir: c.CacheDir}
	switch {
	case c.GoToolchain != build.SourceDefault && c.GoToolchain != build.SourceEra:
		// host or an exact go1.X.Y: resolved (downloaded) now.
	case rel.Go != "":
		req.Era = rel.Go
	default:
		// The exact Go is read from the tree; this machine's go downloads it.
		req.Toolchain = build.SourceHost
		host, err := build.ResolveToolchain(ctx, c.Runner, req)
		if err != nil {
			return nil, &UserError{Msg: err.Error() + ". Nothing was fetched"}
		}
		if target.GoMinor(host.Version) < 21 {
			return nil, &UserError{Msg: fmt.Sprintf("kubelet %s builds with its release's own Go, which %s (%s) cannot download: that takes go1.21 or newer. "+
				"Install a newer Go (or set NOKMEM_GO to one), or set NOKMEM_GO_TOOLCHAIN=host to build with %s. Nothing was fetched", rel.Version, host.GoBin, host.Version, host.Version)}
		}
		return &kubePrereqs{}, nil
	}
	if _, err := build.ResolveToolchain(ctx, c.Runner, req); err != nil {
		return nil, &UserError{Msg: fmt.Sprintf("the Go for kubelet %s: %v. Nothing was fetched", rel.Version, err)}
	}
	return &kubePrereqs{}, nil
}

// TreeAfterMake is `git status --porcelain` of the work tree after
// Kubernetes' make: empty with the release's Go; a newer Go's generators
// rewrite tracked files.
type TreeAfterMake struct {
	Clean   bool     `json:"clean"`
	Changed []string `json:"changed"`
	Go      string   `json:"go"`
}

func treeAfterMake(ctx context.Context, r run.Runner, tree, goVersion string) (*TreeAfterMake, error) {
	out, err := r.Run(ctx, run.Cmd{Args: []string{"git", "status", "--porcelain"}, Dir: tree, Env: []string{"GIT_CONFIG_NOSYSTEM=1", "LC_ALL=C"}})
	if err != nil {
		return nil, fmt.Errorf("git status after make: %w", err)
	}
	t := &TreeAfterMake{Changed: []string{}, Go: goVersion}
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if strings.TrimSpace(l) != "" {
			t.Changed = append(t.Changed, l)
		}
	}
	t.Clean = len(t.Changed) == 0
	return t, nil
}

// KubeletVersion is what the built kubelet says about itself.
type KubeletVersion struct {
	Printed      string `json:"printed"`
	GitCommit    string `json:"gitCommit"`
	GitTreeState string `json:"gitTreeState"`
	// From is how GitCommit and GitTreeState were read: "--version=raw"
	// (verflag's %#v of version.Info), or "binary" when the kubelet has no
	// raw output and the commit was found among its bytes.
	From string `json:"from"`
}

var (
	rawCommitRE = regexp.MustCompile(`GitCommit:"([^"]*)"`)
	rawStateRE  = regexp.MustCompile(`GitTreeState:"([^"]*)"`)
)

// checkKubeletVersion requires `kubelet --version` to print want exactly,
// and the linker variables to carry the upstream commit (not the local
// patch commit, which exists nowhere else) and a clean tree state.
func checkKubeletVersion(ctx context.Context, r run.Runner, kubelet, want, commit string) (*KubeletVersion, error) {
	out, err := r.Run(ctx, run.Cmd{Args: []string{kubelet, "--version"}})
	kv := &KubeletVersion{Printed: strings.TrimSpace(string(out))}
	if err != nil || kv.Printed != want {
		return nil, fmt.Errorf("kubelet --version printed %q, want %q (a -dirty suffix means the work tree was not clean): %v", kv.Printed, want, err)
	}
	raw, err := r.Run(ctx, run.Cmd{Args: []string{kubelet, "--version=raw"}})
	c, s := rawCommitRE.FindSubmatch(raw), rawStateRE.FindSubmatch(raw)
	if err == nil && c != nil && s != nil {
		kv.GitCommit, kv.GitTreeState, kv.From = string(c[1]), string(s[1]), "--version=raw"
		if kv.GitCommit != commit || kv.GitTreeState != "clean" {
			return nil, fmt.Errorf("kubelet --version=raw reports GitCommit %q and GitTreeState %q; want the upstream commit %s and clean (KUBE_GIT_COMMIT and KUBE_GIT_TREE_STATE did not reach the linker)",
				kv.GitCommit, kv.GitTreeState, commit)
		}
		return kv, nil
	}
	b, rerr := os.ReadFile(kubelet)
	if rerr != nil {
		return nil, rerr
	}
	if !bytes.Contains(b, []byte(commit)) {
		return nil, fmt.Errorf("the kubelet does not carry the upstream commit %s (no --version=raw output, and the commit is not among its bytes)", commit)
	}
	kv.GitCommit, kv.GitTreeState, kv.From = commit, "clean", "binary"
	return kv, nil
}

// EmbeddedPaths counts, in a binary, the absolute paths that would make it
// depend on where it was built (NOKMEM_CACHE, the work tree, physical and
// as configured).
type EmbeddedPaths struct {
	Count map[string]int `json:"count"`
	Total int            `json:"total"`
}

func embeddedPaths(binary string, paths map[string]string) (*EmbeddedPaths, error) {
	b, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	e := &EmbeddedPaths{Count: map[string]int{}}
	names := make([]string, 0, len(paths))
	for n := range paths {
		names = append(names, n)
	}
	sort.Strings(names)
	seen := map[string]bool{}
	for _, n := range names {
		p := paths[n]
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		if p == "" || p == "/" || seen[p] {
			continue
		}
		seen[p] = true
		k := bytes.Count(b, []byte(p))
		e.Count[n] = k
		// The work tree lies inside the cache: the largest count is the
		// number of places that name where the build ran.
		e.Total = max(e.Total, k)
	}
	return e, nil
}
