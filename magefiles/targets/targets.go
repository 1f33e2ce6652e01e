// Package targets holds what the Mage targets do: read the settings, call
// one pipeline package, print the result and render errors in one place.
// It is a normal package (no mage build tag) so it can be tested.
package targets

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/magefile/mage/mg"

	"github.com/nokmem/nokmem/internal/attest"
	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/doctor"
	"github.com/nokmem/nokmem/internal/mirror"
	"github.com/nokmem/nokmem/internal/nodetools"
	"github.com/nokmem/nokmem/internal/packaging"
	"github.com/nokmem/nokmem/internal/pinning"
	"github.com/nokmem/nokmem/internal/pipeline"
	"github.com/nokmem/nokmem/internal/progress"
	"github.com/nokmem/nokmem/internal/release"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/internal/runtimecfg"
	"github.com/nokmem/nokmem/internal/settings"
	"github.com/nokmem/nokmem/internal/signing"
	"github.com/nokmem/nokmem/matrix"
	"github.com/nokmem/nokmem/verify"
	"github.com/nokmem/nokmem/verify/container"
	"github.com/nokmem/nokmem/verify/vm"
)

// root is the project directory; Mage runs targets from there.
func root() string {
	wd, _ := os.Getwd()
	return wd
}

func config() (*settings.Env, *pipeline.Config, error) {
	env, err := settings.Read(os.Getenv)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := env.Pipeline(root())
	if cfg != nil {
		// A line per step; live on a terminal, timestamped in a log; the
		// build's own output with -v (MAGEFILE_VERBOSE).
		cfg.Progress = progress.ForFile(os.Stderr, mg.Verbose())
	}
	return env, cfg, err
}

// fail renders every error of every target: one message, exit status 1;
// "nothing to do" is not an error (ExitNothingToDo).
func fail(err error) error {
	if err == nil {
		return nil
	}
	var nothing *pipeline.NothingToDoError
	if errors.As(err, &nothing) {
		// Not a failure, so not Mage's "Error: …": a message and its own
		// exit status. Everything the target started has returned.
		fmt.Fprintf(stderr, "nokmem: %v (exit status %d)\n", nothing, ExitNothingToDo)
		exit(ExitNothingToDo)
		return nil
	}
	return mg.Fatal(1, "nokmem: "+err.Error())
}

// ExitNothingToDo is the exit status of build:runc and build:kubelet for a
// release that carries no kernel-memory code (runc v1.0.0-rc94 and later,
// kubelet 1.21.2 and later): nothing was built because nothing needs to be.
// A CI script tells it from success (0) and failure (1, 2).
const ExitNothingToDo = 3

// exit and stderr are os.Exit and os.Stderr; tests replace them.
var (
	exit             = os.Exit
	stderr io.Writer = os.Stderr
)

// BuildRunc is build:runc.
func BuildRunc(ctx context.Context, version string) error {
	_, cfg, err := config()
	if err != nil {
		return fail(err)
	}
	res, err := pipeline.BuildRunc(ctx, cfg, version)
	if err != nil {
		return fail(fmt.Errorf("build runc %s: %w", version, err))
	}
	fmt.Print(built("runc", version, res))
	return nil
}

// built is the one message of a finished build:<project>: built, or a
// cache hit (nothing else is printed for one).
func built(project, version string, res *pipeline.Result) string {
	if !res.CacheHit {
		return fmt.Sprintf("%s %s built and verified: %s\n  sha256 %s\n", project, version, res.Binary, res.SHA256)
	}
	how := "digests re-verified"
	if res.Signer != "" {
		how += ", statement signed by " + res.Signer
	}
	return fmt.Sprintf("%s %s already built (%s): %s\n  sha256 %s\n", project, version, how, res.Binary, res.SHA256)
}

// BuildKubelet is build:kubelet.
func BuildKubelet(ctx context.Context, version string) error {
	_, cfg, err := config()
	if err != nil {
		return fail(err)
	}
	res, err := pipeline.BuildKubelet(ctx, cfg, version)
	if err != nil {
		return fail(fmt.Errorf("build kubelet %s: %w", version, err))
	}
	fmt.Print(built("kubelet", version, res))
	return nil
}

