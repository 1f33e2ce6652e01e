package pipeline

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nokmem/nokmem/internal/build"
	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/fixture"
	"github.com/nokmem/nokmem/internal/kube"
	"github.com/nokmem/nokmem/internal/pinning"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/internal/testenv"
	"github.com/nokmem/nokmem/verify"
)

var sharedKube *fixture.KubeRepo

func hostGo(t *testing.T) string {
	out, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(strings.TrimSpace(string(out)), "go")
}

func kubeConfig(t *testing.T) (*Config, *fixture.KubeRepo) {
	t.Helper()
	if sharedKube == nil {
		sharedKube = fixture.NewKubeRepo(t, hostGo(t))
		// The shared repository must outlive this test.
		dir := filepath.Join(sharedDir, "kubernetes")
		if _, err := os.Stat(dir); err != nil {
			fixture.Git(t, sharedDir, "clone", "-q", "--mirror", sharedKube.Dir, dir)
		}
		sharedKube.Dir = dir
	}
	c := newConfig(t, repo(t))
	sharedKube.KubeOverlay(t, c.MatrixOverlay)
	c.KubeRepoURL = sharedKube.Dir
	return c, sharedKube
}

func TestBuildKubeletFixtureEras(t *testing.T) {
	c, k := kubeConfig(t)
	for _, tc := range []struct {
		version, strategy, suffix string
	}{
		{"v1.13.12", "patch", ""},
		{"v1.18.20", "tag", "+nokmem.1"},
	} {
		t.Run(tc.version, func(t *testing.T) {
			c.KubeVersionSuffix = tc.suffix
			res, err := BuildKubelet(context.Background(), c, tc.version)
			if err != nil {
				t.Fatal(err)
			}
			if got := dirNames(t, res.Dir); got != "SHA256SUMS kmem-probe kubelet provenance.intoto.json provenance.json verify.json" {
				t.Fatalf("dist files: %s", got)
			}
			out, err := exec.Command(res.Binary, "--version").Output()
			if err != nil || string(out) != "Kubernetes "+tc.version+tc.suffix+"\n" {
				t.Fatalf("--version %q %v", out, err)
			}
			var prov dist.Provenance
			dist.ReadJSON(res.Dir, dist.ProvenanceFile, &prov)
			// The vendored runc's NOTICE, which the packages carry.
			if prov.Strategy != tc.strategy || prov.Source.Commit != k.Commits[tc.version] || prov.Source.Pinned != "pinned" || !prov.Verified.Passed ||
				prov.Source.Notice != fixture.FixtureNotice {
				t.Errorf("provenance %+v", prov)
			}
			vr, _ := prov.Checks["vendoredRunc"].(map[string]any)
			if vr["runcRevision"] != fixture.KubeEraOf(tc.version).RuncRev {
				t.Errorf("vendored runc %v", vr["runcRevision"])
			}
			// -tags=nokmem last: 1.18's golang.sh reads up to the next "-".
			if want := map[string]string{"patch": "-trimpath", "tag": "-trimpath -tags=nokmem"}[tc.strategy]; prov.Build.Env["GOFLAGS"] != want {
				t.Errorf("GOFLAGS %q, want %q", prov.Build.Env["GOFLAGS"], want)
			}
			// The tree names this machine's Go, so the era Go is the host's
			// and the generators leave the tree clean.
			var checks struct {
				Tree    TreeAfterMake  `json:"treeAfterMake"`
				Version KubeletVersion `json:"kubeletVersion"`
			}
			readChecks(t, res.Dir, &checks)
			if !checks.Tree.Clean || checks.Version.GitCommit != k.Commits[tc.version] || checks.Version.GitTreeState != "clean" || checks.Version.From != "--version=raw" {
				t.Errorf("checks %+v", checks)
			}
			if tc.strategy == "patch" && (prov.Source.TreeCommit == prov.Source.Commit || rawVersion(t, res.Binary, "GitCommit") != prov.Source.Commit) {
				t.Errorf("the kubelet must carry the upstream commit %s, not the patch commit %s", prov.Source.Commit, prov.Source.TreeCommit)
			}
			if verify.HostProblem() == "" && prov.Verified.Dynamic != verify.DynPass {
				t.Errorf("dynamic %s", prov.Verified.Dynamic)
			}
			// Pinned and unchanged: the second build is a cache hit.
			again, err := BuildKubelet(context.Background(), c, tc.version)
			if err != nil || !again.CacheHit || again.SHA256 != res.SHA256 {
				t.Errorf("second build: hit=%v err=%v", again != nil && again.CacheHit, err)
			}
		})
	}
}

