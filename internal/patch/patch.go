// Package patch loads nokmem's source patches and applies them only to the
// exact upstream content they were made against.
//
// A patch file is a unified diff preceded by a header of "# key: value"
// lines:
//
//	# nokmem-patch: v1
//	# target: libcontainer/cgroups/fs/memory.go
//	# base-sha256: <sha256 of the upstream file the diff was made against>
//	# result-sha256: <sha256 of the file after the diff>
//	# applies-to: <human note: which releases carry that content>
//	# summary: <what the patch does>
//
// Content is identified by hash, never by version number: a file whose hash
// is not the patch's base is refused, naming the hash found and every hash
// the loaded patches know for that file.
package patch

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/bluekeyes/go-gitdiff/gitdiff"

	"github.com/nokmem/nokmem/internal/dist"
)

// Patch is one loaded patch file.
type Patch struct {
	Name         string `json:"name"`
	Target       string `json:"target"`
	BaseSHA256   string `json:"baseSHA256"`
	ResultSHA256 string `json:"resultSHA256"`
	AppliesTo    string `json:"appliesTo,omitempty"`
	Summary      string `json:"summary,omitempty"`
	// SHA256 is the hash of the patch file itself.
	SHA256 string `json:"sha256"`
	// Path is where the patch was read from.
	Path string `json:"-"`
	file *gitdiff.File
}

var hexRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Parse reads one patch file.
func Parse(name string, data []byte) (*Patch, error) {
	p := &Patch{Name: name, SHA256: SHA256(data)}
	sc := bufio.NewScanner(bytes.NewReader(data))
	var last *string
	var version string
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "#") {
			break
		}
		body := strings.TrimPrefix(line, "#")
		if strings.HasPrefix(body, "   ") && last != nil { // continuation
			*last += " " + strings.TrimSpace(body)
			continue
		}
		k, v, ok := strings.Cut(strings.TrimSpace(body), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "nokmem-patch":
			version = v
			last = nil
		case "target":
			p.Target, last = v, &p.Target
		case "base-sha256":
			p.BaseSHA256, last = v, nil
		case "result-sha256":
			p.ResultSHA256, last = v, nil
		case "applies-to":
			p.AppliesTo, last = v, &p.AppliesTo
		case "summary":
			p.Summary, last = v, &p.Summary
		default:
			return nil, fmt.Errorf("patch %s: unknown header key %q", name, k)
		}
	}
	var problems []string
	if version != "v1" {
		problems = append(problems, `header "# nokmem-patch: v1" missing`)
	}
	if p.Target == "" || path.IsAbs(p.Target) || strings.Contains(p.Target, "..") {
		problems = append(problems, fmt.Sprintf("target %q must be a relative path inside the source tree", p.Target))
	}
	if !hexRE.MatchString(p.BaseSHA256) {
		problems = append(problems, "base-sha256 missing or not 64 lower-case hex digits")
	}
	if !hexRE.MatchString(p.ResultSHA256) {
		problems = append(problems, "result-sha256 missing or not 64 lower-case hex digits")
	}
	files, _, err := gitdiff.Parse(bytes.NewReader(data))
	switch {
	case err != nil:
		problems = append(problems, "diff: "+err.Error())
	case len(files) != 1:
		problems = append(problems, fmt.Sprintf("diff must change exactly one file, it changes %d", len(files)))
	case strip(files[0].OldName) != p.Target || strip(files[0].NewName) != p.Target:
		problems = append(problems, fmt.Sprintf("diff changes %q, header names %q", strip(files[0].NewName), p.Target))
	default:
		p.file = files[0]
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("patch %s: %s", name, strings.Join(problems, "; "))
	}
	return p, nil
}

// strip removes the a/ and b/ prefixes of a traditional unified diff.
func strip(name string) string {
	if strings.HasPrefix(name, "a/") || strings.HasPrefix(name, "b/") {
		return name[2:]
	}
	return name
}

// Set is the patches loaded from one or more directories.
type Set struct {
	byName map[string]*Patch
}