func verifyOptions(env *settings.Env, kind string) verify.Options {
	return verify.Options{Project: kind, Dynamic: env.Dynamic, AllowStaticOnly: env.AllowStaticOnly, Target: env.Target}
}

// VerifyArtifact is verify:<project> for an artifact in dist/. The
// directory must first be what nokmem published (statement, signature when
// a key is set, every digest); only then is the binary verified again.
func VerifyArtifact(ctx context.Context, project, version string) error {
	env, cfg, err := config()
	if err != nil {
		return fail(err)
	}
	if _, err := matrix.ParseVersion(version); err != nil {
		return fail(err)
	}
	dir := dist.Dir(cfg.DistDir, project, version)
	art, err := attest.CheckDir(dir, attest.Expect{Project: project, Version: version, PublicKey: cfg.Signing.PublicKey})
	switch {
	case errors.Is(err, attest.ErrAbsent):
		// A release that needs no nokmem build has nothing to verify in
		// dist/: build:<project> of it exits with status 3.
		if m, merr := matrix.Load(project, cfg.MatrixDir, cfg.MatrixOverlay); merr == nil {
			if rel, ok := m.Lookup(version); ok && rel.Strategy == matrix.StrategyNone {
				return fail(&pipeline.NothingToDoError{Project: project, Version: version,
					Why: fmt.Sprintf("matrix/%s.yaml; there is nothing to build, so nothing in %s to verify. To check an upstream binary: go tool mage verify:file %s <path>", project, dir, project)})
			}
		}
		return fail(fmt.Errorf("%s %s: no artifact in %s (NOKMEM_DIST): run build:%s %s first", project, version, dir, project, version))
	case err != nil:
		return fail(fmt.Errorf("verify %s %s: %w. Do not use it: keep it to investigate, then remove it (rm -r %s) and run build:%s %s", project, version, err, dir, project, version))
	}
	// The report is written after the verification: find out now that it
	// cannot be.
	reports := filepath.Join(cfg.DistDir, "reports")
	if err := pipeline.CheckWritable("NOKMEM_DIST", reports, fmt.Sprintf("where verify:%s writes its report; NOKMEM_DIST=%s", project, cfg.DistDir)); err != nil {
		return fail(fmt.Errorf("verify %s %s: %w; nothing was verified", project, version, err))
	}
	fmt.Printf("%s %s: %s intact (sha256 %s), %s\n", project, version, dir, art.SHA256, signature(art, cfg.Signing.PublicKey))
	probe := ""
	if p := filepath.Join(dir, pipeline.ProbeFile); project == "kubelet" {
		probe = p
	}
	return verifyAndReport(ctx, env, cfg, project, art.Binary, probe, project+"-"+version)
}

// signature says what was checked of an artifact's signature.
func signature(art *attest.Artifact, publicKey []byte) string {
	switch {
	case art.Signer != "":
		return "statement signed by " + art.Signer
	case len(publicKey) == 0 && art.Signed:
		return "signature NOT checked: it is present, but no public key is set (NOKMEM_VERIFY_PUBKEY=<key.asc> checks it; without, a consistent rewrite of the directory is not detected)"
	}
	return "unsigned (no NOKMEM_SIGNING_KEY or NOKMEM_VERIFY_PUBKEY)"
}

