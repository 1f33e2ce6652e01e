// Package pinning records reviewed commits in the matrix (matrix:pin) and
// keeps artifacts built from unpinned entries out of what nokmem publishes.
//
// An unpinned kubelet entry builds locally with a loud warning that prints
// the commit its tag resolved to. Someone reviews that commit, then pins it:
// Pin resolves the tag again through the configured repository (git
// ls-remote, nothing fetched), refuses when it no longer names the commit
// the reviewed artifact in dist/ was built from, and writes the commit into
// the matrix file the entry came from, changing that one line and keeping
// every comment. release and publish:mirror then refuse artifacts whose
// provenance says "unpinned" (CheckPublishable) unless told otherwise.
package pinning

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/internal/source"
	"github.com/nokmem/nokmem/matrix"
)

// Request is one matrix:pin.
type Request struct {
	Project, Version string
	// MatrixDir and Overlay are where the matrix is read (the entry is
	// pinned in the file it came from).
	MatrixDir, Overlay string
	// RepoURL is the source of the tag, Setting the variable that chose it.
	RepoURL, Setting string
	CacheDir         string
	// DistDir holds the artifact that was reviewed, if any.
	DistDir string
	Runner  run.Runner
	Now     time.Time
}

// Result says what Pin did.
type Result struct {
	File   string
	Commit string
	// Already is set when the entry was pinned to that commit before.
	Already bool
	// Reviewed names the dist/ artifact built from the commit, if any.
	Reviewed string
}

// Pin writes the commit tag r.Version resolves to into the matrix.
func Pin(ctx context.Context, r Request) (*Result, error) {
	m, err := matrix.Load(r.Project, r.MatrixDir, r.Overlay)
	if err != nil {
		return nil, err
	}
	rel, ok := m.Lookup(r.Version)
	if !ok {
		return nil, fmt.Errorf("%s %s is not in the matrix (%s): add an entry (version, and its expected strategy) first, then pin it",
			r.Project, r.Version, filepath.Join(r.MatrixDir, r.Project+".yaml"))
	}
	f := &source.Fetcher{Runner: r.Runner, CacheDir: r.CacheDir, Setting: r.Setting}
	commit, err := f.ResolveTag(ctx, r.RepoURL, r.Version)
	if err != nil {
		return nil, err
	}
	if commit == "" {
		return nil, fmt.Errorf("tag %s does not exist at %s (%s): nothing to pin", r.Version, r.RepoURL, r.Setting)
	}
	res := &Result{File: rel.Origin, Commit: commit}
	if rel.Commit == commit {
		res.Already = true
		return res, nil
	}
	if rel.Commit != "" {
		return nil, fmt.Errorf("%s %s is pinned to %s in %s, but tag %s at %s now names %s: the tag moved or the source is not upstream. "+
			"Treat it as a supply-chain event; matrix:pin does not re-pin a pinned entry", r.Project, r.Version, rel.Commit, rel.Origin, r.Version, r.RepoURL, commit)
	}
	// The review is of what was built: an artifact in dist/ must come from
	// the commit that is pinned now.
	var prov dist.Provenance
	switch err := dist.ReadJSON(dist.Dir(r.DistDir, r.Project, r.Version), dist.ProvenanceFile, &prov); {
	case err == nil && prov.Source.Commit != commit:
		return nil, fmt.Errorf("the %s %s in %s was built from %s, but tag %s now names %s: review the new commit (build it again) before pinning it",
			r.Project, r.Version, r.DistDir, prov.Source.Commit, r.Version, commit)
	case err == nil:
		res.Reviewed = dist.Dir(r.DistDir, r.Project, r.Version)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read the %s %s artifact in %s: %w", r.Project, r.Version, r.DistDir, err)
	}
	data, err := os.ReadFile(rel.Origin)
	if err != nil {
		return nil, err
	}
	note := fmt.Sprintf("matrix:pin %s: refs/tags/%s at %s", r.Now.UTC().Format("2006-01-02"), r.Version, r.RepoURL)
	if res.Reviewed != "" {
		note += ", as built and verified in " + res.Reviewed
	}
	out, err := SetCommit(data, r.Version, commit, note)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", rel.Origin, err)
	}
	file, err := matrix.Decode(strings.NewReader(string(out)))
	if err == nil {
		if errs := matrix.Validate(file, r.Project); len(errs) > 0 {
			err = errors.Join(errs...)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: the pinned matrix would not load (nothing was written): %w", rel.Origin, err)
	}
	if err := writeAtomic(rel.Origin, out); err != nil {
		return nil, err
	}
	return res, nil
}

