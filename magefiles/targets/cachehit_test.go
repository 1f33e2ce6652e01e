package targets

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nokmem/nokmem/internal/fixture"
	"github.com/nokmem/nokmem/verify"
)

// builtFixture is the environment of a fixture runc repository (the
// overlays a user would point at a fork) whose v1.0.0-rc9 is already built
// into a temporary dist/ by a real `go tool mage build:runc`.
func builtFixture(tb testing.TB) []string {
	tb.Helper()
	dir := tb.TempDir()
	r := fixture.NewRuncRepoIn(tb, dir)
	mo, po := r.Overlay(tb)
	env := []string{"NOKMEM_RUNC_REPO=" + r.Dir, "NOKMEM_MATRIX_OVERLAY=" + mo, "NOKMEM_PATCHES_OVERLAY=" + po,
		"NOKMEM_DIST=" + filepath.Join(dir, "dist"), "NOKMEM_CACHE=" + filepath.Join(dir, "cache"),
		"NOKMEM_VERIFY_RUNTIME=host", "MAGEFILE_VERBOSE="}
	if verify.HostProblem() != "" {
		env = append(env, "NOKMEM_ALLOW_STATIC_ONLY=1")
	}
	cmd := exec.Command("go", "tool", "mage", "build:runc", "v1.0.0-rc9")
	cmd.Dir, cmd.Env = "../..", append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("first build: %v\n%s", err, out)
	}
	return env
}

// A cache hit, as a whole `go tool mage` process: one message (on stdout),
// nothing on stderr.
func TestCacheHitPrintsOneMessage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a fixture runc")
	}
	env := builtFixture(t)
	cmd := exec.Command("go", "tool", "mage", "build:runc", "v1.0.0-rc9")
	cmd.Dir, cmd.Env = "../..", append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\n%s%s", err, o.String(), e.String())
	}
	t.Logf("cache hit in %s (whole process)", time.Since(start).Round(time.Millisecond))
	lines := strings.Split(strings.TrimSuffix(o.String(), "\n"), "\n")
	// The wrapper says when it compiles the magefile (others may be editing
	// this checkout); nothing else belongs on stderr.
	stderr := regexp.MustCompile(`(?m)^go tool mage: compiling magefiles/.*\n`).ReplaceAllString(e.String(), "")
	if stderr != "" || len(lines) != 2 || !strings.HasPrefix(lines[0], "runc v1.0.0-rc9 already built (digests re-verified): ") ||
		!strings.HasPrefix(lines[1], "  sha256 ") {
		t.Errorf("cache hit output:\nstdout:\n%s\nstderr:\n%s", o.String(), e.String())
	}
}

// BenchmarkCacheHitWholeProcess is what a user waits for on a cache hit:
// `go tool mage build:runc v1.0.0-rc9` against an artifact already in
// dist/, the go command, the wrapper, the compiled magefile, the re-hashed
// artifact and the tag re-resolved (git ls-remote) included. Target: under
// 0.3 s.
func BenchmarkCacheHitWholeProcess(b *testing.B) {
	env := append(os.Environ(), builtFixture(b)...)
	// The first run after a change compiles the magefile; not measured.
	warm := exec.Command("go", "tool", "mage", "build:runc", "v1.0.0-rc9")
	warm.Dir, warm.Env = "../..", env
	if out, err := warm.CombinedOutput(); err != nil {
		b.Fatalf("%v\n%s", err, out)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cmd := exec.Command("go", "tool", "mage", "build:runc", "v1.0.0-rc9")
		cmd.Dir, cmd.Env = "../..", env
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "already built") {
			b.Fatalf("not a cache hit: %v\n%s", err, out)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/hit")
}