// The untreated builds are the negative controls: kubelet's own make with
// the tag forgotten (or BUILDTAGS, which Kubernetes ignores), and an
// unpatched pre-nokmem tree.
func TestUntreatedKubeletFailsVerification(t *testing.T) {
	c, k := kubeConfig(t)
	for _, tc := range []struct{ version, goflags string }{
		{"v1.18.20", ""},
		{"v1.13.12", "-tags=nokmem"},
	} {
		t.Run(tc.version, func(t *testing.T) {
			gopath := t.TempDir()
			tree := filepath.Join(gopath, "src", "k8s.io", "kubernetes")
			fixture.Git(t, "/", "clone", "-q", "--branch", tc.version, k.Dir, tree)
			cmd := exec.Command("make", "all", "WHAT=cmd/kubelet", "BUILDTAGS=nokmem", "GOFLAGS="+tc.goflags)
			cmd.Dir = tree
			cmd.Env = append(os.Environ(), "GOPATH="+gopath, "GOTOOLCHAIN=local")
			if fixture.KubeEraOf(tc.version).Layout == "godeps" {
				cmd.Env = append(cmd.Env, "GO111MODULE=off")
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			id, err := kube.Identify(tree, mustPatches(t, c))
			if err != nil {
				t.Fatal(err)
			}
			probe := filepath.Join(t.TempDir(), "probe")
			req := kubeletReq(tree, gopath, tc.goflags != "" && id.Strategy == "tag")
			if err := builder().BuildProbe(context.Background(), req, id.APIStyle, probe); err != nil {
				t.Fatal(err)
			}
			rep, err := verify.Verify(context.Background(), filepath.Join(tree, "_output/local/bin/linux/amd64/kubelet"),
				verify.Options{Project: "kubelet", Probe: probe, AllowStaticOnly: c.AllowStaticOnly})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Passed || rep.Verdict != verify.KmemEnabled {
				t.Fatalf("untreated kubelet passed:\n%s", rep.Summary())
			}
		})
	}
}

func TestKubeletBadInput(t *testing.T) {
	_, k := kubeConfig(t)
	ctx := context.Background()
	// A kubelet whose vendored memory.go no patch covers.
	odd := filepath.Join(t.TempDir(), "odd")
	fixture.Git(t, "/", "clone", "-q", k.Dir, odd)
	fixture.Git(t, odd, "checkout", "-q", "v1.13.12")
	mem := filepath.Join(odd, kube.FSDir, "memory.go")
	b, _ := os.ReadFile(mem)
	os.WriteFile(mem, append(b, []byte("// locally modified\n")...), 0o644)
	fixture.Git(t, odd, "commit", "-qam", "modified vendor")
	fixture.Git(t, odd, "tag", "-f", "-a", "-m", "odd", "v1.13.12")
	oddCommit := fixture.Git(t, odd, "rev-parse", "HEAD")

	cases := []struct {
		name, version, want string
		setup               func(c *Config)
	}{
		{"no kmem code", "v1.21.14", "nothing to do: kubelet v1.21.14 does not enable kernel-memory accounting (this kubelet does not enable kmem", nil},
		{"unknown version", "v1.8.0", "kubelet v1.8.0 is not in the matrix", nil},
		{"pre-release suffix", "v1.13.12", "must be semver build metadata", func(c *Config) { c.KubeVersionSuffix = "-nokmem" }},
		{"unpinned under CI", "v1.10.13", "CI=true builds only pinned releases", func(c *Config) { c.CI = true }},
		{"vendored content no patch covers", "v1.13.12", "which no nokmem patch covers", func(c *Config) {
			c.KubeRepoURL = odd
			y, _ := os.ReadFile(filepath.Join(c.MatrixOverlay, "kubelet.yaml"))
			os.WriteFile(filepath.Join(c.MatrixOverlay, "kubelet.yaml"), []byte(strings.Replace(string(y), k.Commits["v1.13.12"], oddCommit, 1)), 0o644)
		}},
		{"go mismatch", "v1.13.12", "not safe on a much newer Go", func(c *Config) {
			c.GoToolchain = build.SourceHost
			c.Runner = goVersionRunner{Runner: run.Local{}, version: "go1.11.13"}
		}},
		{"missing toolchain", "v1.13.12", "no usable Go toolchain", func(c *Config) { c.GoBin = "/nonexistent/go" }},
		{"expectation contradicts content", "v1.18.20", "the matrix expects strategy", func(c *Config) {
			y, _ := os.ReadFile(filepath.Join(c.MatrixOverlay, "kubelet.yaml"))
			s := strings.Replace(string(y), "- version: v1.18.20\n", "- version: v1.18.20\n  strategy: patch\n", 1)
			os.WriteFile(filepath.Join(c.MatrixOverlay, "kubelet.yaml"), []byte(s), 0o644)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c2, _ := kubeConfig(t)
			if tc.setup != nil {
				tc.setup(c2)
			}
			before := tree(t, c2.DistDir)
			_, err := BuildKubelet(ctx, c2, tc.version)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want %q, got %v", tc.want, err)
			}
			if after := tree(t, c2.DistDir); after != before {
				t.Errorf("dist changed")
			}
		})
	}
}

