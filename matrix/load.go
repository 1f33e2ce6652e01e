package matrix

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Matrix is the loaded set of releases of one project (runc).
type Matrix struct {
	Project  string
	Releases []Release // sorted by version
}

// Load reads <dir>/<project>.yaml and, for each overlay directory that has
// the same file, lets its entries add to or replace (by version) the base
// entries. Every problem in every file is reported in one error.
func Load(project, dir string, overlays ...string) (*Matrix, error) {
	name := project + ".yaml"
	base, err := loadFile(filepath.Join(dir, name), project)
	if err != nil {
		return nil, err
	}
	byTag := map[string]Release{}
	for _, r := range base {
		byTag[r.Version] = r
	}
	for _, o := range overlays {
		if o == "" {
			continue
		}
		p := filepath.Join(o, name)
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			continue
		}
		rs, err := loadFile(p, project)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			byTag[r.Version] = r
		}
	}
	m := &Matrix{Project: project}
	for _, r := range byTag {
		m.Releases = append(m.Releases, r)
	}
	sort.Slice(m.Releases, func(i, j int) bool { return m.Releases[i].parsed.Less(m.Releases[j].parsed) })
	return m, nil
}

func loadFile(path, project string) ([]Release, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read matrix: %w", err)
	}
	f, err := Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if errs := Validate(f, project); len(errs) > 0 {
		return nil, fmt.Errorf("%s: invalid matrix:\n  %s", path, strings.Join(errorStrings(errs), "\n  "))
	}
	for i := range f.Releases {
		f.Releases[i].Origin = path
		f.Releases[i].parsed, _ = ParseVersion(f.Releases[i].Version)
	}
	return f.Releases, nil
}

// Decode parses one matrix file strictly: unknown keys are errors.
func Decode(r io.Reader) (*File, error) {
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	var f File
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	return &f, nil
}

var (
	commitRE = regexp.MustCompile(`^[0-9a-f]{40}$`)
	goRE     = regexp.MustCompile(`^1\.[0-9]+$`)
	tagWord  = regexp.MustCompile(`^[a-z0-9_]+$`)
)

