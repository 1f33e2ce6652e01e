// Package source fetches exactly one upstream tag, shallowly, into a
// reusable cache, proves that it resolves to the commit the matrix pins, and
// lays out a fresh git work tree of that commit for the later steps.
package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nokmem/nokmem/internal/lock"
	"github.com/nokmem/nokmem/internal/run"
)

// Fetcher fetches tags through git.
type Fetcher struct {
	Runner   run.Runner
	CacheDir string // holds git/<hash of url>.git and locks/git-<hash>.lock
	// Setting names the environment setting that chooses the URL, for
	// error messages (e.g. NOKMEM_RUNC_REPO).
	Setting string
	// Logf, if set, is told whom a fetch waits for and which stale git
	// lock files it removed.
	Logf func(format string, a ...any)
}

func (f *Fetcher) logf(format string, a ...any) {
	if f.Logf != nil {
		f.Logf(format, a...)
	}
}

// Checkout is a prepared work tree.
type Checkout struct {
	URL        string
	Tag        string
	Commit     string
	CommitDate time.Time
	Dir        string
}

// MovedTagError reports a tag that no longer points at its pinned commit.
type MovedTagError struct {
	URL, Tag, Pinned, Found string
}

func (e *MovedTagError) Error() string {
	if e.Found == "" {
		return fmt.Sprintf("tag %s no longer exists at %s, but the matrix pins it to %s: the tag was deleted or the source is not upstream. "+
			"Treat this as a supply-chain event: find out why before building; nokmem refuses to build or serve it", e.Tag, e.URL, e.Pinned)
	}
	return fmt.Sprintf("tag %s at %s resolves to commit %s, but the matrix pins %s: the tag moved or the source is not upstream. "+
		"Treat this as a supply-chain event: find out why before building; nokmem refuses to build it", e.Tag, e.URL, e.Found, e.Pinned)
}

// UnreachableError reports a source that cannot be fetched from.
type UnreachableError struct {
	URL, Tag, Setting string
	Err               error
}

func (e *UnreachableError) Error() string {
	setting := e.Setting
	if setting == "" {
		setting = "the repository setting"
	}
	// What to do first, on one line; the evidence (git's argv and output)
	// after it.
	return fmt.Sprintf("cannot fetch tag %s from %s: set %s to an internal mirror or a local clone (a git URL or a path), or check the tag and the network.\nWhat git said: %v",
		e.Tag, e.URL, setting, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

func (f *Fetcher) git(ctx context.Context, dir string, args ...string) (string, error) {
	out, err := f.Runner.Run(ctx, run.Cmd{
		Args: append([]string{"git", "-c", "protocol.file.allow=always", "-c", "advice.detachedHead=false"}, args...),
		Dir:  dir,
		Env:  []string{"GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1", "LC_ALL=C"},
	})
	return strings.TrimSpace(string(out)), err
}

// CheckURL rejects repository settings git could read as an option.
func CheckURL(url string) error {
	if url == "" {
		return errors.New("source URL is empty")
	}
	if strings.HasPrefix(url, "-") {
		return fmt.Errorf("source URL %q starts with '-' and would be read by git as an option", url)
	}
	if strings.ContainsAny(url, "\x00\n\r") {
		return fmt.Errorf("source URL %q contains control characters", url)
	}
	return nil
}

// InterruptedError says that a fetch stopped because its context was
// cancelled (Ctrl-C, a timeout): nothing is wrong with the tag, the URL or
// the network.
type InterruptedError struct {
	URL, Tag string
	Err      error // the context's error
}

func (e *InterruptedError) Error() string {
	return fmt.Sprintf("fetch of tag %s from %s interrupted (%v)", e.Tag, e.URL, e.Err)
}

func (e *InterruptedError) Unwrap() error { return e.Err }

// repoName is the cache's name for url: the bare repository
// git/<name>.git and its lock locks/git-<name>.lock.
func repoName(url string) string {
	sum := sha256.Sum256([]byte(url))
	return hex.EncodeToString(sum[:8])
}

// lockRepo takes the lock of url's bare cache repository. Every
// operation on that repository runs under it: git's own lock files
// (shallow.lock, packed-refs.lock) make a second concurrent fetch fail
// ("shallow file has changed since we read it") rather than wait, and
// builds of different versions from one source share the repository.
func (f *Fetcher) lockRepo(ctx context.Context, url, what string) (func(), error) {
	path := filepath.Join(f.CacheDir, "locks", "git-"+repoName(url)+".lock")
	release, err := lock.Acquire(ctx, path, what, func(h *lock.Holder) {
		f.logf("source cache of %s: waiting for %s to finish with it (lock %s)", url, h, path)
	})
	if err != nil {
		return nil, err
	}
	return release, nil
}

// gitLocks are git's lock files in a bare repository: the files git
// creates with O_EXCL next to what it rewrites (shallow, packed-refs,
// config, HEAD, index, every ref).
func gitLocks(repo string) ([]string, error) {
	var found []string
	top, err := os.ReadDir(repo)
	if err != nil {
		return nil, err
	}
	for _, e := range top {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".lock") {
			found = append(found, filepath.Join(repo, e.Name()))
		}
	}
	err = filepath.WalkDir(filepath.Join(repo, "refs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() && strings.HasSuffix(d.Name(), ".lock") {
			found = append(found, p)
		}
		return nil
	})
	return found, err
}