// goVersionRunner pretends the host Go is another version.
type goVersionRunner struct {
	run.Runner
	version string
}

func (g goVersionRunner) Run(ctx context.Context, c run.Cmd) ([]byte, error) {
	if len(c.Args) == 2 && c.Args[1] == "version" {
		return []byte("go version " + g.version + " linux/amd64\n"), nil
	}
	return g.Runner.Run(ctx, c)
}

// readChecks decodes the checks of an artifact's provenance into v.
func readChecks(t *testing.T, dir string, v any) {
	t.Helper()
	var raw struct {
		Checks json.RawMessage `json:"checks"`
	}
	if err := dist.ReadJSON(dir, dist.ProvenanceFile, &raw); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw.Checks, v); err != nil {
		t.Fatal(err)
	}
}

// rawVersion runs `kubelet --version=raw` and returns one field of it.
func rawVersion(t *testing.T, kubelet, field string) string {
	t.Helper()
	out, err := exec.Command(kubelet, "--version=raw").Output()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(field + `:"([^"]*)"`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no %s in %s", field, out)
	}
	return string(m[1])
}

var sharedOldGoKube *fixture.KubeRepo

// oldGoKubeConfig points at a Kubernetes fixture whose v1.13.12 names its
// real Go (1.11.13) and carries generated files as Go 1.11 formats them.
func oldGoKubeConfig(t *testing.T) (*Config, *fixture.KubeRepo) {
	t.Helper()
	if sharedOldGoKube == nil {
		sharedOldGoKube = fixture.NewKubeRepo(t, hostGo(t), fixture.ReleaseGo("v1.13.12"))
		dir := filepath.Join(sharedDir, "kubernetes-release-go")
		fixture.Git(t, sharedDir, "clone", "-q", "--mirror", sharedOldGoKube.Dir, dir)
		sharedOldGoKube.Dir = dir
	}
	c := newConfig(t, repo(t))
	sharedOldGoKube.KubeOverlay(t, c.MatrixOverlay)
	c.KubeRepoURL = sharedOldGoKube.Dir
	return c, sharedOldGoKube
}

