package pipeline

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/nokmem/nokmem/internal/build"
	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/fixture"
	"github.com/nokmem/nokmem/internal/patch"
	"github.com/nokmem/nokmem/internal/progress"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/internal/source"
	"github.com/nokmem/nokmem/internal/testenv"
	"github.com/nokmem/nokmem/verify"
)

var (
	shared    *fixture.Repo
	sharedDir string
)

func TestMain(m *testing.M) {
	sharedDir, _ = os.MkdirTemp("", "nokmem-pipeline-test-")
	code := m.Run()
	os.RemoveAll(sharedDir)
	os.Exit(code)
}

func repo(t *testing.T) *fixture.Repo {
	if shared == nil {
		shared = fixture.NewRuncRepoIn(t, sharedDir)
	}
	return shared
}

// newConfig points the pipeline at the fixture through the overlay and
// source settings, exactly as a user would point it at a fork.
func newConfig(t *testing.T, r *fixture.Repo) *Config {
	t.Helper()
	mo, po := r.Overlay(t)
	c := &Config{
		RepoURL: r.Dir, CacheDir: filepath.Join(t.TempDir(), "cache"), DistDir: filepath.Join(t.TempDir(), "dist"),
		MatrixDir: "../../matrix", PatchesDir: "../../patches", MatrixOverlay: mo, PatchesOverlay: po,
		Mode: build.ModeHost, Runner: run.Local{}, Verifier: DefaultVerifier{},
	}
	if verify.HostProblem() != "" {
		if testenv.InCI() {
			t.Fatalf("CI=true but the dynamic verifier cannot run: %s", verify.HostProblem())
		}
		t.Logf("dynamic verification unavailable (%s): accepting static evidence", verify.HostProblem())
		c.AllowStaticOnly = true
	}
	return c
}