// VerifyDist is verify:dist: every artifact under NOKMEM_DIST, a dist/
// tree or a downloaded GitHub release, checked as a consumer would, one
// line each; it fails with the list of every problem.
func VerifyDist(ctx context.Context) error {
	_, cfg, err := config()
	if err != nil {
		return fail(err)
	}
	tree, err := attest.CheckTree(ctx, cfg.DistDir, cfg.Signing.PublicKey)
	if err != nil {
		return fail(fmt.Errorf("verify:dist: %w", err))
	}
	kind := "dist"
	if tree.Release {
		kind = "release"
	}
	fmt.Printf("%s %s:\n", kind, tree.Root)
	var ni *attest.NotIntactError
	for _, e := range tree.Entries {
		name := strings.TrimSpace(e.Project + " " + e.Version)
		if name == "" {
			name = e.Where
		}
		switch {
		case e.Err == nil:
			fmt.Printf("  ok        %-22s sha256 %s  verdict %s, dynamic %s; %s\n", name, e.Artifact.SHA256, e.Artifact.Verdict, e.Artifact.Dynamic,
				signature(e.Artifact, cfg.Signing.PublicKey))
		case errors.As(e.Err, &ni) && ni.Modified():
			fmt.Printf("  MODIFIED  %-22s %s\n", name, e.Where)
		default:
			fmt.Printf("  FAILED    %-22s %s\n", name, e.Where)
		}
	}
	if len(tree.Problems) > 0 {
		n := fmt.Sprintf("%d problems", len(tree.Problems))
		if len(tree.Problems) == 1 {
			n = "1 problem"
		}
		return fail(fmt.Errorf("verify:dist: %s does not check out (%s); do not use what is named below:\n  - %s",
			tree.Root, n, strings.Join(tree.Problems, "\n  - ")))
	}
	unchecked := 0
	for _, e := range tree.Entries {
		if e.Artifact != nil && e.Artifact.Signed && !tree.SignaturesChecked {
			unchecked++
		}
	}
	fmt.Printf("%d artifacts intact and verified\n", len(tree.Entries))
	if unchecked > 0 {
		// Accepted, as without a key a signature proves nothing either
		// way; but the user must not read "ok" as "signed by us".
		fmt.Printf("NOTE: %d signatures were NOT checked: no public key is set. Check them with NOKMEM_VERIFY_PUBKEY=<key.asc> go tool mage verify:dist\n", unchecked)
	}
	return nil
}

// VerifyFile is verify:file.
func VerifyFile(ctx context.Context, kind, path string) error {
	env, cfg, err := config()
	if err != nil {
		return fail(err)
	}
	if kind != "runc" && kind != "kubelet" {
		return fail(fmt.Errorf("verify:file: kind %q must be runc or kubelet", kind))
	}
	if st, err := os.Stat(path); err != nil || !st.Mode().IsRegular() {
		return fail(fmt.Errorf("verify:file: %q is not a regular file", path))
	}
	sum, err := dist.FileSHA256(path)
	if err != nil {
		return fail(err)
	}
	return verifyAndReport(ctx, env, cfg, kind, path, "", "file-"+kind+"-"+sum[:16])
}

func verifyAndReport(ctx context.Context, env *settings.Env, cfg *pipeline.Config, kind, path, probe, name string) (err error) {
	var rep *verify.Report
	// The kubelet probe runs on the host or in the VM; a plain binary may
	// run in the image.
	useVM := env.UseVM()
	useDocker := !useVM && probe == "" && (env.VerifyRuntime == "docker" ||
		(env.VerifyRuntime == "auto" && container.Available(ctx, run.Local{}, "")))
	if useVM {
		fmt.Printf("verifying in a throwaway VM with its own cgroup v1 kernel (NOKMEM_VERIFY_RUNTIME=%s; see docs/vm.md)\n", env.VerifyRuntime)
		opt := verifyOptions(env, kind)
		opt.Probe = probe
		rep, err = env.VM(root()).Verify(ctx, path, opt)
	} else if useDocker {
		fmt.Println("verifying in the verifier container (NOKMEM_VERIFY_RUNTIME=host to run on the host)")
		v := &container.Verifier{Runner: run.Local{}, Root: root(), Privileged: env.Privileged, Dynamic: env.Dynamic, AllowStaticOnly: env.AllowStaticOnly}
		if rep, err = v.Verify(ctx, kind, path); err == nil {
			// The target gate reads the file and runs it in an empty root here.
			err = rep.ApplyTarget(ctx, path, verifyOptions(env, kind))
		}
	} else {
		opt := verifyOptions(env, kind)
		opt.Probe = probe
		rep, err = verify.Verify(ctx, path, opt)
	}
	if err != nil {
		return fail(err)
	}
	fmt.Print(rep.Summary())
	out := filepath.Join(cfg.DistDir, "reports", name+".verify.json")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fail(err)
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return fail(err)
	}
	fmt.Println("report:", out)
	if !rep.Passed {
		why := ""
		if t := rep.Target; t != nil && len(t.Problems) > 0 {
			// The kmem verdict may be fine: say what the target gate found.
			why = fmt.Sprintf(" (target %s: %s)", t.Target, t.Problems[0])
		}
		return fail(fmt.Errorf("%s: verdict %s, not verified%s", path, rep.Verdict, why))
	}
	return nil
}

