package pipeline

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nokmem/nokmem/internal/attest"
	"github.com/nokmem/nokmem/internal/build"
	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/patch"
	"github.com/nokmem/nokmem/internal/source"
	"github.com/nokmem/nokmem/internal/srccheck"
	"github.com/nokmem/nokmem/matrix"
	"github.com/nokmem/nokmem/verify"
	"github.com/nokmem/nokmem/verify/target"
)

// RuncImportPath is where runc's sources must sit on GOPATH.
const RuncImportPath = "github.com/opencontainers/runc"

// keySchema changes whenever the meaning of the input key changes.
const keySchema = "nokmem-runc-key/3"

// goamd64 is the x86-64 level every nokmem binary is compiled for: the
// baseline, which every target runs (set explicitly, so a GOAMD64 in the
// caller's environment cannot change the bytes unrecorded).
const goamd64 = "v1"

// BuildRunc produces a verified nokmem runc for version in dist/.
func BuildRunc(ctx context.Context, c *Config, version string) (*Result, error) {
	rel, err := c.loadRelease("runc", version)
	if err != nil {
		return nil, err
	}
	if rel.Strategy == matrix.StrategyNone {
		return nil, &NothingToDoError{Project: "runc", Version: version,
			Why: "runc v1.0.0-rc94 and later carry no kernel-memory code; upstream commit 52390d68 removed it"}
	}
	patches, err := patch.LoadDirs(filepath.Join(c.PatchesDir, "runc"), overlayDir(c.PatchesOverlay, "runc"))
	if err != nil {
		return nil, fmt.Errorf("load patches: %w", err)
	}
	var chosen []*patch.Patch
	for _, name := range rel.Patches {
		p, err := patches.Get(name)
		if err != nil {
			return nil, err
		}
		chosen = append(chosen, p)
	}
	tgt, err := c.target()
	if err != nil {
		return nil, err
	}
	// Instant once the toolchain is there; a first era build downloads it.
	doneTC := c.reporter().Quiet("toolchain", fmt.Sprintf("runc %s: the Go to build with (era go%s, through the Go module proxy)", version, rel.Go), time.Second)
	tc, err := build.ResolveToolchain(ctx, c.Runner, build.ToolchainRequest{
		Mode: c.Mode, Era: rel.Go, GoBin: c.GoBin, Toolchain: c.GoToolchain, Default: rel.Toolchain, Image: c.BuildImage, CacheDir: c.CacheDir})
	doneTC(err)
	if err != nil {
		return nil, &UserError{Msg: err.Error()}
	}
	static := &build.Static{Tags: rel.Static.Tags, InstallSuffix: rel.Static.InstallSuffix}
	var cgo build.CgoInfo
	if c.Mode == build.ModeContainer {
		// What the image really holds, before anything is fetched.
		img, err := (&build.Builder{Runner: c.Runner}).CheckRuncImage(ctx, tc.Image, rel.BuildTags, true)
		if err != nil {
			return nil, &UserError{Msg: err.Error()}
		}
		tc.Version, tc.ImageID, cgo = img.GoVersion, img.ID, img.Cgo
		if rel.Go != "" && target.GoMinor(tc.Version) != target.GoMinor("go"+rel.Go) {
			c.logf("WARNING: runc %s is built with the %s of image %s; the release was built with Go %s", version, tc.Version, tc.Image, rel.Go)
		}
	} else if cgo, err = build.CheckCgoDeps(ctx, c.Runner, rel.BuildTags, true); err != nil {
		return nil, &UserError{Msg: err.Error()}
	}
	patchSums := make([]string, len(chosen))
	for i, p := range chosen {
		patchSums[i] = p.SHA256
	}
	// Everything that changes the binary's bytes or its verification.
	key := inputKey(keySchema, rel.Version, rel.Commit, rel.Strategy, rel.BuildTags, rel.Layout, patchSums,
		tc.Version, tc.Image, tc.ImageID, c.Mode, c.AllowStaticOnly, static, build.StaticLDFlags, goamd64, cgo, tgt.Name,
		c.ToolkitRevision, c.dynamic())
	// workTree serves a cache hit (before and after waiting for the lock).
	f, co, gopath, unlock, hit, err := c.workTree(ctx, "runc", c.RepoURL, "NOKMEM_RUNC_REPO", RuncImportPath, rel, c.cacheCheck("runc", version, key))
	if err != nil || hit != nil {
		return hit, err
	}
	defer unlock()
	srcDir := co.Dir
	applied, treeCommit, err := c.treatRunc(ctx, f, co, version, rel, chosen, patches)
	if err != nil {
		return nil, err
	}
	doneCheck := c.step("source check", fmt.Sprintf("runc %s: nothing in %s can write %s", version, srccheck.FSPackage, verify.KmemFile))
	check, err := srccheck.Check(filepath.Join(srcDir, filepath.FromSlash(srccheck.FSPackage)), rel.BuildTags)
	switch {
	case err != nil:
	case !check.HasKmemCode():
		err = fmt.Errorf("source check: %s in runc %s declares no kernel-memory function; the matrix says strategy %q. The tree does not look like runc of that era", srccheck.FSPackage, version, rel.Strategy)
	case !check.OK():
		err = fmt.Errorf("the nokmem treatment did not take effect: %w", check)
	}
	doneCheck(err)
	if err != nil {
		return nil, err
	}

	ver, err := os.ReadFile(filepath.Join(srcDir, "VERSION"))
	if err != nil {
		return nil, fmt.Errorf("read VERSION: %w", err)
	}
	st, err := dist.NewStaging(c.DistDir, "runc", version)
	if err != nil {
		return nil, err
	}
	published := false
	defer func() {
		if !published {
			st.Abort()
		}
	}()
	req := &build.Request{
		GOPATH: gopath, ImportPath: RuncImportPath, Layout: rel.Layout, Tags: rel.BuildTags,
		// runc's Makefile: -X main.gitCommit=$(COMMIT) -X main.version=$(VERSION)
		LDFlagsX:   []string{"main.gitCommit=" + co.Commit, "main.version=" + strings.TrimSpace(string(ver))},
		Package:    ".",
		Output:     st.Path("runc"),
		SourceDate: co.CommitDate,
		Mode:       c.Mode,
		Toolchain:  tc,
		Static:     static,
		GOAMD64:    goamd64,
		GOCACHE:    oldGoCache(c.CacheDir, tc, cgo),
	}
	doneBuild := c.step("build", fmt.Sprintf("runc %s: statically for %s with %s (%s; tags %s, static %s, %s layout)", version, tgt.Name, tc.Version, tc.Source,
		strings.Join(rel.BuildTags, ","), strings.Join(static.Tags, ","), rel.Layout))
	b := &build.Builder{Runner: c.streaming()}
	br, err := b.Build(ctx, req)
	doneBuild(err)
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	prov := &dist.Provenance{
		Schema: dist.ProvenanceSchema, Project: "runc", Version: version, Strategy: string(rel.Strategy), InputKey: key,
		Source: dist.SourceInfo{URL: co.URL, Tag: rel.Version, Commit: co.Commit, CommitDate: co.CommitDate,
			TreeCommit: treeCommit, Matrix: rel.Origin, Pinned: "pinned", Notice: upstreamNotice(srcDir, "NOTICE")},
		Patches: applied,
		Build: dist.BuildInfo{Tags: rel.BuildTags, GoRequested: rel.Go, GoUsed: tc.Version, GoSource: tc.Source, Mode: string(br.Mode),
			Image: tc.Image, ImageID: tc.ImageID, Args: br.Args, Env: br.Env, Target: tgt.Name, GOAMD64: goamd64, Static: static, Cgo: cgo,
			Toolkit: c.ToolkitRevision},
		Checks: map[string]any{"source": check},
	}
	return c.verifyAndPublish(ctx, st, prov, "runc", verify.Options{Project: "runc", AllowStaticOnly: c.AllowStaticOnly, Dynamic: c.dynamic(), Target: tgt.Name, SelfContained: true}, &published)
}