// With a Go newer than the release's, the generators `make all` runs
// rewrite tracked files; the version stays exact, the linker variables say
// clean and the upstream commit, and the provenance lists what changed.
func TestKubeletHostGoDirtiesTheTreeAndTheVersionStaysExact(t *testing.T) {
	c, k := oldGoKubeConfig(t)
	c.GoToolchain, c.AcceptGoMismatch = build.SourceHost, true
	var log strings.Builder
	c.Log = &log
	res, err := BuildKubelet(context.Background(), c, "v1.13.12")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(res.Binary, "--version").Output(); err != nil || string(out) != "Kubernetes v1.13.12\n" {
		t.Fatalf("--version %q %v", out, err)
	}
	if got := rawVersion(t, res.Binary, "GitCommit"); got != k.Commits["v1.13.12"] {
		t.Errorf("GitCommit %s, want the upstream commit %s", got, k.Commits["v1.13.12"])
	}
	if got := rawVersion(t, res.Binary, "GitTreeState"); got != "clean" {
		t.Errorf("GitTreeState %q", got)
	}
	var checks struct {
		Tree TreeAfterMake `json:"treeAfterMake"`
	}
	readChecks(t, res.Dir, &checks)
	if checks.Tree.Clean || strings.Join(checks.Tree.Changed, "\n") != " M "+fixture.GeneratedFile || checks.Tree.Go != "go"+hostGo(t) {
		t.Errorf("tree after make: %+v", checks.Tree)
	}
	for _, w := range []string{"make changed 1 paths of the work tree", "building with go" + hostGo(t) + ", not the release's go1.11.13"} {
		if !strings.Contains(log.String(), w) {
			t.Errorf("the log does not say %q:\n%s", w, log.String())
		}
	}
}

// A caller's KUBE_GIT_VERSION_FILE (which replaces every other version
// variable in version.sh), KUBE_GIT_*, GOLDFLAGS, KUBE_BUILD_PLATFORMS,
// KUBE_OUTPUT_SUBPATH, MAKEFLAGS and a `go env -w` file (GOENV) do not
// reach make: same bytes.
func TestKubeletIgnoresTheCallersEnvironment(t *testing.T) {
	c, k := kubeConfig(t)
	res, err := BuildKubelet(context.Background(), c, "v1.13.12")
	if err != nil {
		t.Fatal(err)
	}
	versionFile := filepath.Join(t.TempDir(), "version-defs")
	os.WriteFile(versionFile, []byte("KUBE_GIT_COMMIT='deadbeef'\nKUBE_GIT_TREE_STATE='dirty'\nKUBE_GIT_VERSION='v9.9.9'\nKUBE_GIT_MAJOR='9'\nKUBE_GIT_MINOR='9'\n"), 0o644)
	// A `go env -w` file: golang.sh's `GOFLAGS='' go version` would read it.
	goEnv := filepath.Join(t.TempDir(), "go-env")
	os.WriteFile(goEnv, []byte("GOFLAGS=-tags=leak -ldflags=-X=main.leak=1\n"), 0o644)
	for k, v := range map[string]string{"KUBE_GIT_VERSION_FILE": versionFile, "KUBE_GIT_VERSION": "v9.9.9", "KUBE_GIT_COMMIT": "deadbeef",
		"KUBE_GIT_TREE_STATE": "dirty", "GOLDFLAGS": "-X main.leak=1", "GOGCFLAGS": "-N -l", "KUBE_BUILD_PLATFORMS": "linux/arm64",
		"KUBE_OUTPUT_SUBPATH": "_output/elsewhere", "MAKEFLAGS": "KUBE_GIT_VERSION=v9.9.9", "GOFLAGS": "-tags=leak", "GOENV": goEnv} {
		t.Setenv(k, v)
	}
	c2, _ := kubeConfig(t)
	c2.CacheDir = c.CacheDir
	again, err := BuildKubelet(context.Background(), c2, "v1.13.12")
	if err != nil {
		t.Fatal(err)
	}
	if again.SHA256 != res.SHA256 {
		t.Fatalf("the caller's environment changed the kubelet: %s vs %s", again.SHA256, res.SHA256)
	}
	if out, _ := exec.Command(again.Binary, "--version").Output(); string(out) != "Kubernetes v1.13.12\n" || rawVersion(t, again.Binary, "GitCommit") != k.Commits["v1.13.12"] {
		t.Fatalf("--version %q", out)
	}
}

