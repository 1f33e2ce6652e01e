package pipeline

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nokmem/nokmem/internal/build"
	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/patch"
	"github.com/nokmem/nokmem/internal/srccheck"
	"github.com/nokmem/nokmem/matrix"
	"github.com/nokmem/nokmem/verify"
)

// RuncImportPath is where runc's sources must sit on GOPATH.
const RuncImportPath = "github.com/opencontainers/runc"

// keySchema changes whenever the meaning of the input key changes.
const keySchema = "nokmem-runc-key/1"

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
	tc, err := build.ResolveToolchain(ctx, c.Runner, build.ToolchainRequest{
		Mode: c.Mode, Era: rel.Go, GoBin: c.GoBin, Toolchain: c.GoToolchain, Image: c.BuildImage})
	if err != nil {
		return nil, &UserError{Msg: err.Error()}
	}
	if c.Mode != build.ModeContainer {
		if err := build.CheckCgoDeps(ctx, c.Runner, rel.BuildTags); err != nil {
			return nil, &UserError{Msg: err.Error()}
		}
	}
	patchSums := make([]string, len(chosen))
	for i, p := range chosen {
		patchSums[i] = p.SHA256
	}
	key := inputKey(keySchema, rel.Version, rel.Commit, rel.Strategy, rel.BuildTags, rel.Layout, patchSums,
		tc.Version, tc.Image, c.Mode, c.AllowStaticOnly)
	if res, ok := c.cached("runc", version, key); ok {
		return res, nil
	}

	f, co, gopath, unlock, err := c.workTree(ctx, "runc", c.RepoURL, "NOKMEM_RUNC_REPO", RuncImportPath, rel)
	if err != nil {
		return nil, err
	}
	defer unlock()
	srcDir := co.Dir
	treeCommit := co.Commit
	var applied []dist.PatchInfo
	if len(chosen) > 0 {
		for _, p := range chosen {
			c.logf("runc %s: applying %s to %s", version, p.Name, p.Target)
			if err := p.Apply(srcDir, "", patches.KnownBases(p.Target)); err != nil {
				return nil, fmt.Errorf("patch: %w", err)
			}
			applied = append(applied, dist.PatchInfo{Name: p.Name, SHA256: p.SHA256, Target: p.Target, BaseSHA256: p.BaseSHA256, ResultSHA256: p.ResultSHA256})
		}
		if treeCommit, err = f.Commit(ctx, co, "nokmem: "+strings.Join(rel.Patches, ", ")); err != nil {
			return nil, fmt.Errorf("commit patched tree: %w", err)
		}
	}

	check, err := srccheck.Check(filepath.Join(srcDir, filepath.FromSlash(srccheck.FSPackage)), rel.BuildTags)
	if err != nil {
		return nil, err
	}
	if !check.HasKmemCode() {
		return nil, fmt.Errorf("source check: %s in runc %s declares no kernel-memory function; the matrix says strategy %q. The tree does not look like runc of that era", srccheck.FSPackage, version, rel.Strategy)
	}
	if !check.OK() {
		return nil, fmt.Errorf("the nokmem treatment did not take effect: %w", check)
	}
	c.logf("runc %s: source check passed (%s)", version, strings.Join(check.Files, " "))

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
	}
	c.logf("runc %s: building with %s (tags %s, %s layout)", version, tc.Version, strings.Join(rel.BuildTags, ","), rel.Layout)
	b := &build.Builder{Runner: c.Runner}
	br, err := b.Build(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	prov := &dist.Provenance{
		Schema: dist.ProvenanceSchema, Project: "runc", Version: version, Strategy: string(rel.Strategy), InputKey: key,
		Source: dist.SourceInfo{URL: co.URL, Tag: rel.Version, Commit: co.Commit, CommitDate: co.CommitDate,
			TreeCommit: treeCommit, Matrix: rel.Origin, Pinned: "pinned"},
		Patches: applied,
		Build: dist.BuildInfo{Tags: rel.BuildTags, GoRequested: rel.Go, GoUsed: tc.Version, Mode: string(br.Mode),
			Image: tc.Image, Args: br.Args, Env: br.Env},
		Checks: map[string]any{"source": check},
	}
	return c.verifyAndPublish(ctx, st, prov, "runc", verify.Options{Project: "runc", AllowStaticOnly: c.AllowStaticOnly}, &published)
}

// verifyAndPublish verifies the binary in the staging directory, writes the
// report and the provenance, and publishes only a passing artifact.
func (c *Config) verifyAndPublish(ctx context.Context, st *dist.Staging, prov *dist.Provenance, binary string, opt verify.Options, published *bool) (*Result, error) {
	c.logf("%s %s: verifying", prov.Project, prov.Version)
	rep, err := c.Verifier.Verify(ctx, st.Path(binary), opt)
	if err != nil {
		return nil, err
	}
	rep.Binary = binary
	if err := st.WriteJSON(dist.ReportFile, rep); err != nil {
		return nil, err
	}
	if !rep.Passed {
		return nil, &VerificationError{Report: rep}
	}
	sum, err := dist.FileSHA256(st.Path(binary))
	if err != nil {
		return nil, err
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
	final, err := st.Publish()
	if err != nil {
		return nil, err
	}
	*published = true
	c.logf("%s %s: published %s (sha256 %s)", prov.Project, prov.Version, final, sum)
	return &Result{Dir: final, Binary: filepath.Join(final, binary), SHA256: sum, Report: rep}, nil
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