// verifyAndPublish verifies the binary in the staging directory, writes the
// report and the provenance, and publishes only a passing artifact.
func (c *Config) verifyAndPublish(ctx context.Context, st *dist.Staging, prov *dist.Provenance, binary string, opt verify.Options, published *bool) (*Result, error) {
	doneVerify := c.step("verify", fmt.Sprintf("%s %s: static checks, the %s gate, the dynamic check (NOKMEM_DYNAMIC=%s)", prov.Project, prov.Version, opt.Target, opt.Dynamic))
	rep, err := c.Verifier.Verify(ctx, st.Path(binary), opt)
	if err != nil {
		doneVerify(err)
		return nil, err
	}
	if !rep.Passed {
		doneVerify(fmt.Errorf("verdict %s", rep.Verdict))
	} else {
		doneVerify(nil)
	}
	rep.Binary = binary
	if err := st.WriteJSON(dist.ReportFile, rep); err != nil {
		return nil, err
	}
	if !rep.Passed {
		return nil, &VerificationError{Report: rep}
	}
	// A verification that passed while the build was being cancelled is
	// not published: the user asked it to stop.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("cancelled before publishing: %w", err)
	}
	donePublish := c.step("publish", fmt.Sprintf("%s %s: provenance, statement and binary into %s", prov.Project, prov.Version, c.DistDir))
	res, err := c.publish(st, prov, binary, rep, published)
	donePublish(err)
	return res, err
}

