// Package pipeline runs the steps of a nokmem build in order:
// matrix → source → patch → source check → build → verify → dist.
// Each step lives in its own package; this one only wires them together,
// decides what counts as a cache hit and turns failures into one clear
// error for the user.
package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nokmem/nokmem/internal/build"
	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/internal/source"
	"github.com/nokmem/nokmem/matrix"
	"github.com/nokmem/nokmem/verify"
)

// Config is everything a build needs; see internal/settings for where each
// field comes from.
type Config struct {
	RepoURL        string // upstream runc git URL or local path
	KubeRepoURL    string // upstream kubernetes git URL or local path
	CacheDir       string
	DistDir        string
	MatrixDir      string // the project's matrix/
	PatchesDir     string // the project's patches/
	MatrixOverlay  string // optional second matrix directory
	PatchesOverlay string // optional second patches directory
	Mode           build.Mode
	GoBin          string
	GoToolchain    string
	BuildImage     string
	// AllowStaticOnly accepts static verification alone on hosts where the
	// dynamic check cannot run.
	AllowStaticOnly bool
	// AllowUnpinned builds kubelet entries that have no pinned commit.
	AllowUnpinned bool
	// AcceptGoMismatch builds kubelet with a host Go whose minor differs
	// from the release's.
	AcceptGoMismatch bool
	// KubeVersionSuffix is appended to KUBE_GIT_VERSION (build metadata).
	KubeVersionSuffix string
	Runner            run.Runner
	Verifier          Verifier
	Log               io.Writer
}

// Verifier checks a built binary.
type Verifier interface {
	Verify(ctx context.Context, binary string, opt verify.Options) (*verify.Report, error)
}

// DefaultVerifier is the real verifier.
type DefaultVerifier struct{}

// Verify runs verify.Verify.
func (DefaultVerifier) Verify(ctx context.Context, binary string, opt verify.Options) (*verify.Report, error) {
	return verify.Verify(ctx, binary, opt)
}

// Result is a finished build.
type Result struct {
	Dir      string
	Binary   string
	SHA256   string
	CacheHit bool
	Report   *verify.Report
}

// UserError is a problem with the user's input or environment, with a
// message that says what to do. Mage prints it without a stack.
type UserError struct{ Msg string }

func (e *UserError) Error() string { return e.Msg }

// NothingToDoError says that a release carries no kmem code.
type NothingToDoError struct{ Project, Version, Why string }

func (e *NothingToDoError) Error() string {
	return fmt.Sprintf("nothing to do: %s %s does not enable kernel-memory accounting (%s); use the upstream binary", e.Project, e.Version, e.Why)
}

// VerificationError says that a built binary failed verification; nothing
// was written to dist/.
type VerificationError struct{ Report *verify.Report }

func (e *VerificationError) Error() string {
	return "verification failed; nothing was written to dist/:\n" + e.Report.Summary()
}

func (c *Config) logf(format string, a ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, format+"\n", a...)
	}
}

// loadRelease parses version, loads the matrix and finds the entry.
func (c *Config) loadRelease(project, version string) (matrix.Release, error) {
	if _, err := matrix.ParseVersion(version); err != nil {
		return matrix.Release{}, &UserError{Msg: fmt.Sprintf("%v", err)}
	}
	m, err := matrix.Load(project, c.MatrixDir, c.MatrixOverlay)
	if err != nil {
		return matrix.Release{}, err
	}
	rel, ok := m.Lookup(version)
	if !ok {
		return matrix.Release{}, &UserError{Msg: fmt.Sprintf("%s %s is not in the matrix (%s). Supported: %s. Releases that need no nokmem build: %s. To build a fork or another revision, add it to an overlay matrix (NOKMEM_MATRIX_OVERLAY).",
			project, version, filepath.Join(c.MatrixDir, project+".yaml"),
			strings.Join(append(m.Tags(matrix.StrategyPatch), m.Tags(matrix.StrategyTag)...), ", "),
			strings.Join(m.Tags(matrix.StrategyNone), ", "))}
	}
	return rel, nil
}

// inputKey hashes every input that decides the artifact's bytes and its
// verification.
func inputKey(parts ...any) string {
	h := sha256.New()
	enc := json.NewEncoder(h)
	for _, p := range parts {
		enc.Encode(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// cacheHit reports whether dist already holds the artifact for key, after
// re-hashing every file it lists.
func cacheHit(dir, key string) (*dist.Provenance, bool) {
	var prov dist.Provenance
	if err := dist.ReadJSON(dir, dist.ProvenanceFile, &prov); err != nil || prov.InputKey != key || !prov.Verified.Passed {
		return nil, false
	}
	if _, err := dist.CheckSums(dir); err != nil {
		return nil, false
	}
	return &prov, true
}

// cached returns the artifact in dist/ built from the inputs key, if any.
func (c *Config) cached(project, version, key string) (*Result, bool) {
	dir := dist.Dir(c.DistDir, project, version)
	prov, ok := cacheHit(dir, key)
	if !ok {
		return nil, false
	}
	c.logf("%s %s: up to date in %s (checksums re-verified)", project, version, dir)
	return &Result{Dir: dir, Binary: filepath.Join(dir, project), SHA256: prov.Output.SHA256, CacheHit: true}, true
}

// lock serialises builds of one project version on this machine.
func lock(path string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
}

// workTree locks project/version on this machine, removes staging left by
// interrupted runs, and prepares a fresh checkout of rel from url at
// <cache>/work/<project>/<version>/gopath/src/<importPath>, the GOPATH
// layout pre-module trees need. The caller must call unlock.
func (c *Config) workTree(ctx context.Context, project, url, setting, importPath string, rel matrix.Release) (f *source.Fetcher, co *source.Checkout, gopath string, unlock func(), err error) {
	release, err := lock(filepath.Join(c.CacheDir, "locks", project+"-"+rel.Version+".lock"))
	if err != nil {
		return nil, nil, "", nil, err
	}
	defer func() {
		if err != nil {
			release()
		}
	}()
	if err = dist.CleanStale(c.DistDir); err != nil {
		return nil, nil, "", nil, err
	}
	gopath = filepath.Join(c.CacheDir, "work", project, rel.Version, "gopath")
	c.logf("%s %s: fetching the tag from %s (depth 1)", project, rel.Version, url)
	f = &source.Fetcher{Runner: c.Runner, CacheDir: c.CacheDir, Setting: setting}
	co, err = f.Prepare(ctx, url, rel.Version, rel.Commit, filepath.Join(gopath, "src", filepath.FromSlash(importPath)))
	if err != nil {
		return nil, nil, "", nil, fmt.Errorf("source: %w", err)
	}
	return f, co, gopath, release, nil
}

// IsUserError reports errors whose message is complete for a user.
func IsUserError(err error) bool {
	var u *UserError
	var n *NothingToDoError
	return errors.As(err, &u) || errors.As(err, &n)
}