// removeStaleGitLocks removes git's lock files from repo. Called only
// while holding the repository's lock (lockRepo): every git command on
// repo runs under that lock, so a lock file found then was left by a git
// that was killed (SIGKILL, a power cut) and would fail every later fetch
// with "Unable to create '…/shallow.lock': File exists".
func (f *Fetcher) removeStaleGitLocks(repo string) error {
	stale, err := gitLocks(repo)
	if err != nil {
		return err
	}
	for _, p := range stale {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		f.logf("source cache: removed %s, left by a git that was killed (no nokmem run holds the cache)", p)
	}
	return nil
}

// cacheRepo returns the bare cache repository for url, creating it. The
// caller holds the repository's lock.
func (f *Fetcher) cacheRepo(ctx context.Context, url string) (string, error) {
	dir := filepath.Join(f.CacheDir, "git", repoName(url)+".git")
	if _, err := os.Stat(filepath.Join(dir, "HEAD")); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".init-*")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if _, err := f.git(ctx, "", "init", "-q", "--bare", tmp); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(tmp, "nokmem-source-url"), []byte(url+"\n"), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil && !errors.Is(err, os.ErrExist) {
		if _, statErr := os.Stat(filepath.Join(dir, "HEAD")); statErr != nil {
			return "", err
		}
	}
	return dir, nil
}

// Fetch fetches refs/tags/<tag> at depth 1 from url into the cache and
// returns the commit it resolves to. It always asks the remote, so a moved
// tag is seen. It holds the repository's lock while it works; the returned
// cache may change as soon as it returns (Prepare reads it under the lock).
func (f *Fetcher) Fetch(ctx context.Context, url, tag string) (cache, commit string, err error) {
	if err := CheckURL(url); err != nil {
		return "", "", err
	}
	url = absURL(url)
	unlock, err := f.lock(ctx, url, tag)
	if err != nil {
		return "", "", err
	}
	defer unlock()
	return f.fetch(ctx, url, tag)
}

// lock takes url's repository lock for a fetch of tag; a cancelled wait
// is an *InterruptedError.
func (f *Fetcher) lock(ctx context.Context, url, tag string) (func(), error) {
	unlock, err := f.lockRepo(ctx, url, fmt.Sprintf("fetch %s from %s", tag, url))
	switch {
	case err == nil:
		return unlock, nil
	case ctx.Err() != nil:
		return nil, &InterruptedError{URL: url, Tag: tag, Err: ctx.Err()}
	}
	return nil, fmt.Errorf("source cache in %s (NOKMEM_CACHE; set it to a directory you can write): %w", f.CacheDir, err)
}

// fetch is Fetch for a caller that holds the repository's lock.
func (f *Fetcher) fetch(ctx context.Context, url, tag string) (cache, commit string, err error) {
	cache, err = f.cacheRepo(ctx, url)
	if err != nil {
		if ctx.Err() != nil {
			return "", "", &InterruptedError{URL: url, Tag: tag, Err: ctx.Err()}
		}
		return "", "", fmt.Errorf("source cache in %s (NOKMEM_CACHE; set it to a directory you can write): %w", f.CacheDir, err)
	}
	if err := f.removeStaleGitLocks(cache); err != nil {
		return "", "", fmt.Errorf("source cache %s: remove git lock files left by a killed git (remove them by hand, or the directory): %w", cache, err)
	}
	ref := "refs/tags/" + tag
	if _, err := f.git(ctx, cache, "fetch", "-q", "--depth=1", "--no-tags", "--force", "--", url, "+"+ref+":"+ref); err != nil {
		if ctx.Err() != nil {
			return "", "", &InterruptedError{URL: url, Tag: tag, Err: ctx.Err()}
		}
		return "", "", &UnreachableError{URL: url, Tag: tag, Setting: f.Setting, Err: err}
	}
	commit, err = f.git(ctx, cache, "rev-parse", "--verify", "--end-of-options", ref+"^{commit}")
	if err != nil {
		return "", "", fmt.Errorf("resolve %s: %w", tag, err)
	}
	return cache, commit, nil
}

// absURL makes a local path absolute, so that one repository has one cache
// whatever the working directory.
func absURL(url string) string {
	if abs, err := filepath.Abs(url); err == nil && !strings.Contains(url, "://") && !strings.Contains(url, "@") {
		if _, statErr := os.Stat(abs); statErr == nil {
			return abs
		}
	}
	return url
}