// SetCommit returns a matrix file with the commit of release version set,
// and note as that line's comment. Only that line changes (or one line is
// added after the version when the entry has no commit key): comments,
// order and layout of everything else are kept byte for byte. The yaml.v3
// node tree says where the line is.
func SetCommit(data []byte, version, commit, note string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("not a matrix file")
	}
	releases := value(doc.Content[0], "releases")
	if releases == nil || releases.Kind != yaml.SequenceNode {
		return nil, errors.New("no releases list")
	}
	for _, entry := range releases.Content {
		v := value(entry, "version")
		if entry.Kind != yaml.MappingNode || v == nil || v.Value != version {
			continue
		}
		if entry.Style&yaml.FlowStyle != 0 {
			return nil, fmt.Errorf("the %s entry is written in flow style ({…}); pin it by hand", version)
		}
		lines := strings.SplitAfter(string(data), "\n")
		newLine := func(prefix string) string { return prefix + "commit: " + commit + "  # " + note + "\n" }
		if k, c := key(entry, "commit"); k != nil {
			if k.Line != c.Line || k.Line < 1 || k.Line > len(lines) {
				return nil, fmt.Errorf("the commit of %s is not on one line; pin it by hand", version)
			}
			lines[k.Line-1] = newLine(lines[k.Line-1][:k.Column-1])
		} else {
			vk, _ := key(entry, "version")
			indent := strings.Repeat(" ", vk.Column-1)
			at := vk.Line // insert after the version line
			lines = append(lines[:at], append([]string{newLine(indent)}, lines[at:]...)...)
		}
		return []byte(strings.Join(lines, "")), nil
	}
	return nil, fmt.Errorf("no entry for %s", version)
}

// key returns the key and value nodes of name in mapping m.
func key(m *yaml.Node, name string) (k, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == name {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}

func value(m *yaml.Node, name string) *yaml.Node {
	_, v := key(m, name)
	return v
}

func writeAtomic(path string, data []byte) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(st.Mode().Perm()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Unpinned is an artifact built from an unpinned matrix entry.
type Unpinned struct {
	Project, Version, Commit, Dir string
}

func (u Unpinned) String() string {
	return fmt.Sprintf("%s %s (commit %s, %s)", u.Project, u.Version, u.Commit, u.Dir)
}

// FindUnpinned lists the artifacts in distDir whose provenance says they
// were built from an unpinned matrix entry.
func FindUnpinned(distDir string) ([]Unpinned, error) {
	var out []Unpinned
	for _, project := range []string{"runc", "kubelet"} {
		entries, err := os.ReadDir(filepath.Join(distDir, project))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			dir := filepath.Join(distDir, project, e.Name())
			var prov dist.Provenance
			if err := dist.ReadJSON(dir, dist.ProvenanceFile, &prov); err != nil {
				continue // not an artifact nokmem made: release and mirror refuse it themselves
			}
			if prov.Source.Pinned == "unpinned" {
				out = append(out, Unpinned{Project: project, Version: e.Name(), Commit: prov.Source.Commit, Dir: dir})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Dir < out[j].Dir })
	return out, nil
}

// UnpinnedError says that what would be published holds unpinned artifacts.
type UnpinnedError struct {
	What     string // release, publish:mirror
	Unpinned []Unpinned
}

func (e *UnpinnedError) Error() string {
	names := make([]string, len(e.Unpinned))
	for i, u := range e.Unpinned {
		names[i] = u.String()
	}
	return fmt.Sprintf("%s refuses artifacts built from unpinned matrix entries, whose commit nobody reviewed: %s. "+
		"Review the commit, pin it (go tool mage matrix:pin %s %s) and build again, remove the artifact, "+
		"or set NOKMEM_ALLOW_UNPINNED=1 to publish it anyway", e.What, strings.Join(names, "; "), e.Unpinned[0].Project, e.Unpinned[0].Version)
}

// CheckPublishable refuses, for what (release, publish:mirror), a dist/
// that holds unpinned artifacts, unless allow; allowed ones are returned so
// that the caller can say it publishes them.
func CheckPublishable(distDir, what string, allow bool) ([]Unpinned, error) {
	u, err := FindUnpinned(distDir)
	if err != nil {
		return nil, err
	}
	if len(u) > 0 && !allow {
		return nil, &UnpinnedError{What: what, Unpinned: u}
	}
	return u, nil
}
