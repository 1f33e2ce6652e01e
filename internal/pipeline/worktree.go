package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/lock"
	"github.com/nokmem/nokmem/internal/source"
	"github.com/nokmem/nokmem/matrix"
)

// tagCheckTimeout bounds the one round trip that re-resolves a tag on a
// cache hit, so that a remote that does not answer delays a hit, not
// blocks it.
const tagCheckTimeout = 20 * time.Second

// cacheCheck returns the cache lookup workTree makes for key, or nil when
// nothing is cached for it (an unpinned kubelet).
func (c *Config) cacheCheck(project, version, key string) func() (*Result, error) {
	if key == "" {
		return nil
	}
	// workTree asks twice (before and after the lock): say each thing once.
	said := map[string]bool{}
	once := func(format string, a ...any) {
		if msg := fmt.Sprintf(format, a...); !said[msg] {
			said[msg] = true
			c.logf("%s", msg)
		}
	}
	return func() (*Result, error) { return c.lookupCache(project, version, key, once) }
}

// workTree prepares a build of rel and reports a cache hit instead when
// there is one. In order:
//
//  1. hit (if not nil) is asked for the artifact in dist/; a hit is served
//     once the tag is re-resolved (serveCached).
//  2. dist/ (NOKMEM_DIST) and the cache (NOKMEM_CACHE) must be writable:
//     found now, before anything is fetched or built.
//  3. The lock of project/version in NOKMEM_CACHE/locks (it guards the
//     work tree, which lives in that cache) is taken; a run that must
//     wait says for whom (pid, what it builds, since when), and once it
//     holds the lock asks hit again: usually the run it waited for has
//     just published the artifact, which is then served, not rebuilt.
//  4. Staging directories of dead runs are removed (those of live runs,
//     building other versions into the same dist/, are kept), and a fresh
//     checkout of rel from url is made at
//     <cache>/work/<project>/<version>/gopath/src/<importPath>, the GOPATH
//     layout pre-module trees need.
//
// On a hit, cached is set and nothing is held. Otherwise the caller builds
// and must call unlock.
func (c *Config) workTree(ctx context.Context, project, url, setting, importPath string, rel matrix.Release, hit func() (*Result, error)) (f *source.Fetcher, co *source.Checkout, gopath string, unlock func(), cached *Result, err error) {
	if hit != nil {
		res, err := hit()
		if err != nil {
			if perr := c.preflight(); perr != nil {
				err = perr // dist/ is not usable at all: say which setting
			}
		}
		if res != nil || err != nil {
			if err == nil {
				res, err = c.serveCached(ctx, project, res, url, setting, rel)
			}
			return nil, nil, "", nil, res, err
		}
	}
	if err := c.preflight(); err != nil {
		return nil, nil, "", nil, nil, err
	}
	lockPath := filepath.Join(c.CacheDir, "locks", project+"-"+rel.Version+".lock")
	waitedSince := time.Time{}
	release, err := lock.Acquire(ctx, lockPath, fmt.Sprintf("build %s %s into %s", project, rel.Version, c.DistDir), func(h *lock.Holder) {
		waitedSince = time.Now()
		c.logf("%s %s: waiting for %s to finish (lock %s)", project, rel.Version, h, lockPath)
	})
	if err != nil {
		return nil, nil, "", nil, nil, fmt.Errorf("lock %s %s (in NOKMEM_CACHE=%s): %w", project, rel.Version, c.CacheDir, err)
	}
	defer func() {
		if unlock == nil {
			release()
		}
	}()
	if !waitedSince.IsZero() {
		c.logf("%s %s: got the lock after %s; checking dist/ again", project, rel.Version, time.Since(waitedSince).Round(time.Second))
	}
	if hit != nil {
		if res, err := hit(); res != nil || err != nil {
			if err == nil {
				res, err = c.serveCached(ctx, project, res, url, setting, rel)
			}
			return nil, nil, "", nil, res, err
		}
	}
	removed, err := dist.CleanStale(c.DistDir)
	for _, p := range removed {
		c.logf("removed %s, left by a run that is gone", p)
	}
	if err != nil {
		return nil, nil, "", nil, nil, fmt.Errorf("remove abandoned staging in NOKMEM_DIST=%s: %w", c.DistDir, err)
	}
	gopath = filepath.Join(c.CacheDir, "work", project, rel.Version, "gopath")
	doneFetch := c.step("fetch", fmt.Sprintf("%s %s: the tag from %s (depth 1)", project, rel.Version, url))
	f = &source.Fetcher{Runner: c.Runner, CacheDir: c.CacheDir, Setting: setting, Logf: c.logf}
	co, err = f.Prepare(ctx, url, rel.Version, rel.Commit, filepath.Join(gopath, "src", filepath.FromSlash(importPath)))
	doneFetch(err)
	if err != nil {
		return nil, nil, "", nil, nil, fmt.Errorf("source: %w", err)
	}
	return f, co, gopath, release, nil, nil
}