// The release's own Go (1.11.13, from the module proxy) leaves the tree
// clean, and two builds from different NOKMEM_CACHE and NOKMEM_DIST are
// bit-identical: nothing in the kubelet names where it was built. One real
// toolchain download (about 100 MB, a few seconds); skipped where the
// module proxy cannot be reached, except under CI=true.
func TestKubeletReleaseGoIsCleanAndReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads go1.11.13")
	}
	if _, err := build.ResolveToolchain(context.Background(), run.Local{}, build.ToolchainRequest{Mode: build.ModeHost, Toolchain: "go1.11.13"}); err != nil {
		if testenv.InCI() {
			t.Fatalf("CI=true but go1.11.13 cannot be obtained: %v", err)
		}
		t.Skipf("go1.11.13 cannot be obtained here: %v", err)
	}
	var results []*Result
	var firstDist string
	for i := range 2 {
		c, k := oldGoKubeConfig(t) // fresh NOKMEM_CACHE and NOKMEM_DIST each time
		res, err := BuildKubelet(context.Background(), c, "v1.13.12")
		if err != nil {
			t.Fatal(err)
		}
		results = append(results, res)
		var prov dist.Provenance
		dist.ReadJSON(res.Dir, dist.ProvenanceFile, &prov)
		var checks struct {
			Tree    TreeAfterMake  `json:"treeAfterMake"`
			Paths   EmbeddedPaths  `json:"embeddedPaths"`
			Version KubeletVersion `json:"kubeletVersion"`
		}
		readChecks(t, res.Dir, &checks)
		if prov.Build.GoUsed != "go1.11.13" || prov.Build.GoSource != build.SourceEra || !checks.Tree.Clean || checks.Paths.Total != 0 ||
			checks.Version.GitCommit != k.Commits["v1.13.12"] || checks.Version.GitTreeState != "clean" || checks.Version.Printed != "Kubernetes v1.13.12" {
			t.Fatalf("build %d: Go %s (%s), checks %+v", i, prov.Build.GoUsed, prov.Build.GoSource, checks)
		}
		if i == 0 {
			firstDist = c.DistDir
		} else if c.DistDir == firstDist {
			t.Fatal("the second build did not use its own dist")
		}
	}
	if results[0].SHA256 != results[1].SHA256 {
		t.Fatalf("builds from two caches differ: %s %s", results[0].SHA256, results[1].SHA256)
	}
	for _, f := range []string{"kubelet", ProbeFile} {
		a, _ := dist.FileSHA256(filepath.Join(results[0].Dir, f))
		b, _ := dist.FileSHA256(filepath.Join(results[1].Dir, f))
		if a != b {
			t.Errorf("%s differs between the two caches", f)
		}
	}
}

// golangImageRunner is run.Local with docker answering the image check as a
// golang:<version> image does: no rsync.
type golangImageRunner struct{ run.Runner }

func (g golangImageRunner) Run(ctx context.Context, c run.Cmd) ([]byte, error) {
	if c.Args[0] == "docker" {
		return []byte("missing rsync\nbash 5\ngo version go1.11.13 linux/amd64\n"), nil
	}
	return g.Runner.Run(ctx, c)
}

// What Kubernetes' own build needs is checked before anything is fetched,
// with one message that says how to get it.
func TestKubeletPrerequisitesAreCheckedBeforeFetching(t *testing.T) {
	// A PATH with make, bash and git but no rsync.
	bin := t.TempDir()
	for _, tool := range []string{"make", "bash", "git"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Skipf("%s is not installed", tool)
		}
		os.Symlink(p, filepath.Join(bin, tool))
	}
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, c *Config)
		want  []string
	}{
		{"no rsync", func(t *testing.T, c *Config) { t.Setenv("PATH", bin) },
			[]string{"needs programs this machine lacks: rsync (hack/lib/golang.sh's place_bins copies the built binaries with rsync)", "apt-get install make bash rsync git", "Nothing was fetched"}},
		{"container mode without an image", func(t *testing.T, c *Config) { c.Mode = build.ModeContainer },
			[]string{"golang:<version> images lack rsync", "NOKMEM_BUILD_IMAGE", "kube-cross", "Nothing was fetched"}},
		{"container mode with a golang image", func(t *testing.T, c *Config) {
			c.Mode, c.BuildImage, c.Runner = build.ModeContainer, "golang:1.11.13", golangImageRunner{run.Local{}}
		}, []string{"the build image golang:1.11.13 lacks what Kubernetes' make needs: rsync", "Nothing was fetched"}},
		{"a cache path the scripts cannot take", func(t *testing.T, c *Config) { c.CacheDir = filepath.Join(t.TempDir(), "my cache") },
			[]string{"NOKMEM_CACHE=", "contains ' '", "Nothing was fetched"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := kubeConfig(t)
			tc.setup(t, c)
			_, err := BuildKubelet(context.Background(), c, "v1.13.12")
			if err == nil || !IsUserError(err) {
				t.Fatalf("want a refusal, got %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message lacks %q:\n%v", w, err)
				}
			}
			if _, err := os.Stat(filepath.Join(c.CacheDir, "git")); !os.IsNotExist(err) {
				t.Errorf("something was fetched into %s", c.CacheDir)
			}
			if _, err := os.Stat(c.DistDir); !os.IsNotExist(err) {
				t.Errorf("dist was created")
			}
		})
	}
}

