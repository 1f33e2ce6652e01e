package source

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nokmem/nokmem/internal/fixture"
	"github.com/nokmem/nokmem/internal/lock"
	"github.com/nokmem/nokmem/internal/run"
)

func TestFetchIsShallowAndPinned(t *testing.T) {
	r := fixture.NewRuncRepo(t)
	f := &Fetcher{Runner: run.Local{}, CacheDir: t.TempDir()}
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "work")
	co, err := f.Prepare(ctx, r.Dir, "v1.0.0-rc9", r.Commits["v1.0.0-rc9"], dir)
	if err != nil {
		t.Fatal(err)
	}
	if co.CommitDate.Year() != 2019 {
		t.Errorf("commit date %v", co.CommitDate)
	}
	// Only the one tagged commit was fetched, not the history before it.
	if n := fixture.Git(t, dir, "rev-list", "--count", "HEAD"); n != "1" {
		t.Errorf("work tree holds %s commits", n)
	}
	cache, _, _ := f.Fetch(ctx, r.Dir, "v1.0.0-rc9")
	if out := fixture.Git(t, cache, "rev-list", "--all"); strings.Count(out, "\n") != 0 {
		t.Errorf("cache holds more than the tag:\n%s", out)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "VERSION")); string(b) != "1.0.0-rc9\n" {
		t.Errorf("checkout VERSION %q", b)
	}
	// The patched tree is committed, so it is clean.
	os.WriteFile(filepath.Join(dir, "VERSION"), []byte("patched\n"), 0o644)
	if _, err := f.Commit(ctx, co, "nokmem: test"); err != nil {
		t.Fatal(err)
	}
	if st := fixture.Git(t, dir, "status", "--porcelain"); st != "" {
		t.Errorf("tree not clean: %s", st)
	}
	// A pin that differs is refused as a moved tag.
	_, err = f.Prepare(ctx, r.Dir, "v1.0.0-rc9", r.Commits["v1.0.0-rc5"], dir)
	var moved *MovedTagError
	if !errors.As(err, &moved) || moved.Found != r.Commits["v1.0.0-rc9"] {
		t.Fatalf("want MovedTagError, got %v", err)
	}
	// An unknown tag is an unreachable-source error that names the tag.
	_, _, err = f.Fetch(ctx, r.Dir, "v1.0.0-rc77")
	var un *UnreachableError
	if !errors.As(err, &un) || !strings.Contains(err.Error(), "v1.0.0-rc77") {
		t.Fatalf("want UnreachableError, got %v", err)
	}
	// What to do leads, on the first line; git's evidence follows.
	first, evidence, _ := strings.Cut(err.Error(), "\n")
	if !strings.HasPrefix(first, "cannot fetch tag v1.0.0-rc77 from "+r.Dir+": set the repository setting to an internal mirror or a local clone") ||
		!strings.HasPrefix(evidence, "What git said: command failed") || !strings.Contains(evidence, "git ") {
		t.Errorf("unreachable message:\n%v", err)
	}
}

func TestCheckURL(t *testing.T) {
	for _, bad := range []string{"", "-c", "--upload-pack=x", "a\nb"} {
		if CheckURL(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for _, good := range []string{"https://github.com/opencontainers/runc.git", "/srv/mirror/runc.git", "git@host:runc.git"} {
		if err := CheckURL(good); err != nil {
			t.Errorf("%q: %v", good, err)
		}
	}
}

func TestResolveTagAsksTheRemoteWithoutFetching(t *testing.T) {
	r := fixture.NewRuncRepo(t)
	cacheDir := t.TempDir()
	f := &Fetcher{Runner: run.Local{}, CacheDir: cacheDir, Setting: "NOKMEM_RUNC_REPO"}
	ctx := context.Background()
	pinned := r.Commits["v1.0.0-rc9"]

	// A clone whose tags we move: annotated, lightweight, deleted.
	fork := filepath.Join(t.TempDir(), "fork")
	fixture.Git(t, filepath.Dir(fork), "clone", "-q", r.Dir, fork)
	fixture.Git(t, fork, "tag", "light", pinned)
	for _, c := range []struct{ tag, want string }{{"v1.0.0-rc9", pinned}, {"light", pinned}, {"v9.9.9", ""}} {
		got, err := f.ResolveTag(ctx, fork, c.tag)
		if err != nil || got != c.want {
			t.Errorf("ResolveTag(%s) = %q, %v; want %q", c.tag, got, err, c.want)
		}
	}
	if err := f.CheckTag(ctx, fork, "v1.0.0-rc9", pinned); err != nil {
		t.Errorf("unmoved tag refused: %v", err)
	}
	os.WriteFile(filepath.Join(fork, "NEWS"), []byte("x"), 0o644)
	fixture.Git(t, fork, "add", "-A")
	fixture.Git(t, fork, "commit", "-q", "-m", "after the release")
	moved := fixture.Git(t, fork, "rev-parse", "HEAD")
	fixture.Git(t, fork, "tag", "-f", "-a", "-m", "moved", "v1.0.0-rc9")
	err := f.CheckTag(ctx, fork, "v1.0.0-rc9", pinned)
	var m *MovedTagError
	if !errors.As(err, &m) || m.Found != moved || !strings.Contains(err.Error(), "supply-chain event") {
		t.Errorf("moved annotated tag: %v", err)
	}
	fixture.Git(t, fork, "tag", "-d", "v1.0.0-rc9")
	if err := f.CheckTag(ctx, fork, "v1.0.0-rc9", pinned); !errors.As(err, &m) || !strings.Contains(err.Error(), "no longer exists") {
		t.Errorf("deleted tag: %v", err)
	}
	var un *UnreachableError
	if err := f.CheckTag(ctx, filepath.Join(t.TempDir(), "gone"), "v1.0.0-rc9", pinned); !errors.As(err, &un) ||
		!strings.Contains(err.Error(), "NOKMEM_RUNC_REPO") {
		t.Errorf("unreachable remote: %v", err)
	}
	if err := f.CheckTag(ctx, "--upload-pack=touch /tmp/x", "v1.0.0-rc9", pinned); err == nil || !strings.Contains(err.Error(), "option") {
		t.Errorf("option-like URL: %v", err)
	}
	if entries, _ := os.ReadDir(cacheDir); len(entries) != 0 {
		t.Errorf("ResolveTag wrote to the cache: %v", entries)
	}
}

// Builds of different versions from one NOKMEM_CACHE share one bare
// repository; git's own lock files make a second concurrent fetch fail
// ("shallow file has changed since we read it") instead of waiting. Every
// fetch of a repository waits for nokmem's lock on it.
func TestFetchWaitsForTheRepositoryLock(t *testing.T) {
	r := fixture.NewRuncRepo(t)
	var mu sync.Mutex
	var logged []string
	f := &Fetcher{Runner: run.Local{}, CacheDir: t.TempDir(), Logf: func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		logged = append(logged, fmt.Sprintf(format, a...))
	}}
	ctx := context.Background()
	path := filepath.Join(f.CacheDir, "locks", "git-"+repoName(r.Dir)+".lock")
	release, err := lock.Acquire(ctx, path, "fetch v1.0.0-rc92 from the test", nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := f.Prepare(ctx, r.Dir, "v1.0.0-rc9", r.Commits["v1.0.0-rc9"], filepath.Join(t.TempDir(), "work"))
		done <- err
	}()
	select {
	case err := <-done:
		release()
		t.Fatalf("Prepare did not wait for the repository lock: %v", err)
	case <-time.After(1500 * time.Millisecond):
	}
	mu.Lock()
	said := strings.Join(logged, "\n")
	mu.Unlock()
	if !strings.Contains(said, fmt.Sprintf("waiting for pid %d (fetch v1.0.0-rc92 from the test", os.Getpid())) || !strings.Contains(said, path) {
		t.Errorf("the waiting run does not say whom it waits for:\n%s", said)
	}
	release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Prepare still waits after the lock was released")
	}
}