// tree lists every path under dir with its sha256, to prove "untouched".
func tree(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		line := rel
		if d.Type().IsRegular() {
			sum, _ := dist.FileSHA256(p)
			line += " " + sum
		}
		lines = append(lines, line)
		return nil
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func TestBuildRuncFixtureEras(t *testing.T) {
	r := repo(t)
	c := newConfig(t, r)
	ctx := context.Background()
	// libseccomp is linked in statically; static_build (rc5 … rc9's make
	// static) compiles the systemd driver out, as in upstream's releases.
	out, err := exec.Command("pkg-config", "--modversion", "libseccomp").Output()
	if err != nil {
		t.Fatalf("pkg-config libseccomp: %v", err)
	}
	seccomp := "seccomp(libseccomp " + strings.TrimSpace(string(out)) + ")"
	for _, tc := range []struct {
		version, features string
		patches           int
	}{
		{"v1.0.0-rc5", seccomp, 1},
		{"v1.0.0-rc9", seccomp, 0},
		{"v1.0.0-rc92", "apparmor," + seccomp + ",selinux,systemd", 0},
	} {
		t.Run(tc.version, func(t *testing.T) {
			res, err := BuildRunc(ctx, c, tc.version)
			if err != nil {
				t.Fatal(err)
			}
			if got := dirNames(t, res.Dir); got != "SHA256SUMS provenance.intoto.json provenance.json runc verify.json" {
				t.Fatalf("dist files: %s", got)
			}
			if _, err := dist.CheckSums(res.Dir); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(res.Binary, "--version").CombinedOutput()
			if err != nil {
				t.Fatal(err)
			}
			want := "runc version " + strings.TrimPrefix(tc.version, "v") + "\ncommit: " + r.Commits[tc.version] + "\nfeatures: " + tc.features + "\n"
			if string(out) != want {
				t.Errorf("--version:\n%s\nwant:\n%s", out, want)
			}
			var prov dist.Provenance
			if err := dist.ReadJSON(res.Dir, dist.ProvenanceFile, &prov); err != nil {
				t.Fatal(err)
			}
			if prov.Source.Commit != r.Commits[tc.version] || len(prov.Patches) != tc.patches || !prov.Verified.Passed ||
				prov.Output.SHA256 != res.SHA256 || prov.Source.Pinned != "pinned" || prov.Build.GoUsed == "" ||
				prov.Source.Notice != fixture.FixtureNotice {
				t.Errorf("provenance: %+v", prov)
			}
			var rep verify.Report
			if err := dist.ReadJSON(res.Dir, dist.ReportFile, &rep); err != nil || !rep.Passed || rep.Verdict != verify.NoKmem {
				t.Errorf("report: %+v %v", rep, err)
			}
		})
	}
	// Nothing but the artifacts is left in dist/.
	entries, _ := os.ReadDir(c.DistDir)
	if len(entries) != 1 || entries[0].Name() != "runc" {
		t.Errorf("dist root holds %v", entries)
	}
}

func TestBuildIsReproducibleAndCached(t *testing.T) {
	r := repo(t)
	c := newConfig(t, r)
	ctx := context.Background()
	var log bytes.Buffer
	c.Progress = progress.New(&log, progress.Options{})
	first, err := BuildRunc(ctx, c, "v1.0.0-rc9")
	if err != nil {
		t.Fatal(err)
	}
	// A line per step, in order, each closed with its elapsed time.
	var steps []string
	for _, m := range regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d (\S+(?: check)?) +done in \d+(\.\d)?s$`).FindAllStringSubmatch(log.String(), -1) {
		steps = append(steps, m[1])
	}
	if got := strings.Join(steps, ","); got != "fetch,treat,source check,build,verify,publish" {
		t.Errorf("steps %q in the log:\n%s", got, log.String())
	}
	log.Reset()
	hit, err := BuildRunc(ctx, c, "v1.0.0-rc9")
	if err != nil || !hit.CacheHit || hit.SHA256 != first.SHA256 {
		t.Fatalf("second build: hit=%v err=%v", hit != nil && hit.CacheHit, err)
	}
	// The target prints the one message of a cache hit; the pipeline adds
	// nothing to it.
	if log.Len() != 0 {
		t.Errorf("a cache hit logged %q", log.String())
	}
	// A tampered artifact is neither a cache hit nor silently rebuilt: it
	// is reported and kept until the user removes it (attest_test.go).
	if err := os.WriteFile(first.Binary, []byte("tampered"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := BuildRunc(ctx, c, "v1.0.0-rc9"); !errors.As(err, new(*RefusedError)) || !strings.Contains(err.Error(), "was modified after it was verified") {
		t.Fatalf("tampered artifact: %v", err)
	}
	os.RemoveAll(first.Dir)
	again, err := BuildRunc(ctx, c, "v1.0.0-rc9")
	if err != nil || again.CacheHit {
		t.Fatalf("rebuild: hit=%v err=%v", again != nil && again.CacheHit, err)
	}
	if again.SHA256 != first.SHA256 {
		t.Fatalf("not reproducible: %s then %s", first.SHA256, again.SHA256)
	}
	// From a cold cache and an empty dist/, the same bytes.
	c2 := newConfig(t, r)
	cold, err := BuildRunc(ctx, c2, "v1.0.0-rc9")
	if err != nil || cold.SHA256 != first.SHA256 {
		t.Fatalf("cold rebuild: %v, sha %s vs %s", err, cold.SHA256, first.SHA256)
	}
}

// cancelOnBuild cancels the context when go build starts: an interrupt.
type cancelOnBuild struct {
	run.Runner
	cancel context.CancelFunc
}

func (c cancelOnBuild) Run(ctx context.Context, cmd run.Cmd) ([]byte, error) {
	if len(cmd.Args) > 1 && cmd.Args[1] == "build" {
		c.cancel()
	}
	return c.Runner.Run(ctx, cmd)
}

type failingVerifier struct{}

func (failingVerifier) Verify(ctx context.Context, bin string, opt verify.Options) (*verify.Report, error) {
	return &verify.Report{Verdict: verify.KmemEnabled, Passed: false, Static: &verify.StaticResult{},
		Dynamic: &verify.DynamicResult{Status: verify.DynFail, Reason: "fake"}}, nil
}

func TestBadInputLeavesDistUntouched(t *testing.T) {
	r := repo(t)
	ctx := context.Background()

	// A fork whose v1.0.0-rc9 tag moved, and one whose rc9 does not compile.
	moved := filepath.Join(t.TempDir(), "moved")
	fixture.Git(t, filepath.Dir(moved), "clone", "-q", r.Dir, moved)
	os.WriteFile(filepath.Join(moved, "NEWS"), []byte("x"), 0o644)
	fixture.Git(t, moved, "add", "-A")
	fixture.Git(t, moved, "commit", "-q", "-m", "after the release")
	fixture.Git(t, moved, "tag", "-f", "-a", "-m", "moved", "v1.0.0-rc9")
	broken := filepath.Join(t.TempDir(), "broken")
	fixture.Git(t, filepath.Dir(broken), "clone", "-q", r.Dir, broken)
	fixture.Git(t, broken, "checkout", "-q", "v1.0.0-rc9")
	os.WriteFile(filepath.Join(broken, "broken.go"), []byte("package main\n\nfunc broken() { undefined() }\n"), 0o644)
	fixture.Git(t, broken, "add", "-A")
	fixture.Git(t, broken, "commit", "-q", "-m", "broken")
	fixture.Git(t, broken, "tag", "-f", "-a", "-m", "broken", "v1.0.0-rc9")
	brokenCommit := fixture.Git(t, broken, "rev-parse", "HEAD")

	cases := []struct {
		name    string
		version string
		setup   func(c *Config)
		check   func(error) bool
		msg     string
	}{
		{"unknown version", "v9.9.9", nil, isUser, "Supported: v1.0.0-rc2"},
		{"malformed version", "1.0.0-rc9", nil, isUser, "is not a release tag"},
		{"shell metacharacters", "v1.0.0-rc9;touch${IFS}/tmp/pwned", nil, isUser, "is not a release tag"},
		{"release without kmem code", "v1.0.3", nil, as[*NothingToDoError], "nothing to do"},
		{"unreachable source", "v1.0.0-rc9", func(c *Config) { c.RepoURL = filepath.Join(t.TempDir(), "nope") }, as[*source.UnreachableError], "cannot fetch tag v1.0.0-rc9"},
		{"option-like source", "v1.0.0-rc9", func(c *Config) { c.RepoURL = "--upload-pack=touch /tmp/pwned" }, nil, "would be read by git as an option"},
		{"moved tag", "v1.0.0-rc9", func(c *Config) { c.RepoURL = moved }, as[*source.MovedTagError], "supply-chain event"},
		{"patch for other content", "v1.0.0-rc5", func(c *Config) {
			e := fixture.EraOf("v1.0.0-rc5")
			p := fixture.PatchBetween(t, e, fixture.MemoryGo(e, false)+"// other\n", fixture.MemoryGo(e, true)+"// other\n")
			os.WriteFile(filepath.Join(c.PatchesOverlay, "runc", "fixture-memory-go-v1.0.0-rc5.patch"), []byte(p), 0o644)
		}, as[*patch.ContentError], "which no nokmem patch covers"},
		{"patch that does not disable kmem", "v1.0.0-rc5", func(c *Config) {
			e := fixture.EraOf("v1.0.0-rc5")
			p := fixture.PatchBetween(t, e, fixture.MemoryGo(e, false), fixture.MemoryGo(e, false)+"// reviewed\n")
			os.WriteFile(filepath.Join(c.PatchesOverlay, "runc", "fixture-memory-go-v1.0.0-rc5.patch"), []byte(p), 0o644)
		}, nil, "did not take effect"},
		{"build failure", "v1.0.0-rc9", func(c *Config) {
			c.RepoURL = broken
			y, _ := os.ReadFile(filepath.Join(c.MatrixOverlay, "runc.yaml"))
			os.WriteFile(filepath.Join(c.MatrixOverlay, "runc.yaml"), []byte(strings.Replace(string(y), r.Commits["v1.0.0-rc9"], brokenCommit, 1)), 0o644)
		}, nil, "go build failed"},
		{"binary that writes kmem from elsewhere", "v1.0.0-rc8", nil, as[*VerificationError], "verdict kmem-enabled"},
		{"failed verification", "v1.0.0-rc9", func(c *Config) { c.Verifier = failingVerifier{} }, as[*VerificationError], "verification failed"},
		{"interrupted build", "v1.0.0-rc9", nil, func(err error) bool { return errors.Is(err, context.Canceled) }, "context canceled"},
	}
	// dist/ already holds a good artifact, made by another toolkit (so a
	// build may replace it); it must survive every failure as it is.
	prev := newConfig(t, r)
	prev.ToolkitRevision = "a previous toolkit"
	previous, err := BuildRunc(ctx, prev, "v1.0.0-rc9")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newConfig(t, r)
			if _, err := BuildRunc(ctx, c, "v1.0.0-rc6-never"); err == nil {
				t.Fatal("nonsense version accepted")
			}
			os.MkdirAll(filepath.Join(c.DistDir, "runc"), 0o755)
			if out, err := exec.Command("cp", "-a", previous.Dir, filepath.Join(c.DistDir, "runc", "v1.0.0-rc9")).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v %s", err, out)
			}
			before := tree(t, c.DistDir)
			if tc.setup != nil {
				tc.setup(c)
			}
			runCtx := ctx
			if tc.name == "interrupted build" {
				var cancel context.CancelFunc
				runCtx, cancel = context.WithCancel(ctx)
				c.Runner = cancelOnBuild{Runner: run.Local{}, cancel: cancel}
			}
			_, err := BuildRunc(runCtx, c, tc.version)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error does not say %q:\n%v", tc.msg, err)
			}
			if tc.check != nil && !tc.check(err) {
				t.Errorf("error type %T: %v", err, err)
			}
			if after := tree(t, c.DistDir); after != before {
				t.Errorf("dist changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

func isUser(err error) bool { return IsUserError(err) }

func as[T error](err error) bool {
	var target T
	return errors.As(err, &target)
}

func BenchmarkCacheHit(b *testing.B) {
	r := fixture.NewRuncRepo(b)
	mo, po := r.Overlay(b)
	c := &Config{RepoURL: r.Dir, CacheDir: b.TempDir(), DistDir: b.TempDir(), MatrixDir: "../../matrix", PatchesDir: "../../patches",
		MatrixOverlay: mo, PatchesOverlay: po, Mode: build.ModeHost, Runner: run.Local{}, Verifier: DefaultVerifier{}, AllowStaticOnly: true}
	if _, err := BuildRunc(context.Background(), c, "v1.0.0-rc9"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := BuildRunc(context.Background(), c, "v1.0.0-rc9")
		if err != nil || !res.CacheHit {
			b.Fatalf("not a cache hit: %v", err)
		}
	}
}