// Kubernetes 1.9's golang.sh compares `go version` with go1.9.1 as a
// string, so it refuses every Go from 1.10 on; nokmem says so before make.
func TestKubeletStringComparedGoIsRefusedBeforeMake(t *testing.T) {
	c, _ := kubeConfig(t) // v1.9.11 names this machine's Go, go1.2x
	_, err := BuildKubelet(context.Background(), c, "v1.9.11")
	if err == nil || !strings.Contains(err.Error(), "compares Go versions as strings: \"go"+hostGo(t)+"\" sorts before its minimum \"go1.9.1\"") {
		t.Fatalf("want the string comparison named, got %v", err)
	}
	tree := filepath.Join(c.CacheDir, "work", "kubelet", "v1.9.11", "gopath", "src", KubeImportPath)
	if _, err := os.Stat(filepath.Join(tree, "_output")); !os.IsNotExist(err) {
		t.Error("make ran")
	}
}

// An unpinned release builds locally with a loud warning that prints the
// commit its tag resolved to; CI=true refuses it before fetching, and
// release and publish:mirror refuse the artifact.
func TestUnpinnedKubelet(t *testing.T) {
	c, k := kubeConfig(t)
	os.WriteFile(filepath.Join(c.MatrixOverlay, "kubelet.yaml"), []byte("apiVersion: nokmem/v1\nkind: KubeletMatrix\nreleases:\n- version: v1.13.12\n  commit: \"\"\n"), 0o644)
	var log strings.Builder
	c.Log = &log
	res, err := BuildKubelet(context.Background(), c, "v1.13.12")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"WARNING: kubelet v1.13.12 is UNPINNED", "resolved to commit " + k.Commits["v1.13.12"], "go tool mage matrix:pin kubelet v1.13.12"} {
		if !strings.Contains(log.String(), w) {
			t.Errorf("the log lacks %q:\n%s", w, log.String())
		}
	}
	var prov dist.Provenance
	dist.ReadJSON(res.Dir, dist.ProvenanceFile, &prov)
	if prov.Source.Pinned != "unpinned" || prov.Source.Commit != k.Commits["v1.13.12"] {
		t.Errorf("source %+v", prov.Source)
	}
	if _, err := pinning.CheckPublishable(c.DistDir, "release", false); err == nil || !strings.Contains(err.Error(), "release refuses artifacts built from unpinned") {
		t.Errorf("release would publish it: %v", err)
	}

	ci, _ := kubeConfig(t)
	os.WriteFile(filepath.Join(ci.MatrixOverlay, "kubelet.yaml"), []byte("apiVersion: nokmem/v1\nkind: KubeletMatrix\nreleases:\n- version: v1.13.12\n  commit: \"\"\n"), 0o644)
	ci.CI = true
	if _, err := BuildKubelet(context.Background(), ci, "v1.13.12"); err == nil || !strings.Contains(err.Error(), "CI=true builds only pinned releases") {
		t.Fatalf("CI built an unpinned release: %v", err)
	}
	if _, err := os.Stat(filepath.Join(ci.CacheDir, "git")); !os.IsNotExist(err) {
		t.Error("CI fetched the unpinned release")
	}
	ci.AllowUnpinned = true
	if _, err := BuildKubelet(context.Background(), ci, "v1.13.12"); err != nil {
		t.Fatalf("NOKMEM_ALLOW_UNPINNED=1 under CI: %v", err)
	}
}