// serveCached re-resolves rel's tag at url before a cached artifact is
// served, so that a moved tag is noticed although nothing is fetched:
//
//   - the tag names the pinned commit: served;
//   - it names another commit, or is gone: refused (*source.MovedTagError);
//   - the remote cannot be asked: served with a warning. The artifact was
//     built from the pinned commit after the tag was checked against it, and
//     verified; an unreachable remote is no evidence that the tag moved, and
//     refusing would make every cache hit need the network. The next build
//     that fetches checks the tag again.
func (c *Config) serveCached(ctx context.Context, project string, res *Result, url, setting string, rel matrix.Release) (*Result, error) {
	if rel.Commit == "" {
		return res, nil
	}
	f := &source.Fetcher{Runner: c.Runner, CacheDir: c.CacheDir, Setting: setting}
	tctx, cancel := context.WithTimeout(ctx, tagCheckTimeout)
	defer cancel()
	// One round trip, usually instant; a remote that does not answer is
	// waited for up to tagCheckTimeout.
	done := c.reporter().Quiet("tag check", fmt.Sprintf("%s %s: does tag %s at %s still name %.12s?", project, rel.Version, rel.Version, url, rel.Commit), time.Second)
	err := f.CheckTag(tctx, url, rel.Version, rel.Commit)
	done(err)
	var unreachable *source.UnreachableError
	switch {
	case err == nil:
		return res, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.As(err, &unreachable):
		c.logf("WARNING: %s %s: could not re-check that tag %s at %s still names the pinned commit %s (set %s to a reachable mirror to check it): serving the cached artifact, which was built from that commit and verified. The check: %v",
			project, rel.Version, rel.Version, url, rel.Commit, setting, unreachable.Err)
		return res, nil
	}
	return nil, fmt.Errorf("the cached artifact in %s is not served: %w", res.Dir, err)
}

// preflight checks what a build will write before anything is fetched:
// dist/ and the cache, naming the setting that chose each.
func (c *Config) preflight() error {
	for _, d := range []struct{ setting, dir, what string }{
		{"NOKMEM_DIST", c.DistDir, "the output directory"},
		{"NOKMEM_CACHE", c.CacheDir, "the source cache, work trees and locks"},
	} {
		if err := writable(d.dir); err != nil {
			return &UserError{Msg: fmt.Sprintf("%s=%s (%s) cannot be written: %v. Set %s to a directory you can write, or fix its permissions or mount; nothing was fetched or built",
				d.setting, d.dir, d.what, err, d.setting)}
		}
	}
	return nil
}

// CheckWritable says, before any work, that dir (or the nearest directory
// above it that exists) cannot be written: a *UserError naming setting,
// what dir is for, and what to do.
func CheckWritable(setting, dir, what string) error {
	if err := writable(dir); err != nil {
		return &UserError{Msg: fmt.Sprintf("%s cannot be written (%s, %v). Set %s to a directory you can write, or fix its permissions or mount",
			dir, what, err, setting)}
	}
	return nil
}

// writable checks that dir, or the nearest directory above it that exists
// (where it would be created), can be written, without writing anything.
func writable(dir string) error {
	if dir == "" {
		return errors.New("the path is empty")
	}
	p, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for {
		st, err := os.Stat(p)
		switch {
		case err == nil && !st.IsDir():
			return fmt.Errorf("%s is not a directory", p)
		case err == nil:
			if err := unix.Access(p, unix.W_OK|unix.X_OK); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			return nil
		case !errors.Is(err, fs.ErrNotExist):
			return err
		}
		parent := filepath.Dir(p)
		if parent == p {
			return err
		}
		p = parent
	}
}