// LoadDirs reads every *.patch file in dirs. A patch in a later directory
// (an overlay) replaces one of the same name in an earlier one.
func LoadDirs(dirs ...string) (*Set, error) {
	s := &Set{byName: map[string]*Patch{}}
	var errs []error
	for _, d := range dirs {
		if d == "" {
			continue
		}
		names, err := filepath.Glob(filepath.Join(d, "*.patch"))
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(d); err != nil {
			return nil, fmt.Errorf("patches directory: %w", err)
		}
		for _, n := range names {
			data, err := os.ReadFile(n)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			p, err := Parse(filepath.Base(n), data)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", n, err))
				continue
			}
			p.Path = n
			s.byName[p.Name] = p
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

// Get returns the named patch.
func (s *Set) Get(name string) (*Patch, error) {
	p, ok := s.byName[name]
	if !ok {
		return nil, fmt.Errorf("patch %q not found in the patches directories (have: %s)", name, strings.Join(s.Names(), ", "))
	}
	return p, nil
}

// Names lists the loaded patches.
func (s *Set) Names() []string {
	var n []string
	for k := range s.byName {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Fingerprint hashes every loaded patch (name and content), for cache keys
// of builds whose patch is chosen by content.
func (s *Set) Fingerprint() string {
	var b strings.Builder
	for _, n := range s.Names() {
		b.WriteString(n + " " + s.byName[n].SHA256 + "\n")
	}
	return SHA256([]byte(b.String()))
}

// ForContent returns the patch whose base is the given content hash, if any.
func (s *Set) ForContent(target, sum string) (*Patch, bool) {
	for _, n := range s.Names() {
		p := s.byName[n]
		if p.Target == target && p.BaseSHA256 == sum {
			return p, true
		}
	}
	return nil, false
}

// KnownBases lists, sorted, every base hash known for target.
func (s *Set) KnownBases(target string) []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range s.byName {
		if p.Target == target && !seen[p.BaseSHA256] {
			seen[p.BaseSHA256] = true
			out = append(out, p.BaseSHA256+" ("+p.Name+")")
		}
	}
	sort.Strings(out)
	return out
}

// ContentError says that a file is not the content a patch was made for.
type ContentError struct {
	File  string
	Found string
	Want  string
	Known []string
}

func (e *ContentError) Error() string {
	return fmt.Sprintf("%s has sha256 %s, which no nokmem patch covers (the patch expects %s; known contents: %s); "+
		"add a patch for this content to an overlay patches directory (NOKMEM_PATCHES_OVERLAY) after reviewing it",
		e.File, e.Found, e.Want, strings.Join(e.Known, ", "))
}

// Apply applies p to root/prefix/<target>, refusing any content other than
// the patch's base and checking that the result is the reviewed result.
// The file is replaced atomically. known is used in the error message.
func (p *Patch) Apply(root, prefix string, known []string) error {
	file := filepath.Join(root, filepath.FromSlash(prefix), filepath.FromSlash(p.Target))
	rel := path.Join(prefix, p.Target)
	src, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("patch %s: %w", p.Name, err)
	}
	if got := SHA256(src); got != p.BaseSHA256 {
		return &ContentError{File: rel, Found: got, Want: p.BaseSHA256, Known: known}
	}
	var out bytes.Buffer
	if err := gitdiff.Apply(&out, bytes.NewReader(src), p.file); err != nil {
		return fmt.Errorf("patch %s does not apply to %s: %w", p.Name, rel, err)
	}
	if got := SHA256(out.Bytes()); got != p.ResultSHA256 {
		return fmt.Errorf("patch %s applied to %s gives sha256 %s, not the reviewed result %s; the patch file is inconsistent", p.Name, rel, got, p.ResultSHA256)
	}
	return writeKeepingMode(file, out.Bytes())
}

// SHA256 returns the lower-case hex sha256 of data.
func SHA256(data []byte) string { return dist.SHA256Hex(data) }

// writeKeepingMode replaces file with data atomically, keeping its mode.
func writeKeepingMode(file string, data []byte) error {
	mode := os.FileMode(0o644)
	if st, err := os.Stat(file); err == nil {
		mode = st.Mode().Perm()
	}
	return dist.WriteFileAtomic(file, data, mode)
}
