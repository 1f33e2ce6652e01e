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
	"path/filepath"
	"strings"

	"github.com/nokmem/nokmem/internal/attest"
	"github.com/nokmem/nokmem/internal/build"
	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/progress"
	"github.com/nokmem/nokmem/internal/run"
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
	// AllowUnpinned builds kubelet entries that have no pinned commit where
	// they are refused (CI); elsewhere they build with a loud warning.
	AllowUnpinned bool
	// CI is CI=true: unpinned kubelet entries are refused unless
	// AllowUnpinned.
	CI bool
	// AcceptGoMismatch builds kubelet with a host Go whose minor differs
	// from the release's.
	AcceptGoMismatch bool
	// KubeVersionSuffix is appended to KUBE_GIT_VERSION (build metadata).
	KubeVersionSuffix string
	// Target names the nodes the binaries are for (verify/target); "" is el7.
	Target string
	// Dynamic is NOKMEM_DYNAMIC: auto, require or off.
	Dynamic string
	// ToolkitRevision is this toolkit's git revision (part of every key).
	ToolkitRevision string
	// Signing signs every statement a build publishes and is required to
	// have signed every statement a cache hit trusts (NOKMEM_SIGNING_KEY,
	// NOKMEM_VERIFY_PUBKEY); the zero value signs and requires nothing.
	Signing  attest.Keys
	Runner   run.Runner
	Verifier Verifier
	// Progress reports the steps and notes (internal/progress); nil: plain
	// lines to Log, if set.
	Progress progress.Reporter
	Log      io.Writer
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
	// Signer is who signed a cache hit's statement ("" unsigned).
	Signer string
	Report *verify.Report
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
	c.reporter().Printf(format, a...)
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
		return matrix.Release{}, &UserError{Msg: notInMatrix(m, project, version, filepath.Join(c.MatrixDir, project+".yaml"))}
	}
	return rel, nil
}

// notInMatrix says what the matrix does hold: every entry, by what it is
// expected to need (kubelet entries without an expectation are decided by
// the vendored content when built).
func notInMatrix(m *matrix.Matrix, project, version, file string) string {
	msg := fmt.Sprintf("%s %s is not in the matrix (%s). Supported: %s. Releases that need no nokmem build: %s.",
		project, version, file,
		strings.Join(append(m.Tags(matrix.StrategyPatch), m.Tags(matrix.StrategyTag)...), ", "),
		strings.Join(m.Tags(matrix.StrategyNone), ", "))
	var byContent []string
	for _, r := range m.Releases {
		if r.Strategy == "" {
			byContent = append(byContent, r.Version)
		}
	}
	if len(byContent) > 0 {
		msg += fmt.Sprintf(" Decided by the vendored content when built: %s.", strings.Join(byContent, ", "))
	}
	return msg + " To build a fork or another revision, add it to an overlay matrix (NOKMEM_MATRIX_OVERLAY)."
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

// cacheHit checks dir against what a build would make: the artifact when
// it is intact (statement, signature, digests) and was built from the
// inputs want.InputKey; nil when a build may make it anew (absent, or
// built from other inputs, which note is told); and a *RefusedError when
// dir is not what nokmem published (modified, without a statement, signed
// by another key): a build neither reuses nor replaces it.
func (c *Config) cacheHit(dir string, want attest.Expect, note func(format string, a ...any)) (*attest.Artifact, error) {
	want.PublicKey = c.Signing.PublicKey
	art, err := attest.CheckDir(dir, want)
	switch {
	case err == nil:
		return art, nil
	case errors.Is(err, attest.ErrAbsent):
		return nil, nil
	case attest.Replaceable(err):
		note("%s %s: %v: it will be rebuilt", want.Project, want.Version, err)
		return nil, nil
	}
	return nil, &RefusedError{Dir: dir, Err: err}
}

// RefusedError says that dist/ holds an artifact that was changed after
// nokmem published it (or a copy of another, or one signed by another
// key). It is kept as evidence; the user decides.
type RefusedError struct {
	Dir string
	Err error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%v; nokmem neither reuses nor replaces it: look at it, then remove it (go tool mage clean, or rm -r %s) to rebuild", e.Err, e.Dir)
}

func (e *RefusedError) Unwrap() error { return e.Err }

// checkCache returns the artifact in dist/ built from the inputs key (a
// cache hit, with the binary's digest re-hashed), nil when the build must
// run, or a *RefusedError.
func (c *Config) checkCache(project, version, key string) (*Result, error) {
	return c.lookupCache(project, version, key, c.logf)
}

// lookupCache is checkCache, telling note why an artifact is rebuilt.
func (c *Config) lookupCache(project, version, key string, note func(format string, a ...any)) (*Result, error) {
	dir := dist.Dir(c.DistDir, project, version)
	art, err := c.cacheHit(dir, attest.Expect{Project: project, Version: version, InputKey: key}, note)
	if art == nil || err != nil {
		return nil, err
	}
	// The target says so, in one line.
	return &Result{Dir: dir, Binary: art.Binary, SHA256: art.SHA256, CacheHit: true, Signer: art.Signer}, nil
}

// mayReplace is the last check before publishing over
// dist/<project>/<version>: only what a build may make anew is replaced.
func (c *Config) mayReplace(project, version string) error {
	dir := dist.Dir(c.DistDir, project, version)
	_, err := attest.CheckDir(dir, attest.Expect{Project: project, Version: version, PublicKey: c.Signing.PublicKey})
	if err == nil || attest.Replaceable(err) {
		return nil
	}
	return &RefusedError{Dir: dir, Err: err}
}

// IsUserError reports errors whose message is complete for a user.
func IsUserError(err error) bool {
	var u *UserError
	var n *NothingToDoError
	return errors.As(err, &u) || errors.As(err, &n)
}
