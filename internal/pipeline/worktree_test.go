package pipeline

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nokmem/nokmem/internal/fixture"
	"github.com/nokmem/nokmem/internal/owner"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/internal/source"
	"github.com/nokmem/nokmem/internal/testenv"
)

// hooked runs commands through run.Local and calls onBuild before go build
// and onGit before every git command.
type hooked struct {
	onBuild func()
	onGit   func(args []string)
}

func (h hooked) Run(ctx context.Context, c run.Cmd) ([]byte, error) {
	if len(c.Args) > 1 && c.Args[1] == "build" && h.onBuild != nil {
		h.onBuild()
	}
	if len(c.Args) > 0 && c.Args[0] == "git" && h.onGit != nil {
		h.onGit(c.Args)
	}
	return run.Local{}.Run(ctx, c)
}

// syncBuffer is a log two goroutines write and a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Two builds of different versions into one dist/ and one cache: the second
// starts, cleans up and builds while the first has its staging directory
// open; both publish.
func TestConcurrentBuildsOfTwoVersionsIntoOneDist(t *testing.T) {
	r := repo(t)
	a := newConfig(t, r)
	b := *a
	second := make(chan struct{})
	secondBuilding := make(chan struct{})
	// a stops at go build (its staging directory exists) until b is past
	// its own cleanup and building.
	a.Runner = hooked{onBuild: func() {
		close(second)
		<-secondBuilding
	}}
	var once sync.Once
	b.Runner = hooked{onBuild: func() { once.Do(func() { close(secondBuilding) }) }}
	errs := make(chan error, 2)
	go func() {
		_, err := BuildRunc(context.Background(), a, "v1.0.0-rc9")
		errs <- err
	}()
	go func() {
		<-second
		_, err := BuildRunc(context.Background(), &b, "v1.0.0-rc92")
		errs <- err
	}()
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for _, v := range []string{"v1.0.0-rc9", "v1.0.0-rc92"} {
		if got := dirNames(t, filepath.Join(a.DistDir, "runc", v)); !strings.Contains(got, "runc") {
			t.Errorf("%s: %s", v, got)
		}
	}
	if got := dirNames(t, a.DistDir); got != "runc" {
		t.Errorf("dist root holds %s", got)
	}
}

// A run that finds the version locked says for whom it waits, and once it
// holds the lock serves what the other run published instead of fetching,
// building and publishing it again.
func TestWaitingRunSaysForWhomAndRechecksTheCache(t *testing.T) {
	r := repo(t)
	a := newConfig(t, r)
	b := *a
	var logB syncBuffer
	b.Log = &logB
	aBuilding := make(chan struct{})
	releaseA := make(chan struct{})
	a.Runner = hooked{onBuild: func() {
		close(aBuilding)
		<-releaseA
	}}
	var mu sync.Mutex
	var bGit []string
	b.Runner = hooked{
		onBuild: func() { t.Error("the waiting run built") },
		onGit: func(args []string) {
			mu.Lock()
			bGit = append(bGit, strings.Join(args, " "))
			mu.Unlock()
		},
	}
	resA := make(chan *Result, 1)
	go func() {
		res, err := BuildRunc(context.Background(), a, "v1.0.0-rc9")
		if err != nil {
			t.Error(err)
		}
		resA <- res
	}()
	<-aBuilding
	resB := make(chan *Result, 1)
	go func() {
		res, err := BuildRunc(context.Background(), &b, "v1.0.0-rc9")
		if err != nil {
			t.Error(err)
		}
		resB <- res
	}()
	waitFor(t, "the waiting message", func() bool { return strings.Contains(logB.String(), "waiting for") })
	msg := logB.String()
	for _, want := range []string{"pid " + strconv.Itoa(os.Getpid()), "build runc v1.0.0-rc9 into " + a.DistDir + ", since ", "runc-v1.0.0-rc9.lock"} {
		if !strings.Contains(msg, want) {
			t.Errorf("waiting message lacks %q:\n%s", want, msg)
		}
	}
	close(releaseA)
	first := <-resA
	if first == nil {
		t.Fatal("first run failed")
	}
	published, err := os.Stat(first.Binary)
	if err != nil {
		t.Fatal(err)
	}
	hit := <-resB
	if hit == nil || !hit.CacheHit || hit.SHA256 != first.SHA256 {
		t.Fatalf("waiting run: %+v", hit)
	}
	if !strings.Contains(logB.String(), "checking dist/ again") {
		t.Errorf("log:\n%s", logB.String())
	}
	mu.Lock()
	for _, g := range bGit {
		if strings.Contains(g, " fetch ") || strings.Contains(g, " checkout ") {
			t.Errorf("the waiting run fetched: %s", g)
		}
	}
	mu.Unlock()
	// Not republished: the same file, untouched.
	if now, err := os.Stat(first.Binary); err != nil || !os.SameFile(now, published) || !now.ModTime().Equal(published.ModTime()) {
		t.Errorf("artifact replaced after the first run published it")
	}
}