// publish writes the provenance and the statement of a verified binary
// and moves the staging directory into place.
func (c *Config) publish(st *dist.Staging, prov *dist.Provenance, binary string, rep *verify.Report, published *bool) (*Result, error) {
	// What is published, hashed and signed is exactly what was verified:
	// the report names the digest of the file the verifier checked.
	sum, err := dist.FileSHA256(st.Path(binary))
	if err != nil {
		return nil, err
	}
	if sum != rep.SHA256 {
		return nil, fmt.Errorf("%s changed after it was verified (verified sha256 %s, now %s): something else writes to NOKMEM_DIST (%s); nothing was published", st.Path(binary), rep.SHA256, sum, c.DistDir)
	}
	info, err := os.Stat(st.Path(binary))
	if err != nil {
		return nil, err
	}
	prov.Output = dist.OutputInfo{File: binary, SHA256: sum, Size: info.Size()}
	prov.Verified = dist.VerifiedInfo{Passed: rep.Passed, Verdict: string(rep.Verdict), Dynamic: rep.Dynamic.Status, Notes: rep.Reasons}
	if prov.Patches == nil {
		prov.Patches = []dist.PatchInfo{}
	}
	if err := st.WriteJSON(dist.ProvenanceFile, prov); err != nil {
		return nil, err
	}
	// The statement pins the files above; the signature covers it.
	if err := attest.Write(st.Path(""), prov, c.Signing.Sign, time.Now()); err != nil {
		return nil, fmt.Errorf("write %s: %w", dist.StatementFile, err)
	}
	if err := c.mayReplace(prov.Project, prov.Version); err != nil {
		return nil, err
	}
	if again, err := dist.FileSHA256(st.Path(binary)); err != nil || again != sum {
		return nil, fmt.Errorf("%s changed while its statement was written (verified sha256 %s, now %s, %v): something else writes to NOKMEM_DIST (%s); nothing was published", st.Path(binary), sum, again, err, c.DistDir)
	}
	final, err := st.Publish()
	if err != nil {
		return nil, err
	}
	*published = true
	return &Result{Dir: final, Binary: filepath.Join(final, binary), SHA256: sum, Report: rep}, nil
}

// upstreamNotice reads the NOTICE file at rel in the source tree dir ("" if
// there is none): the packages carry it as the source has it.
func upstreamNotice(dir, rel string) string {
	b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rel)))
	if err != nil {
		return ""
	}
	return string(b)
}

// treatRunc applies the release's patches to the checkout and commits
// them; a release built with the nokmem tag needs nothing done to its tree.
func (c *Config) treatRunc(ctx context.Context, f *source.Fetcher, co *source.Checkout, version string, rel matrix.Release, chosen []*patch.Patch, patches *patch.Set) (applied []dist.PatchInfo, treeCommit string, err error) {
	if len(chosen) == 0 {
		c.step("treat", fmt.Sprintf("runc %s: build tags %s, nothing to patch", version, strings.Join(rel.BuildTags, ",")))(nil)
		return nil, co.Commit, nil
	}
	done := c.step("treat", fmt.Sprintf("runc %s: %s", version, strings.Join(rel.Patches, ", ")))
	defer func() { done(err) }()
	for _, p := range chosen {
		if err := p.Apply(co.Dir, "", patches.KnownBases(p.Target)); err != nil {
			return nil, "", fmt.Errorf("patch: %w", err)
		}
		applied = append(applied, dist.PatchInfo{Name: p.Name, SHA256: p.SHA256, Target: p.Target, BaseSHA256: p.BaseSHA256, ResultSHA256: p.ResultSHA256})
	}
	if treeCommit, err = f.Commit(ctx, co, "nokmem: "+strings.Join(rel.Patches, ", ")); err != nil {
		return nil, "", fmt.Errorf("commit patched tree: %w", err)
	}
	return applied, treeCommit, nil
}

func overlayDir(dir, project string) string {
	if dir == "" {
		return ""
	}
	if st, err := os.Stat(filepath.Join(dir, project)); err == nil && st.IsDir() {
		return filepath.Join(dir, project)
	}
	return dir
}

// target is the nodes the artifacts are for (NOKMEM_TARGET, default el7).
func (c *Config) target() (target.Target, error) {
	name := c.Target
	if name == "" {
		name = DefaultTarget
	}
	t, err := target.Lookup(name)
	if err != nil {
		return target.Target{}, &UserError{Msg: "NOKMEM_TARGET: " + err.Error()}
	}
	return t, nil
}

// DefaultTarget is the fleet this toolkit exists for.
const DefaultTarget = "el7"

// dynamic is NOKMEM_DYNAMIC for builds: "require" makes a build fail where
// the dynamic check cannot run, whatever NOKMEM_ALLOW_STATIC_ONLY says.
// "off" is for verify targets only: a build always runs the check it can.
func (c *Config) dynamic() string {
	if c.Dynamic == "require" {
		return "require"
	}
	return "auto"
}

// oldGoCache is a Go build cache of its own for Go before 1.16, whose cache
// does not key cgo objects on the flags pkg-config returns (a different
// libseccomp .pc would reuse stale objects); newer Go uses the caller's.
func oldGoCache(cacheDir string, tc build.Toolchain, cgo build.CgoInfo) string {
	if target.GoMinor(tc.Version) >= 16 {
		return ""
	}
	return filepath.Join(cacheDir, "go-build", tc.Version+"-"+inputKey(cgo, tc.GOROOT, tc.GoBin)[:12])
}
