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
	"github.com/nokmem/nokmem/internal/fileutil"
	"github.com/nokmem/nokmem/internal/kube"
	"github.com/nokmem/nokmem/internal/patch"
	"github.com/nokmem/nokmem/internal/srccheck"
	"github.com/nokmem/nokmem/verify"
	"github.com/nokmem/nokmem/verify/target"
)

// KubeImportPath is where a pre-module Kubernetes tree must sit on GOPATH.
const KubeImportPath = "k8s.io/kubernetes"

// ProbeFile is the kmem probe kept beside a kubelet artifact, so that
// verify:kubelet can repeat the dynamic check.
const ProbeFile = "kmem-probe"

// kubeKeySchema changes whenever the meaning of the kubelet input key changes.
const kubeKeySchema = "nokmem-kubelet-key/3"

var suffixRE = regexp.MustCompile(`^\+[0-9A-Za-z.-]+$`)

// BuildKubelet produces a verified nokmem kubelet for version in dist/,
// with Kubernetes' own `make all WHAT=cmd/kubelet`.
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
		if c.CI && !c.AllowUnpinned {
			return nil, &UserError{Msg: fmt.Sprintf("kubelet %s has no pinned commit in the matrix (%s), and CI=true builds only pinned releases: "+
				"review the commit the tag names, pin it (go tool mage matrix:pin kubelet %s), or set NOKMEM_ALLOW_UNPINNED=1", version, rel.Origin, version)}
		}
		pinned = "unpinned"
		c.logf("WARNING: kubelet %s is UNPINNED in %s: nokmem builds whatever tag %s names at %s now, and nobody has reviewed that commit. "+
			"The provenance says \"unpinned\"; release, publish:mirror and CI refuse the artifact unless NOKMEM_ALLOW_UNPINNED=1.", version, rel.Origin, version, c.KubeRepoURL)
	}
	patches, err := patch.LoadDirs(filepath.Join(c.PatchesDir, "runc"), overlayDir(c.PatchesOverlay, "runc"))
	if err != nil {
		return nil, fmt.Errorf("load patches: %w", err)
	}
	tgt, err := c.target()
	if err != nil {
		return nil, err
	}
	// A pinned release has fixed inputs, so an intact, verified artifact
	// built from the same ones is reused. Unpinned ones always rebuild.
	key := ""
	if pinned == "pinned" {
		// The release's Go is read from the tree, which is not fetched
		// yet: the key takes the setting (and the matrix's era) instead.
		goKey := c.BuildImage
		if c.Mode == build.ModeContainer {
			// The image by content when it is here (a moved tag is another
			// image); by name until it is pulled.
			if id, err := (&build.Builder{Runner: c.Runner}).ImageID(ctx, c.BuildImage); err == nil {
				goKey = id
			}
		} else {
			goKey = c.GoToolchain + "|" + rel.Go
			if c.GoToolchain == build.SourceHost {
				tc, err := build.ResolveToolchain(ctx, c.Runner, build.ToolchainRequest{Mode: c.Mode, GoBin: c.GoBin, Toolchain: c.GoToolchain})
				if err != nil {
					return nil, &UserError{Msg: err.Error()}
				}
				goKey = tc.Version
			}
		}
		key = inputKey(kubeKeySchema, rel.Version, rel.Commit, rel.Strategy, patches.Fingerprint(), c.KubeVersionSuffix,
			c.Mode, goKey, c.AllowStaticOnly, c.AcceptGoMismatch, tgt.Name, goamd64, c.ToolkitRevision, c.dynamic())
	}
	// workTree asks check before fetching anything (and again once it holds
	// the lock): a cache hit is served; otherwise every prerequisite of
	// Kubernetes' build must be there before the tag is fetched.
	var pre *kubePrereqs
	var preErr error
	hit := c.cacheCheck("kubelet", version, key)
	check := func() (*Result, error) {
		if hit != nil {
			if res, err := hit(); res != nil || err != nil {
				return res, err
			}
		}
		if pre == nil && preErr == nil {
			pre, preErr = c.kubeletPrereqs(ctx, rel)
		}
		return nil, preErr
	}
	f, co, gopath, unlock, cached, err := c.workTree(ctx, "kubelet", c.KubeRepoURL, "NOKMEM_KUBERNETES_REPO", KubeImportPath, rel, check)
	if err != nil || cached != nil {
		return cached, err
	}
	defer unlock()
	if pinned == "unpinned" {
		c.logf("WARNING: kubelet %s: tag %s at %s resolved to commit %s. Review that commit; to pin it: go tool mage matrix:pin kubelet %s",
			version, version, co.URL, co.Commit, version)
	}
	// Kubernetes' scripts work on the physical path (KUBE_ROOT is
	// `pwd -P`); every path nokmem hands them is that one.
	tree, err := filepath.EvalSymlinks(co.Dir)
	if err != nil {
		return nil, err
	}
	if gopath, err = filepath.EvalSymlinks(gopath); err != nil {
		return nil, err
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
		done := c.step("treat", fmt.Sprintf("kubelet %s: %s under %s", version, p.Name, kube.VendorPrefix))
		err := p.Apply(tree, kube.VendorPrefix, patches.KnownBases(p.Target))
		if err != nil {
			err = fmt.Errorf("patch: %w", err)
		} else if treeCommit, err = f.Commit(ctx, co, "nokmem: "+p.Name+" under "+kube.VendorPrefix); err != nil {
			err = fmt.Errorf("commit patched tree: %w", err)
		}
		done(err)
		if err != nil {
			return nil, err
		}
		applied = append(applied, dist.PatchInfo{Name: p.Name, SHA256: p.SHA256, Target: kube.VendorPrefix + "/" + p.Target, BaseSHA256: p.BaseSHA256, ResultSHA256: p.ResultSHA256})
	} else {
		c.step("treat", fmt.Sprintf("kubelet %s: -tags=nokmem in GOFLAGS, nothing to patch", version))(nil)
	}
	tags := []string{}
	if id.Strategy == kube.StrategyTag {
		tags = []string{"nokmem"}
	}
	doneCheck := c.step("source check", fmt.Sprintf("kubelet %s: nothing under %s can write %s", version, kube.FSDir, verify.KmemFile))
	srcCheck, err := srccheck.Check(filepath.Join(tree, filepath.FromSlash(kube.FSDir)), tags)
	if err == nil && !srcCheck.OK() {
		err = fmt.Errorf("the nokmem treatment did not take effect: %w", srcCheck)
	}
	doneCheck(err)
	if err != nil {
		return nil, err
	}

	doneTC := c.step("toolchain", fmt.Sprintf("kubelet %s: the release's Go, read from the tree", version))
	goVer, goFrom, tc, scripts, err := c.kubeletGo(ctx, version, rel.Go, tree, pre)
	doneTC(err)
	if err != nil {
		return nil, err
	}
	gold, goldSet := scripts.Goldflags()
	// Kubernetes builds in GOPATH mode up to 1.2x, go.mod or not (from 1.15
	// its init.sh exports GO111MODULE=off); the kmem probe is built the same
	// way, from the same vendor/.
	req := &build.KubeletRequest{Tree: tree, GOPATH: gopath, Tag: id.Strategy == kube.StrategyTag, Version: version + c.KubeVersionSuffix,
		Commit: co.Commit, SourceDate: co.CommitDate, Mode: c.Mode, Toolchain: tc, GOAMD64: goamd64, Goldflags: gold, GoldflagsSet: goldSet}
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
	env := build.KubeletEnv(req)
	doneBuild := c.step("build", fmt.Sprintf("kubelet %s: make all WHAT=cmd/kubelet with %s (GOFLAGS=%q)", version, tc.Version, env["GOFLAGS"]))
	b := &build.Builder{Runner: c.streaming()}
	br, out, err := b.BuildKubelet(ctx, req)
	doneBuild(err)
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	after, err := treeAfterMake(ctx, c.Runner, tree, tc.Version)
	if err != nil {
		return nil, err
	}
	if !after.Clean {
		c.logf("WARNING: kubelet %s: make changed %d paths of the work tree (Go %s formats generated files differently from the release's Go %s): %s. "+
			"The version stays exact because nokmem sets KUBE_GIT_TREE_STATE=clean; the provenance lists them (checks.treeAfterMake)",
			version, len(after.Changed), tc.Version, goVer, strings.Join(after.Changed, ", "))
	}
	if err := copyExecutable(out, st.Path("kubelet")); err != nil {
		return nil, err
	}
	if err := os.Chtimes(st.Path("kubelet"), co.CommitDate, co.CommitDate); err != nil {
		return nil, err
	}
	want := "Kubernetes " + version + c.KubeVersionSuffix
	kv, err := checkKubeletVersion(ctx, c.Runner, st.Path("kubelet"), want, co.Commit)
	if err != nil {
		return nil, err
	}
	paths, err := embeddedPaths(st.Path("kubelet"), map[string]string{"workTree": tree, "workTreeLogical": co.Dir, "cache": c.CacheDir})
	if err != nil {
		return nil, err
	}
	if paths.Total > 0 {
		c.logf("WARNING: kubelet %s: the binary names its work tree %d times (%v), so builds in another NOKMEM_CACHE differ. %s",
			version, paths.Total, paths.Count, reproNote(tc.Version))
	}
	doneProbe := c.step("build probe", fmt.Sprintf("kubelet %s: the kmem probe (%s libcontainer API)", version, id.APIStyle))
	err = b.BuildProbe(ctx, req, id.APIStyle, st.Path(ProbeFile))
	doneProbe(err)
	if err != nil {
		return nil, err
	}
	prov := &dist.Provenance{
		Schema: dist.ProvenanceSchema, Project: "kubelet", Version: version, Strategy: id.Strategy, InputKey: key,
		Source: dist.SourceInfo{URL: co.URL, Tag: rel.Version, Commit: co.Commit, CommitDate: co.CommitDate,
			TreeCommit: treeCommit, Matrix: rel.Origin, Pinned: pinned, Notice: upstreamNotice(co.Dir, "vendor/github.com/opencontainers/runc/NOTICE")},
		Patches: applied,
		Build: dist.BuildInfo{Tags: tags, GoRequested: goVer + " (" + goFrom + ")", GoUsed: tc.Version, GoSource: tc.Source, Mode: string(br.Mode),
			Image: tc.Image, ImageID: tc.ImageID, Args: br.Args, Env: br.Env, Target: tgt.Name, GOAMD64: goamd64, Toolkit: c.ToolkitRevision},
		Checks: map[string]any{"source": srcCheck, "vendoredRunc": id, "version": want, "kubeletVersion": kv,
			"treeAfterMake": after, "buildScripts": scripts, "embeddedPaths": paths},
	}
	return c.verifyAndPublish(ctx, st, prov, "kubelet",
		verify.Options{Project: "kubelet", AllowStaticOnly: c.AllowStaticOnly, Probe: st.Path(ProbeFile), Dynamic: c.dynamic(), Target: tgt.Name, SelfContained: true}, &published)
}