// Validate checks a decoded file and returns every problem found.
func Validate(f *File, project string) []error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if f.APIVersion != APIVersion {
		add("apiVersion is %q, want %q", f.APIVersion, APIVersion)
	}
	if want := kindFor(project); f.Kind != want {
		add("kind is %q, want %q", f.Kind, want)
	}
	if len(f.Releases) == 0 {
		add("no releases")
	}
	seen := map[string]bool{}
	for i, r := range f.Releases {
		at := fmt.Sprintf("releases[%d] (%s)", i, r.Version)
		v, err := ParseVersion(r.Version)
		if err != nil {
			add("%s: version: %v", at, err)
		}
		if seen[r.Version] {
			add("%s: duplicate version", at)
		}
		seen[r.Version] = true
		if project == "kubelet" {
			errs = append(errs, validateKubelet(at, r)...)
			continue
		}
		if !commitRE.MatchString(r.Commit) {
			add("%s: commit %q is not a full 40-hex commit id (pin the dereferenced commit, not the tag object)", at, r.Commit)
		}
		if !goRE.MatchString(r.Go) {
			add("%s: go %q is not a Go minor such as \"1.12\"", at, r.Go)
		}
		switch r.Layout {
		case LayoutGodeps, LayoutGOPATH, LayoutGoMod:
		default:
			add("%s: layout %q is not one of godeps, gopath, gomod", at, r.Layout)
		}
		for _, t := range r.BuildTags {
			if !tagWord.MatchString(t) {
				add("%s: build tag %q is not a plain word", at, t)
			}
		}
		switch r.Toolchain {
		case "", "era", "host":
		default:
			add("%s: toolchain %q is not era or host", at, r.Toolchain)
		}
		if r.Static == nil && r.Strategy != StrategyNone {
			add("%s: static is missing: copy the tags and -installsuffix of the release's `make static` target", at)
		}
		if r.Static != nil {
			for _, t := range r.Static.Tags {
				if !tagWord.MatchString(t) || slices.Contains(r.BuildTags, t) {
					add("%s: static tag %q is not a plain word, or repeats a build tag", at, t)
				}
			}
			if r.Static.InstallSuffix != "" && !tagWord.MatchString(r.Static.InstallSuffix) {
				add("%s: installSuffix %q is not a plain word", at, r.Static.InstallSuffix)
			}
		}
		hasNokmem := slices.Contains(r.BuildTags, "nokmem")
		switch r.Strategy {
		case StrategyPatch:
			if len(r.Patches) == 0 {
				add("%s: strategy patch needs at least one patch", at)
			}
			if hasNokmem {
				add("%s: strategy patch must not list the nokmem tag (it does not exist before runc v1.0.0-rc6)", at)
			}
		case StrategyTag:
			if !hasNokmem {
				add("%s: strategy tag needs the nokmem build tag", at)
			}
			if len(r.Patches) > 0 {
				add("%s: strategy tag takes no patches", at)
			}
		case StrategyNone:
			if len(r.Patches) > 0 || hasNokmem {
				add("%s: strategy none takes no patches and no nokmem tag", at)
			}
		default:
			add("%s: strategy %q is not one of patch, tag, none", at, r.Strategy)
		}
		if err == nil && project == "runc" {
			if want := RuncEra(v); r.Strategy != "" && r.Strategy != want {
				add("%s: strategy %q contradicts upstream history: runc %s needs %q", at, r.Strategy, r.Version, want)
			}
		}
		for _, p := range r.Patches {
			if strings.ContainsAny(p, `/\`) || strings.HasPrefix(p, ".") {
				add("%s: patch name %q must be a plain file name in the patches directory", at, p)
			}
		}
	}
	return errs
}

// validateKubelet checks a kubelet entry. Its strategy is only an
// expectation: the pipeline decides from the vendored content and refuses
// when the two disagree. An empty commit means "unpinned".
func validateKubelet(at string, r Release) []error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if r.Commit != "" && !commitRE.MatchString(r.Commit) {
		add("%s: commit %q is not a full 40-hex commit id (leave it empty for an unpinned entry)", at, r.Commit)
	}
	if r.Go != "" && !goRE.MatchString(r.Go) {
		add("%s: go %q is not a Go minor such as \"1.11\"", at, r.Go)
	}
	switch r.Strategy {
	case "", StrategyPatch, StrategyTag, StrategyNone:
	default:
		add("%s: strategy %q is not one of patch, tag, none (or empty)", at, r.Strategy)
	}
	if len(r.BuildTags) > 0 || r.Layout != "" || len(r.Patches) > 0 || r.Static != nil || r.Toolchain != "" {
		add("%s: buildTags, layout, patches, static and toolchain are decided from the vendored content and the release's Go for kubelet; remove them", at)
	}
	return errs
}

func kindFor(project string) string {
	if project == "" {
		return ""
	}
	return strings.ToUpper(project[:1]) + project[1:] + "Matrix"
}

func errorStrings(errs []error) []string {
	s := make([]string, len(errs))
	for i, e := range errs {
		s[i] = e.Error()
	}
	return s
}

var (
	// runc 6a2c1559 (2018-10-31, PR #1921) added the nokmem build tag; first tag v1.0.0-rc6.
	firstTagRelease = MustVersion("v1.0.0-rc6")
	// runc 52390d68 (2021-04-12, "Ignore kernel memory settings") removed all kmem code; first tag v1.0.0-rc94.
	firstNoKmemRelease = MustVersion("v1.0.0-rc94")
)

// RuncEra returns the strategy that upstream runc history requires for v.
func RuncEra(v Version) Strategy {
	switch {
	case v.Less(firstTagRelease):
		return StrategyPatch
	case v.Less(firstNoKmemRelease):
		return StrategyTag
	default:
		return StrategyNone
	}
}

// Lookup finds a release by its tag.
func (m *Matrix) Lookup(tag string) (Release, bool) {
	for _, r := range m.Releases {
		if r.Version == tag {
			return r, true
		}
	}
	return Release{}, false
}

// Tags lists the versions, in order, that have strategy s (all if s is "").
func (m *Matrix) Tags(s Strategy) []string {
	var out []string
	for _, r := range m.Releases {
		if s == "" || r.Strategy == s {
			out = append(out, r.Version)
		}
	}
	return out
}