// ResolveTag asks url which commit refs/tags/<tag> names now, without
// fetching anything (git ls-remote, one round trip): the peeled commit of
// an annotated tag, or the commit a lightweight tag names. A remote that
// cannot be asked is an *UnreachableError; a tag that is gone resolves to
// "".
func (f *Fetcher) ResolveTag(ctx context.Context, url, tag string) (string, error) {
	if err := CheckURL(url); err != nil {
		return "", err
	}
	url = absURL(url)
	ref := "refs/tags/" + tag
	out, err := f.git(ctx, "", "ls-remote", "--", url, ref, ref+"^{}")
	if err != nil {
		return "", &UnreachableError{URL: url, Tag: tag, Setting: f.Setting, Err: err}
	}
	var direct, peeled string
	for _, line := range strings.Split(out, "\n") {
		sha, name, ok := strings.Cut(strings.TrimSpace(line), "\t")
		switch {
		case !ok:
		case name == ref:
			direct = sha
		case name == ref+"^{}":
			peeled = sha
		}
	}
	if peeled != "" {
		return peeled, nil
	}
	return direct, nil
}

// CheckTag re-resolves tag at url and refuses it unless it still names
// pinned: a *MovedTagError when it names another commit or is gone, an
// *UnreachableError when the remote cannot be asked.
func (f *Fetcher) CheckTag(ctx context.Context, url, tag, pinned string) error {
	found, err := f.ResolveTag(ctx, url, tag)
	if err != nil {
		return err
	}
	if found != pinned {
		return &MovedTagError{URL: absURL(url), Tag: tag, Pinned: pinned, Found: found}
	}
	return nil
}

// Prepare fetches tag, checks it against pinned and creates a fresh work
// tree of it at dir (anything there is removed first). An empty pinned
// accepts whatever the tag resolves to (an unpinned matrix entry).
func (f *Fetcher) Prepare(ctx context.Context, url, tag, pinned, dir string) (*Checkout, error) {
	if err := CheckURL(url); err != nil {
		return nil, err
	}
	commit, err := f.prepare(ctx, absURL(url), tag, pinned, dir)
	if err != nil {
		return nil, err
	}
	if _, err := f.git(ctx, "", "-C", dir, "checkout", "-q", "--detach", commit); err != nil {
		return nil, fmt.Errorf("work tree: %w", err)
	}
	ct, err := f.git(ctx, dir, "log", "-1", "--format=%ct", commit)
	if err != nil {
		return nil, err
	}
	secs, err := strconv.ParseInt(ct, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("commit date of %s: %w", commit, err)
	}
	return &Checkout{URL: url, Tag: tag, Commit: commit, CommitDate: time.Unix(secs, 0).UTC(), Dir: dir}, nil
}

// prepare fetches tag into the cache and from there into a fresh
// repository at dir, under the cache repository's lock: the work tree's
// fetch reads the cache's refs and shallow file, which another fetch
// rewrites.
func (f *Fetcher) prepare(ctx context.Context, url, tag, pinned, dir string) (string, error) {
	unlock, err := f.lock(ctx, url, tag)
	if err != nil {
		return "", err
	}
	defer unlock()
	cache, commit, err := f.fetch(ctx, url, tag)
	if err != nil {
		return "", err
	}
	if pinned != "" && commit != pinned {
		return "", &MovedTagError{URL: url, Tag: tag, Pinned: pinned, Found: commit}
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	ref := "refs/tags/" + tag
	for _, s := range [][]string{
		{"init", "-q", dir},
		{"-C", dir, "fetch", "-q", "--depth=1", "--no-tags", "--", cache, "+" + ref + ":" + ref},
	} {
		if _, err := f.git(ctx, "", s...); err != nil {
			if ctx.Err() != nil {
				return "", &InterruptedError{URL: url, Tag: tag, Err: ctx.Err()}
			}
			return "", fmt.Errorf("work tree: %w", err)
		}
	}
	return commit, nil
}

// Commit records the current state of the work tree as a commit dated like
// the upstream commit, so that the tree is clean (version scripts that
// append "-dirty" see no change) and the result is deterministic.
func (f *Fetcher) Commit(ctx context.Context, c *Checkout, message string) (string, error) {
	date := strconv.FormatInt(c.CommitDate.Unix(), 10) + " +0000"
	if _, err := f.git(ctx, c.Dir, "add", "-A"); err != nil {
		return "", err
	}
	_, err := f.Runner.Run(ctx, run.Cmd{
		Args: []string{"git", "-c", "user.name=nokmem", "-c", "user.email=nokmem@localhost", "-c", "commit.gpgsign=false",
			"commit", "-q", "--no-verify", "-m", message},
		Dir: c.Dir,
		Env: []string{"GIT_AUTHOR_DATE=" + date, "GIT_COMMITTER_DATE=" + date, "GIT_CONFIG_NOSYSTEM=1"},
	})
	if err != nil {
		return "", err
	}
	return f.git(ctx, c.Dir, "rev-parse", "HEAD")
}