// kubeletGo decides the Go of the build from the tree and checks it
// against what Kubernetes' own scripts accept, before make runs.
func (c *Config) kubeletGo(ctx context.Context, version, matrixGo, tree string, pre *kubePrereqs) (goVer, goFrom string, tc build.Toolchain, scripts *kube.Scripts, err error) {
	goVer, goFrom, err = kube.GoVersion(tree)
	if err != nil {
		return "", "", tc, nil, &UserError{Msg: fmt.Sprintf("kubelet %s: %v", version, err)}
	}
	if matrixGo != "" && kube.Minor(goVer) != matrixGo {
		return "", "", tc, nil, fmt.Errorf("the matrix expects Go %s for kubelet %s, but the tree names %s (%s); the matrix or the source is wrong: check before building",
			matrixGo, version, goVer, goFrom)
	}
	scripts, err = kube.ReadScripts(tree)
	if err != nil {
		return "", "", tc, nil, fmt.Errorf("kubelet %s: %w", version, err)
	}
	// The release's own Go is the default: a newer Go regenerates tracked
	// files (//go:build lines, gofmt) and records build flags that name the
	// work tree.
	tc, err = build.ResolveToolchain(ctx, c.Runner, build.ToolchainRequest{
		Mode: c.Mode, Era: goVer, GoBin: c.GoBin, Toolchain: c.GoToolchain, Default: build.SourceEra, Image: c.BuildImage, CacheDir: c.CacheDir})
	if err != nil {
		return "", "", tc, nil, &UserError{Msg: err.Error()}
	}
	if c.Mode == build.ModeContainer && pre != nil && pre.imageGo != "" {
		tc.Version, tc.ImageID = pre.imageGo, pre.imageID // what the image really has
	}
	if kube.Minor(tc.Version) != kube.Minor(goVer) {
		msg := fmt.Sprintf("kubelet %s was released with Go %s (%s) but the Go chosen is %s; old vendored dependencies are not safe on a much newer Go. "+
			"Use the release's Go (unset NOKMEM_GO_TOOLCHAIN, or NOKMEM_GO_TOOLCHAIN=go%s; in container mode an image with it), or set NOKMEM_ACCEPT_GO_MISMATCH=1", version, goVer, goFrom, tc.Version, goVer)
		if !c.AcceptGoMismatch {
			return "", "", tc, nil, &UserError{Msg: msg}
		}
		c.logf("WARNING: %s", msg)
	}
	if ok, why := scripts.AcceptsGo(tc.Version); !ok {
		return "", "", tc, nil, &UserError{Msg: fmt.Sprintf("kubelet %s: %s; nothing was built", version, why)}
	}
	if tc.Version != "go"+goVer {
		c.logf("kubelet %s: building with %s, not the release's go%s. What that changes: the code generators `make all` runs rewrite tracked files "+
			"(recorded in the provenance, the version stays exact); %s", version, tc.Version, goVer, reproNote(tc.Version))
	}
	return goVer, goFrom, tc, scripts, nil
}

// reproNote says what a Go does to reproducibility across work trees.
func reproNote(goVersion string) string {
	if target.GoMinor(goVersion) >= 18 {
		return "Go >= 1.18 records the build's -gcflags in the binary, and Kubernetes' golang.sh puts the work tree's path there " +
			"(-trimpath=${KUBE_ROOT}): such a kubelet is reproducible only from the same NOKMEM_CACHE path; the release's own Go (the default) is reproducible from any"
	}
	return "nokmem trims the work tree's path from every recorded file name (GOFLAGS), so the bytes do not depend on NOKMEM_CACHE"
}

func copyExecutable(src, dst string) error {
	return fileutil.Copy(src, dst, 0o755, os.O_TRUNC)
}