func loadMatrix() (*matrix.Matrix, error) {
	env, err := settings.Read(os.Getenv)
	if err != nil {
		return nil, err
	}
	return matrix.Load("runc", filepath.Join(root(), "matrix"), env.MatrixOverlay)
}

// MatrixList is matrix:list.
func MatrixList() error {
	m, err := loadMatrix()
	if err != nil {
		return fail(err)
	}
	env, _ := settings.Read(os.Getenv)
	km, err := matrix.Load("kubelet", filepath.Join(root(), "matrix"), env.MatrixOverlay)
	if err != nil {
		return fail(err)
	}
	return fail(writeMatrixList(os.Stdout, m, km))
}

// writeMatrixList writes both matrices as tables: runc, then kubelet
// (pinned or not, the treatment expected, the Go).
func writeMatrixList(out io.Writer, runc, kubelet *matrix.Matrix) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "runc\nVERSION\tCOMMIT\tSTRATEGY\tTAGS\tSTATIC TAGS\tGO\tTOOLCHAIN\tLAYOUT\tPATCHES")
	for _, r := range runc.Releases {
		static := "-"
		if r.Static != nil {
			static = strings.Join(r.Static.Tags, ",")
		}
		fmt.Fprintf(w, "%s\t%.12s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Version, r.Commit, r.Strategy, strings.Join(r.BuildTags, ","), static, r.Go,
			cmp.Or(r.Toolchain, "host"), r.Layout, strings.Join(r.Patches, ","))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	// A new table: its own column widths.
	w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "\nkubelet (the vendored runc decides the treatment; STRATEGY is what is expected)\nVERSION\tPINNED\tSTRATEGY\tGO")
	for _, r := range kubelet.Releases {
		pinned := "unpinned"
		if r.Commit != "" {
			pinned = r.Commit[:min(12, len(r.Commit))]
		}
		strategy := string(r.Strategy)
		if strategy == "" {
			strategy = "by content"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r.Version, pinned, strategy, cmp.Or(r.Go, "from the tree"))
	}
	return w.Flush()
}