// Staging directories of runs that are gone are removed before a build;
// those of live runs (another version being built into the same dist/) are
// kept.
func TestStagingOfDeadOwnersIsRemovedLiveKept(t *testing.T) {
	r := repo(t)
	c := newConfig(t, r)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	gone := owner.Self()
	gone.PID = dead.Process.Pid
	stale := filepath.Join(c.DistDir, ".staging-runc-v1.0.0-rc9-123.owner-"+gone.String())
	live := filepath.Join(c.DistDir, ".staging-runc-v1.0.0-rc92-456.owner-"+owner.Self().String())
	for _, d := range []string{stale, live} {
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "runc"), []byte("half"), 0o644)
	}
	var log syncBuffer
	c.Log = &log
	if _, err := BuildRunc(context.Background(), c, "v1.0.0-rc9"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Error("the staging directory of a dead run survived")
	}
	if _, err := os.Stat(filepath.Join(live, "runc")); err != nil {
		t.Errorf("the staging directory of a live run was removed: %v", err)
	}
	if !strings.Contains(log.String(), "removed "+stale) {
		t.Errorf("log:\n%s", log.String())
	}
}

// A tag moved upstream is noticed on a cache hit: the artifact is not
// served. A remote that cannot be asked serves it with a warning.
func TestMovedTagOnCacheHitIsRefused(t *testing.T) {
	r := repo(t)
	c := newConfig(t, r)
	fork := filepath.Join(t.TempDir(), "fork")
	fixture.Git(t, filepath.Dir(fork), "clone", "-q", "--mirror", r.Dir, fork)
	c.RepoURL = fork
	ctx := context.Background()
	first, err := BuildRunc(ctx, c, "v1.0.0-rc9")
	if err != nil {
		t.Fatal(err)
	}
	if hit, err := BuildRunc(ctx, c, "v1.0.0-rc9"); err != nil || !hit.CacheHit {
		t.Fatalf("unmoved tag: %+v %v", hit, err)
	}
	before := tree(t, c.DistDir)

	// The tag moves to another commit (here: the rc92 commit).
	fixture.Git(t, fork, "tag", "-f", "v1.0.0-rc9", r.Commits["v1.0.0-rc92"])
	var refusedLog syncBuffer
	c.Log = &refusedLog
	_, err = BuildRunc(ctx, c, "v1.0.0-rc9")
	var moved *source.MovedTagError
	if !errors.As(err, &moved) || moved.Found != r.Commits["v1.0.0-rc92"] || !strings.Contains(err.Error(), "is not served") {
		t.Fatalf("moved tag on a cache hit: %v", err)
	}
	// The tag is checked before anything says the artifact is up to date.
	if strings.Contains(refusedLog.String(), "up to date") {
		t.Errorf("a refused hit said it is up to date:\n%s", refusedLog.String())
	}
	if after := tree(t, c.DistDir); after != before {
		t.Errorf("dist changed:\n%s\n%s", before, after)
	}

	// Unreachable: served, with a warning that says so.
	var log syncBuffer
	c.Log = &log
	c.RepoURL = filepath.Join(t.TempDir(), "unreachable")
	hit, err := BuildRunc(ctx, c, "v1.0.0-rc9")
	if err != nil || !hit.CacheHit || hit.SHA256 != first.SHA256 {
		t.Fatalf("unreachable remote: %+v %v", hit, err)
	}
	if !strings.Contains(log.String(), "WARNING") || !strings.Contains(log.String(), "could not re-check that tag v1.0.0-rc9") {
		t.Errorf("log:\n%s", log.String())
	}
}

// An unwritable dist/ or cache is found before anything is fetched, and the
// message names the setting.
func TestUnwritableDistFoundBeforeFetch(t *testing.T) {
	r := repo(t)
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	ro := t.TempDir()
	readOnly := unix.Mount("tmpfs", ro, "tmpfs", unix.MS_RDONLY, "size=1m") == nil
	if readOnly {
		t.Cleanup(func() { unix.Unmount(ro, 0) })
	}
	for _, tc := range []struct {
		name, setting string
		set           func(c *Config)
		skip          bool
	}{
		{"dist under a file", "NOKMEM_DIST", func(c *Config) { c.DistDir = filepath.Join(file, "dist") }, false},
		{"read-only dist", "NOKMEM_DIST", func(c *Config) { c.DistDir = filepath.Join(ro, "dist") }, !readOnly},
		{"read-only cache", "NOKMEM_CACHE", func(c *Config) { c.CacheDir = ro }, !readOnly},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip {
				if testenv.InCI() {
					t.Fatal("CI=true but a read-only tmpfs cannot be mounted (needs root)")
				}
				t.Skip("cannot mount a read-only tmpfs here (needs root)")
			}
			c := newConfig(t, r)
			tc.set(c)
			fetched := false
			c.Runner = hooked{onGit: func(args []string) { fetched = true }}
			_, err := BuildRunc(context.Background(), c, "v1.0.0-rc9")
			if err == nil || !IsUserError(err) || !strings.Contains(err.Error(), tc.setting+"=") || !strings.Contains(err.Error(), "nothing was fetched") {
				t.Fatalf("error: %v", err)
			}
			if fetched {
				t.Error("git ran before the check")
			}
		})
	}
}
