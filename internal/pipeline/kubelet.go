package pipeline

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/nokmem/nokmem/internal/build"
	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/kube"
	"github.com/nokmem/nokmem/internal/patch"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/internal/srccheck"
	"github.com/nokmem/nokmem/verify"
)

// KubeImportPath is where a pre-module Kubernetes tree must sit on GOPATH.
const KubeImportPath = "k8s.io/kubernetes"

// ProbeFile is the kmem probe kept beside a kubelet artifact, so that
// verify:kubelet can repeat the dynamic check.
const ProbeFile = "kmem-probe"

// kubeKeySchema changes whenever the meaning of the kubelet input key changes.
const kubeKeySchema = "nokmem-kubelet-key/1"

var suffixRE = regexp.MustCompile(`^\+[0-9A-Za-z.-]+$`)

// BuildKubelet produces a verified nokmem kubelet for version in dist/.
func BuildKubelet(ctx context.Context, c *Config, version string) (*Result, error) {
	if c.KubeVersionSuffix != "" && !suffixRE.MatchString(c.KubeVersionSuffix) {
		return nil, &UserError{Msg: fmt.Sprintf("NOKMEM_KUBE_VERSION_SUFFIX=%q must be semver build metadata such as +nokmem.1 (a '-' pre-release suffix would change the version kubelet reports)", c.KubeVersionSuffix)}
	}
	rel, err := c.loadRelease("kubelet", version)
	if err != nil {
		return nil, err
	}
	pinned := "pinned"
	if rel.Commit == "" {
		if !c.AllowUnpinned {
			return nil, &UserError{Msg: fmt.Sprintf("kubelet %s has no pinned commit in the matrix (%s): set NOKMEM_ALLOW_UNPINNED=1 to build it anyway (the provenance will say \"unpinned\"), or pin the commit you have checked in an overlay matrix", version, rel.Origin)}
		}
		pinned = "unpinned"
		c.logf("WARNING: kubelet %s is UNPINNED: building whatever the tag resolves to now; the provenance records \"unpinned\"", version)
	}
	patches, err := patch.LoadDirs(filepath.Join(c.PatchesDir, "runc"), overlayDir(c.PatchesOverlay, "runc"))
	if err != nil {
		return nil, fmt.Errorf("load patches: %w", err)
	}
	// A pinned release has fixed inputs, so an intact, verified artifact
	// built from the same ones is reused. Unpinned ones always rebuild.
	key := ""
	if pinned == "pinned" {
		goKey := c.BuildImage
		if c.Mode != build.ModeContainer {
			tc, err := build.ResolveToolchain(ctx, c.Runner, build.ToolchainRequest{Mode: c.Mode, GoBin: c.GoBin, Toolchain: c.GoToolchain})
			if err != nil {
				return nil, &UserError{Msg: err.Error()}
			}
			goKey = tc.Version
		}
		key = inputKey(kubeKeySchema, rel.Version, rel.Commit, rel.Strategy, patches.Fingerprint(), c.KubeVersionSuffix,
			c.Mode, goKey, c.AllowStaticOnly, c.AcceptGoMismatch)
		if res, ok := c.cached("kubelet", version, key); ok {
			return res, nil
		}
	}
	f, co, gopath, unlock, err := c.workTree(ctx, "kubelet", c.KubeRepoURL, "NOKMEM_KUBERNETES_REPO", KubeImportPath, rel)
	if err != nil {
		return nil, err
	}
	defer unlock()
	tree := co.Dir
	if pinned == "unpinned" {
		c.logf("kubelet %s: the tag resolved to %s; pin it with \"commit: %s\" in an overlay once reviewed", version, co.Commit, co.Commit)
	}
	id, err := kube.Identify(tree, patches)
	if err != nil {
		return nil, fmt.Errorf("identify vendored runc: %w", err)
	}
	c.logf("kubelet %s: vendored runc %s (%s): strategy %s", version, id.RuncRevision, id.RevisionFrom, id.Strategy)
	if string(rel.Strategy) != "" && string(rel.Strategy) != id.Strategy {
		return nil, fmt.Errorf("the matrix expects strategy %q for kubelet %s, but the vendored content (runc %s, %v) needs %q; the matrix or the source is wrong: check before building",
			rel.Strategy, version, id.RuncRevision, id.Hashes, id.Strategy)
	}
	if id.Strategy == kube.StrategyNone {
		return nil, &NothingToDoError{Project: "kubelet", Version: version,
			Why: fmt.Sprintf("this kubelet does not enable kmem: its vendored runc %s has no kernel-memory code", id.RuncRevision)}
	}
	treeCommit := co.Commit
	var applied []dist.PatchInfo
	if id.Patch != nil {
		p := id.Patch
		c.logf("kubelet %s: applying %s under %s", version, p.Name, kube.VendorPrefix)
		if err := p.Apply(tree, kube.VendorPrefix, patches.KnownBases(p.Target)); err != nil {
			return nil, fmt.Errorf("patch: %w", err)
		}
		applied = append(applied, dist.PatchInfo{Name: p.Name, SHA256: p.SHA256, Target: kube.VendorPrefix + "/" + p.Target, BaseSHA256: p.BaseSHA256, ResultSHA256: p.ResultSHA256})
		if treeCommit, err = f.Commit(ctx, co, "nokmem: "+p.Name+" under "+kube.VendorPrefix); err != nil {
			return nil, fmt.Errorf("commit patched tree: %w", err)
		}
	}
	tags := []string{}
	if id.Strategy == kube.StrategyTag {
		tags = []string{"nokmem"}
	}
	check, err := srccheck.Check(filepath.Join(tree, filepath.FromSlash(kube.FSDir)), tags)
	if err != nil {
		return nil, err
	}
	if !check.OK() {
		return nil, fmt.Errorf("the nokmem treatment did not take effect: %w", check)
	}

	goVer, goFrom, err := kube.GoVersion(tree)
	if err != nil {
		return nil, &UserError{Msg: fmt.Sprintf("kubelet %s: %v", version, err)}
	}
	tc, err := build.ResolveToolchain(ctx, c.Runner, build.ToolchainRequest{
		Mode: c.Mode, Era: goVer, GoBin: c.GoBin, Toolchain: c.GoToolchain, Image: c.BuildImage})
	if err != nil {
		return nil, &UserError{Msg: err.Error()}
	}
	if c.Mode != build.ModeContainer && kube.Minor(tc.Version) != kube.Minor(goVer) {
		msg := fmt.Sprintf("kubelet %s was released with Go %s (%s) but the host Go is %s; old vendored dependencies are not safe on a much newer Go. "+
			"Use NOKMEM_BUILD_MODE=container, NOKMEM_GO_TOOLCHAIN=go%s (or NOKMEM_GO), or set NOKMEM_ACCEPT_GO_MISMATCH=1", version, goVer, goFrom, tc.Version, goVer)
		if !c.AcceptGoMismatch {
			return nil, &UserError{Msg: msg}
		}
		c.logf("WARNING: %s", msg)
	}

	req := &build.KubeletRequest{Tree: tree, Tag: id.Strategy == kube.StrategyTag, Version: version + c.KubeVersionSuffix,
		SourceDate: co.CommitDate, Mode: c.Mode, Toolchain: tc}
	if _, err := os.Stat(filepath.Join(tree, "go.mod")); err != nil {
		req.GOPATH = gopath
	}
	st, err := dist.NewStaging(c.DistDir, "kubelet", version)
	if err != nil {
		return nil, err
	}
	published := false
	defer func() {
		if !published {
			st.Abort()
		}
	}()
	c.logf("kubelet %s: make all WHAT=cmd/kubelet with %s (GOFLAGS=%q)", version, tc.Version, build.KubeletEnv(req)["GOFLAGS"])
	b := &build.Builder{Runner: c.Runner}
	br, out, err := b.BuildKubelet(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	if err := copyExecutable(out, st.Path("kubelet")); err != nil {
		return nil, err
	}
	if err := os.Chtimes(st.Path("kubelet"), co.CommitDate, co.CommitDate); err != nil {
		return nil, err
	}
	vout, err := c.Runner.Run(ctx, run.Cmd{Args: []string{st.Path("kubelet"), "--version"}})
	if got, want := strings.TrimSpace(string(vout)), "Kubernetes "+version+c.KubeVersionSuffix; err != nil || got != want {
		return nil, fmt.Errorf("kubelet --version printed %q, want %q (a -dirty suffix means the work tree was not clean): %v", got, want, err)
	}
	c.logf("kubelet %s: building the kmem probe (%s libcontainer API)", version, id.APIStyle)
	if err := b.BuildProbe(ctx, req, id.APIStyle, st.Path(ProbeFile)); err != nil {
		return nil, err
	}
	prov := &dist.Provenance{
		Schema: dist.ProvenanceSchema, Project: "kubelet", Version: version, Strategy: id.Strategy, InputKey: key,
		Source: dist.SourceInfo{URL: co.URL, Tag: rel.Version, Commit: co.Commit, CommitDate: co.CommitDate,
			TreeCommit: treeCommit, Matrix: rel.Origin, Pinned: pinned},
		Patches: applied,
		Build: dist.BuildInfo{Tags: tags, GoRequested: goVer + " (" + goFrom + ")", GoUsed: tc.Version, Mode: string(br.Mode),
			Image: tc.Image, Args: br.Args, Env: br.Env},
		Checks: map[string]any{"source": check, "vendoredRunc": id, "version": "Kubernetes " + version + c.KubeVersionSuffix},
	}
	return c.verifyAndPublish(ctx, st, prov, "kubelet",
		verify.Options{Project: "kubelet", AllowStaticOnly: c.AllowStaticOnly, Probe: st.Path(ProbeFile)}, &published)
}

func copyExecutable(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}