// MatrixJSON is matrix:json: {"include":[{"project":"runc","version":…}]}.
func MatrixJSON() error {
	m, err := loadMatrix()
	if err != nil {
		return fail(err)
	}
	type entry struct {
		Project  string `json:"project"`
		Version  string `json:"version"`
		Strategy string `json:"strategy"`
	}
	out := struct {
		Include []entry `json:"include"`
	}{Include: []entry{}}
	for _, r := range m.Releases {
		if r.Strategy != matrix.StrategyNone {
			out.Include = append(out.Include, entry{"runc", r.Version, string(r.Strategy)})
		}
	}
	// kubelet releases are built by CI only once pinned.
	env, _ := settings.Read(os.Getenv)
	if km, err := matrix.Load("kubelet", filepath.Join(root(), "matrix"), env.MatrixOverlay); err == nil {
		for _, r := range km.Releases {
			// Pinned, and known to need a treatment (an empty expectation may
			// turn out to be "nothing to do", which would fail the job).
			if r.Commit != "" && (r.Strategy == matrix.StrategyPatch || r.Strategy == matrix.StrategyTag) {
				out.Include = append(out.Include, entry{"kubelet", r.Version, string(r.Strategy)})
			}
		}
	} else {
		return fail(err)
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// MatrixPin is matrix:pin.
func MatrixPin(ctx context.Context, project, version string) error {
	env, cfg, err := config()
	if err != nil {
		return fail(err)
	}
	url, setting := cfg.KubeRepoURL, "NOKMEM_KUBERNETES_REPO"
	switch project {
	case "kubelet":
	case "runc":
		url, setting = cfg.RepoURL, "NOKMEM_RUNC_REPO"
	default:
		return fail(fmt.Errorf("matrix:pin: project %q must be kubelet or runc", project))
	}
	if _, err := matrix.ParseVersion(version); err != nil {
		return fail(err)
	}
	res, err := pinning.Pin(ctx, pinning.Request{Project: project, Version: version, MatrixDir: cfg.MatrixDir, Overlay: env.MatrixOverlay,
		RepoURL: url, Setting: setting, CacheDir: cfg.CacheDir, DistDir: cfg.DistDir, Runner: run.Local{}, Now: time.Now()})
	if err != nil {
		return fail(fmt.Errorf("matrix:pin %s %s: %w", project, version, err))
	}
	if res.Already {
		fmt.Printf("%s %s is already pinned to %s in %s\n", project, version, res.Commit, res.File)
		return nil
	}
	fmt.Printf("%s %s pinned to %s in %s\n", project, version, res.Commit, res.File)
	if res.Reviewed == "" {
		fmt.Printf("  no %s %s artifact in %s was built from it yet: build it (build:%s %s) and review it before publishing\n", project, version, cfg.DistDir, project, version)
	}
	return nil
}

// publishable refuses, for release and publish:mirror, artifacts built
// from unpinned matrix entries unless NOKMEM_ALLOW_UNPINNED=1.
func publishable(env *settings.Env, cfg *pipeline.Config, what string) error {
	allowed, err := pinning.CheckPublishable(cfg.DistDir, what, env.AllowUnpinned)
	for _, u := range allowed {
		fmt.Fprintf(stderr, "WARNING: %s publishes %s, built from an unpinned matrix entry (NOKMEM_ALLOW_UNPINNED=1)\n", what, u)
	}
	return err
}

func goCmd(ctx context.Context, args ...string) error {
	c := exec.CommandContext(ctx, "go", args...)
	c.Stdout, c.Stderr, c.Dir = os.Stdout, os.Stderr, root()
	return c.Run()
}

// Test is the test target.
// The verifier's tracer and detectors run goroutines against processes they
// follow; the race detector runs over that package too (about 40 s warm).
func Test(ctx context.Context) error {
	if err := goCmd(ctx, "test", "-count=1", "-timeout=45m", "./..."); err != nil {
		return fail(err)
	}
	return fail(goCmd(ctx, "test", "-race", "-count=1", "-timeout=20m", "./verify/..."))
}

// Bench is the bench target: every benchmark 20 times, but the
// whole-process build:runc and verify:runc benchmarks (a build or a check
// per iteration, BenchmarkWholeProcess*) 5 times.
func Bench(ctx context.Context) error {
	if err := goCmd(ctx, "test", "-run=^$", "-bench=.", "-skip=^BenchmarkWholeProcess", "-benchtime=20x", "./..."); err != nil {
		return fail(err)
	}
	return fail(goCmd(ctx, "test", "-run=^$", "-bench=^BenchmarkWholeProcess", "-benchtime=5x", "./magefiles/targets/"))
}

func signer(env *settings.Env) (func([]byte) ([]byte, error), error) {
	s, err := signingKey(env)
	if s == nil || err != nil {
		return nil, err
	}
	return s.Sign, nil
}

// signingKey is NOKMEM_SIGNING_KEY loaded, or nil when it is unset.
func signingKey(env *settings.Env) (*signing.Signer, error) {
	if env.SigningKey == "" {
		return nil, nil
	}
	return signing.Load(env.SigningKey, env.SigningPass)
}

// verifiedArtifacts lists project/version pairs in dist/.
func verifiedArtifacts(distRoot string) [][2]string {
	var out [][2]string
	for _, p := range []string{"runc", "kubelet"} {
		entries, _ := os.ReadDir(filepath.Join(distRoot, p))
		for _, e := range entries {
			if e.IsDir() {
				out = append(out, [2]string{p, e.Name()})
			}
		}
	}
	return out
}

// Package is the package target: RPM and DEB for every artifact in dist/,
// and nokmem-tools: the node tool built from this checkout, once it passed
// the target gate (internal/nodetools).
func Package(ctx context.Context) error {
	env, cfg, err := config()
	if err != nil {
		return fail(err)
	}
	arts := verifiedArtifacts(cfg.DistDir)
	if len(arts) == 0 {
		return fail(fmt.Errorf("no artifacts in %s: run build:runc or build:kubelet first", cfg.DistDir))
	}
	opt := packaging.Options{Release: env.PackageRelease, Maintainer: env.Maintainer}
	if env.Maintainer == "" {
		fmt.Fprintf(os.Stderr, "warning: NOKMEM_MAINTAINER is unset: the packages name %s, an address nobody reads; set it to whoever answers for them\n", packaging.DefaultMaintainer)
	}
	key, err := signingKey(env)
	if err != nil {
		return fail(err)
	}
	if key != nil {
		opt.Signer = key
	} else {
		fmt.Fprintln(os.Stderr, "warning: NOKMEM_SIGNING_KEY is unset: the RPMs are not signed, and yum/dnf with gpgcheck=1 (EL7's default) refuse them")
	}
	for _, a := range arts {
		paths, err := packaging.BuildWith(cfg.DistDir, a[0], a[1], opt)
		if err != nil {
			return fail(err)
		}
		for _, p := range paths {
			fmt.Println(p)
		}
	}
	tools, err := (&nodetools.Builder{Runner: run.Local{}}).Publish(ctx, root(), cfg.DistDir, env.Target)
	if err != nil {
		return fail(fmt.Errorf("nokmem-tools: %w", err))
	}
	fmt.Printf("node tool %s (commit %s): %s", tools.Version, tools.Commit, tools.Gate.Summary())
	paths, err := packaging.BuildTools(cfg.DistDir, packaging.ToolsFrom(tools, env.Target), opt)
	if err != nil {
		return fail(err)
	}
	for _, p := range paths {
		fmt.Println(p)
	}
	return nil
}

// RuntimeConfig is runtime:containerd and runtime:docker: merge the nokmem
// runtime into the configuration file at path (nokmem runtime, from
// Mage), with NOKMEM_RUNTIME_DEFAULT and NOKMEM_RUNTIME_REMOVE.
func RuntimeConfig(kind, path string) error {
	env, err := settings.Read(os.Getenv)
	if err != nil {
		return fail(err)
	}
	k, err := runtimecfg.ParseKind(kind)
	if err != nil {
		return fail(err)
	}
	a, err := runtimecfg.Apply(k, path, runtimecfg.Options{Default: env.RuntimeDefault, Remove: env.RuntimeRemove})
	if err != nil {
		return fail(fmt.Errorf("runtime:%s: %w", kind, err))
	}
	for _, n := range a.Notes {
		fmt.Println("  " + n)
	}
	switch {
	case !a.Changed:
		fmt.Printf("%s: nothing to change, nothing written\n", a.Path)
	case a.Backup != "":
		fmt.Printf("%s: written; the previous file is %s\nto apply it: %s\n", a.Path, a.Backup, a.Restart())
	default:
		fmt.Printf("%s: written\nto apply it: %s\n", a.Path, a.Restart())
	}
	return nil
}

// PublishMirror is publish:mirror.
func PublishMirror(ctx context.Context, dir string) error {
	env, cfg, err := config()
	if err != nil {
		return fail(err)
	}
	if err := publishable(env, cfg, "publish:mirror"); err != nil {
		return fail(err)
	}
	if err := Package(ctx); err != nil {
		return err
	}
	key, err := signingKey(env)
	if err != nil {
		return fail(err)
	}
	p := &mirror.Publisher{Runner: run.Local{}, URL: env.MirrorURL, Admit: func(pkg string) error {
		arts, _ := packaging.LoadArtifacts(cfg.DistDir)
		_, err := arts.Check(pkg)
		return err
	}}
	if key != nil {
		p.Signer = key
	}
	res, err := p.Publish(ctx, packaging.Dir(cfg.DistDir), dir)
	if err != nil {
		return fail(fmt.Errorf("publish mirror: %w", err))
	}
	for _, r := range res.Refused {
		fmt.Fprintf(os.Stderr, "warning: not published: %s\n", r)
	}
	fmt.Printf("mirror %s: %d added, %d already published\n", dir, len(res.Added), len(res.Skipped))
	if key == nil {
		fmt.Fprintln(os.Stderr, "warning: NOKMEM_SIGNING_KEY is unset: the mirror is unsigned; its nokmem.repo and nokmem.list say gpgcheck=0 and trusted=yes")
		return nil
	}
	fmt.Printf("  signed by %s\n  yum/dnf: %s/nokmem.repo into /etc/yum.repos.d/\n  apt:     %s/nokmem.gpg into %s, %s/nokmem.sources into /etc/apt/sources.list.d/\n",
		res.Fingerprint, dir, dir, mirror.Keyring, dir)
	return nil
}

// Release is the release target.
func Release(ctx context.Context, tag string) error {
	env, cfg, err := config()
	if err != nil {
		return fail(err)
	}
	if tag == "" || strings.ContainsAny(tag, " \t\n/") {
		return fail(fmt.Errorf("release: %q is not a tag name", tag))
	}
	if env.GitHubRepo == "" {
		return fail(errors.New("release: set NOKMEM_GITHUB_REPO=owner/name"))
	}
	sign, err := signer(env)
	if err != nil {
		return fail(err)
	}
	if err := publishable(env, cfg, "release"); err != nil {
		return fail(err)
	}
	plan, err := release.NewPlan(cfg.DistDir, sign)
	if err != nil {
		return fail(err)
	}
	defer plan.Close()
	for _, ig := range plan.Ignored {
		fmt.Fprintf(os.Stderr, "warning: not released: %s\n", ig)
	}
	owner, repo, _ := strings.Cut(env.GitHubRepo, "/")
	r, err := release.New(release.Options{Owner: owner, Repo: repo, Tag: tag, BaseURL: env.GitHubAPI, UploadURL: env.GitHubUpload,
		Token: os.Getenv("GITHUB_TOKEN"), Publish: env.Publish, Log: os.Stdout})
	if err != nil {
		return fail(err)
	}
	out, err := r.Run(ctx, plan.Assets)
	if err != nil {
		return fail(fmt.Errorf("release %s: %w", tag, err))
	}
	if !out.DryRun {
		fmt.Printf("release %s: %d uploaded, %d already present, published=%v\n", tag, len(out.Uploaded), len(out.Present), out.Published)
	}
	return nil
}

// VerifyHost is verify:host: can this machine run the dynamic check, and do
// both detectors see a canary's write here?
func VerifyHost(ctx context.Context) error {
	fmt.Printf("kernel: %s\n", verify.KernelRelease())
	env, err := settings.Read(os.Getenv)
	if err != nil {
		return fail(err)
	}
	// What builds killed by SIGKILL left in NOKMEM_DIST, like the cgroups
	// of dead checks below: removed when their owner is provably gone,
	// named when not.
	if distDir, err := filepath.Abs(env.Dist); err == nil {
		removed, err := dist.CleanStale(distDir)
		for _, p := range removed {
			fmt.Printf("removed the staging directory of a dead build: %s\n", p)
		}
		if err != nil {
			fmt.Printf("warning: staging directories of dead builds remain in NOKMEM_DIST=%s: %v\n", distDir, err)
		}
		left, _ := dist.StagingDirs(distDir)
		for _, p := range left {
			fmt.Printf("staging directory of a build that is running (or whose owner cannot be checked from here; removed after %s): %s\n", dist.UncheckableAge, p)
		}
	}
	hostP, vmP := verify.HostProblem(), vm.Problem(env.VMKernel)
	docker := "no Docker engine answers"
	if container.Available(ctx, run.Local{}, "") {
		docker = "an engine answers (it uses this host's cgroup v1 hierarchy)"
	}
	fmt.Printf("NOKMEM_VERIFY_RUNTIME modes here:\n  host:   %s\n  docker: %s\n  vm:     %s\n", cmp.Or(hostP, "yes"), docker, cmp.Or(vmP, "yes (QEMU and a kernel found)"))
	if p := hostP; p != "" && vmP == "" {
		boot, err := env.VM(root()).SelfTest(ctx)
		if err != nil {
			return fail(err)
		}
		for _, c := range boot.Result.SelfTest {
			fmt.Printf("detector %-9s caught the canary in the VM: %v\n", c.Detector, c.Caught)
		}
		fmt.Printf("this host cannot verify natively (%s), but a VM can: kernel %s (%s), %s, %s, %.1fs\n", p, boot.Result.Caps.Kernel, boot.Kernel.Path, boot.Accel, boot.How, boot.Wall.Seconds())
		for _, n := range boot.Notes {
			fmt.Printf("  note: %s\n", n)
		}
		return nil
	}
	if p := hostP; p != "" {
		return fail(fmt.Errorf("the dynamic check cannot run here: %s (static checks still work; NOKMEM_ALLOW_STATIC_ONLY=1 accepts them alone)", p))
	}
	mount, _ := verify.MemoryMount()
	fmt.Printf("cgroup v1 memory hierarchy: %s (has %s)\n", mount, verify.KmemFile)
	// What checks killed by SIGKILL or a Mage cleanup timeout left behind.
	reaped, err := verify.ReapLeftovers()
	for _, p := range reaped {
		fmt.Printf("removed the leftover of a dead check: %s\n", p)
	}
	if err != nil {
		fmt.Printf("warning: leftovers of dead checks remain: %v\n", err)
	}
	checks, err := verify.SelfTest(ctx, mount, verify.DynamicOptions{})
	if err != nil {
		return fail(fmt.Errorf("self-test: %w", err))
	}
	ok := true
	for _, c := range checks {
		fmt.Printf("detector %-9s caught the canary: %v\n", c.Detector, c.Caught)
		ok = ok && c.Caught
	}
	if !ok {
		return fail(errors.New("a detector failed its self-test: verifications on this host would not be trusted"))
	}
	fmt.Println("this host can verify binaries dynamically")
	return nil
}

// Doctor is the doctor targets: this machine's diagnosis, exiting with the
// doctor's status (0 ok, 1 at risk, 2 leaking, 3 could not tell).
func Doctor(asJSON bool) error {
	var args []string
	if asJSON {
		args = append(args, "--json")
	}
	if code := doctor.Main(args, os.Stdout, stderr); code != doctor.ExitOK {
		return mg.Fatal(code, fmt.Sprintf("nokmem doctor: exit status %d (docs/doctor.md)", code))
	}
	return nil
}

// VerifyLeak is verify:leak: the VM's leak reproducer (docs/vm.md).
func VerifyLeak(ctx context.Context, artifact, defaultBuild string, n int) error {
	env, err := settings.Read(os.Getenv)
	if err != nil {
		return fail(err)
	}
	boot, err := env.VM(root()).Leak(ctx, []vm.Binary{{Name: "artifact", Path: artifact}, {Name: "default-build", Path: defaultBuild}}, n)
	if err != nil {
		return fail(err)
	}
	fmt.Printf("%d lifecycles each, kernel %s (%s, %s); memory cgroups the kernel counts / that exist:\n", n, boot.Result.Caps.Kernel, boot.Kernel.Path, boot.Accel)
	for _, ir := range boot.Result.Items {
		l := ir.Leak
		fmt.Printf("  %-14s before %d/%d  after %d/%d  after drop_caches %d/%d  held after removal: %d  (%d lifecycles failed)\n", ir.Name,
			l.Before.Kernel, l.Before.Dirs, l.After.Kernel, l.After.Dirs, l.AfterDropCaches.Kernel, l.AfterDropCaches.Dirs, l.Leaked(), l.Failed)
		if l.FirstError != "" {
			fmt.Printf("    first failure: %s\n", l.FirstError)
		}
	}
	art, def := boot.Result.Items[0].Leak, boot.Result.Items[1].Leak
	switch {
	case art.Failed > 0 || def.Failed > 0:
		return fail(errors.New("verify:leak: lifecycles failed, so the figures do not show what the binaries do"))
	case art.Leaked() > 0:
		return fail(fmt.Errorf("verify:leak: the kernel holds %d memory cgroups that %s left behind: it leaks with this runc", art.Leaked(), artifact))
	case def.Leaked() > 0:
		fmt.Printf("the default build leaks on this kernel (%d of %d memory cgroups held) and %s does not\n", def.Leaked(), n, artifact)
	default:
		fmt.Println("neither build leaks on this kernel: it frees memory cgroups whatever runc writes (Linux 5.9 and later charge slab memory per object; 6.1 ignores kmem.limit_in_bytes), so it cannot show the leak; boot an EL7 kernel (NOKMEM_VM_KERNEL) to see it")
	}
	return nil
}

// PrintSettings is the settings target.
func PrintSettings() { fmt.Print(settings.Table(os.Getenv)) }

// Clean removes what nokmem made in NOKMEM_DIST, and nothing else
// (dist.Clean).
func Clean() error {
	_, cfg, err := config()
	if err != nil {
		return fail(err)
	}
	removed, err := dist.Clean(cfg.DistDir)
	for _, p := range removed {
		fmt.Println("removed", p)
	}
	return fail(err)
}