// Concurrent builds of different tags from one cache all succeed.
func TestConcurrentFetchesOfDifferentTagsShareTheCache(t *testing.T) {
	r := fixture.NewRuncRepo(t)
	tags := []string{"v1.0.0-rc5", "v1.0.0-rc8", "v1.0.0-rc9", "v1.0.0-rc92"}
	for round := 0; round < 3; round++ {
		f := &Fetcher{Runner: run.Local{}, CacheDir: t.TempDir()}
		start := make(chan struct{})
		errs := make(chan error, len(tags))
		for _, tag := range tags {
			go func() {
				<-start
				_, err := f.Prepare(context.Background(), r.Dir, tag, r.Commits[tag], filepath.Join(t.TempDir(), tag))
				errs <- err
			}()
		}
		close(start)
		for range tags {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	}
}

// A git killed in the middle of a fetch leaves its lock files; while
// nokmem holds the repository's lock they are provably stale, and are
// removed (and named) instead of failing every later fetch.
func TestStaleGitLockFilesAreRemoved(t *testing.T) {
	r := fixture.NewRuncRepo(t)
	var logged []string
	f := &Fetcher{Runner: run.Local{}, CacheDir: t.TempDir(), Logf: func(format string, a ...any) { logged = append(logged, fmt.Sprintf(format, a...)) }}
	ctx := context.Background()
	cache, _, err := f.Fetch(ctx, r.Dir, "v1.0.0-rc8")
	if err != nil {
		t.Fatal(err)
	}
	stale := []string{"shallow.lock", "packed-refs.lock", "config.lock", "HEAD.lock", "refs/tags/v1.0.0-rc9.lock"}
	for _, name := range stale {
		p := filepath.Join(cache, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.Prepare(ctx, r.Dir, "v1.0.0-rc9", r.Commits["v1.0.0-rc9"], filepath.Join(t.TempDir(), "work")); err != nil {
		t.Fatalf("a fetch after a killed git: %v", err)
	}
	said := strings.Join(logged, "\n")
	for _, name := range stale {
		p := filepath.Join(cache, filepath.FromSlash(name))
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s survived: %v", name, err)
		}
		if !strings.Contains(said, "removed "+p) {
			t.Errorf("removal of %s not said:\n%s", name, said)
		}
	}
}

// Ctrl-C during a fetch is an interruption, not a bad tag, URL or network.
func TestCancelledFetchSaysInterrupted(t *testing.T) {
	r := fixture.NewRuncRepo(t)
	f := &Fetcher{Runner: run.Local{}, CacheDir: t.TempDir(), Setting: "NOKMEM_RUNC_REPO"}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := f.Prepare(ctx, r.Dir, "v1.0.0-rc9", r.Commits["v1.0.0-rc9"], filepath.Join(t.TempDir(), "work"))
	var un *UnreachableError
	if err == nil || !strings.Contains(err.Error(), "interrupted") || errors.As(err, &un) || !errors.Is(err, context.Canceled) ||
		strings.Contains(err.Error(), "check the tag") {
		t.Fatalf("cancelled fetch: %v", err)
	}
}
