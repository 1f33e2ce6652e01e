package dist

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// versionDir is the name of an artifact directory: a release tag.
var versionDir = regexp.MustCompile(`^v[0-9][0-9A-Za-z.+~-]*$`)

// made lists, for each top-level directory nokmem writes into dist/, what
// may be in it: what it returns is not nokmem's (nil: all is).
var made = map[string]func(e os.DirEntry, dir string) []string{
	// Artifact directories, each published with its SHA256SUMS.
	"runc":    artifactDir("runc"),
	"kubelet": artifactDir("kubelet", "kmem-probe"),
	// The node tool that passed its gate (internal/nodetools).
	"tools": artifactDir("nokmem", "gate.json"),
	// verify:* reports (and one being renamed into place).
	"reports": regular(func(n string) bool {
		return strings.HasSuffix(n, ".verify.json") || strings.HasSuffix(n, ".verify.json.tmp")
	}),
	// SBOMs of released artifacts (internal/release), and one being written.
	"sbom": regular(func(n string) bool { return strings.HasSuffix(n, ".sbom.cdx.json") || strings.HasPrefix(n, ".tmp-") }),
	// Packages, and a package being written.
	"packages": regular(func(n string) bool {
		return strings.HasSuffix(n, ".rpm") || strings.HasSuffix(n, ".deb") || strings.HasPrefix(n, ".pkg-")
	}),
}

// regular accepts a regular file whose name ok accepts.
func regular(ok func(name string) bool) func(e os.DirEntry, dir string) []string {
	return func(e os.DirEntry, dir string) []string {
		if e.Type().IsRegular() && ok(e.Name()) {
			return nil
		}
		return []string{filepath.Join(dir, e.Name())}
	}
}

// artifactDir accepts a release-named directory holding only what nokmem
// publishes there (the named binaries, the provenance, statement and
// signature, the report, an SBOM, SHA256SUMS) and a SHA256SUMS, as nokmem
// writes it, that lists every one of them. Clean removes whole artifact
// directories, so a file somebody put into one must stop it, not go with
// it. The digests are not checked: a modified artifact is nokmem's to
// remove (the refusal of a tampered artifact says to clean it).
func artifactDir(binaries ...string) func(e os.DirEntry, dir string) []string {
	return func(e os.DirEntry, dir string) []string {
		p := filepath.Join(dir, e.Name())
		if !e.IsDir() || !versionDir.MatchString(e.Name()) {
			return []string{p}
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return []string{fmt.Sprintf("%s (%v)", p, err)}
		}
		var foreign []string
		for _, f := range entries {
			n := f.Name()
			switch {
			case !f.Type().IsRegular():
				foreign = append(foreign, filepath.Join(p, n))
			case n == SumsFile || n == ProvenanceFile || n == ReportFile || n == StatementFile || n == SignatureFile ||
				strings.HasSuffix(n, ".cdx.json") || slices.Contains(binaries, n):
			default:
				foreign = append(foreign, filepath.Join(p, n))
			}
		}
		if len(foreign) > 0 {
			return foreign
		}
		if why := nokmemSums(p, entries); why != "" {
			return []string{fmt.Sprintf("%s (%s)", filepath.Join(p, SumsFile), why)}
		}
		return nil
	}
}

// nokmemSums says why dir's SHA256SUMS is not one nokmem wrote over
// entries ("" when it is): missing, a line that is not "<sha256>  <name>",
// or a file of dir it does not list.
func nokmemSums(dir string, entries []os.DirEntry) string {
	b, err := os.ReadFile(filepath.Join(dir, SumsFile))
	if err != nil {
		return "no " + SumsFile + ": not a published artifact"
	}
	listed := map[string]bool{}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(b) == 0 || string(b) == "\n" {
		lines = nil
	}
	for i, line := range lines {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok || len(sum) != 64 || strings.Trim(sum, "0123456789abcdef") != "" || name == "" || strings.ContainsAny(name, `/\`) {
			return fmt.Sprintf("line %d is not \"<sha256>  <file>\": not a SHA256SUMS nokmem wrote", i+1)
		}
		listed[name] = true
	}
	for _, e := range entries {
		if n := e.Name(); n != SumsFile && !listed[n] {
			return fmt.Sprintf("it does not list %s: not a SHA256SUMS nokmem wrote", n)
		}
	}
	return ""
}

// Clean removes what nokmem made in the output directory root, and root
// itself: runc/ and kubelet/ artifact directories, reports/, packages/,
// sbom/ and abandoned staging directories. It first checks that root holds only
// that layout; anything else (a file, a directory nokmem does not make, a
// symbolic link, a live build's staging directory) makes it remove nothing
// and say what it found, so that NOKMEM_DIST pointing at the wrong
// directory cannot lose anyone's files. Artifact directories are looked
// into too: only nokmem's files, listed by a SHA256SUMS. It returns what
// it removed.
func Clean(root string) ([]string, error) {
	if strings.TrimSpace(root) == "" {
		return nil, errors.New("NOKMEM_DIST is empty: refusing to clean")
	}
	st, err := os.Stat(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("NOKMEM_DIST=%s: %w", root, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("NOKMEM_DIST=%s is not a directory: refusing to clean it", root)
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("NOKMEM_DIST=%s: %w", root, err)
	}
	var foreign, live []string
	for _, e := range entries {
		p := filepath.Join(root, e.Name())
		if strings.HasPrefix(e.Name(), stagingPrefix) {
			if e.IsDir() {
				live = append(live, p)
			} else {
				foreign = append(foreign, p)
			}
			continue
		}
		ok, inside := made[e.Name()]
		if !inside || !e.IsDir() {
			foreign = append(foreign, p)
			continue
		}
		sub, err := os.ReadDir(p)
		if err != nil {
			return nil, err
		}
		for _, s := range sub {
			foreign = append(foreign, ok(s, p)...)
		}
	}
	if len(foreign) > 0 {
		const most = 10
		more := ""
		if len(foreign) > most {
			more = fmt.Sprintf(" and %d more", len(foreign)-most)
			foreign = foreign[:most]
		}
		return nil, fmt.Errorf("NOKMEM_DIST=%s holds what nokmem did not make (%s%s); clean removes only nokmem's output, so it removed nothing. Point NOKMEM_DIST at nokmem's output directory, or move those away first",
			root, strings.Join(foreign, ", "), more)
	}
	var removed []string
	if len(live) > 0 {
		gone, err := CleanStale(root)
		removed = append(removed, gone...)
		if err != nil {
			return removed, err
		}
		for _, p := range live {
			if _, err := os.Lstat(p); err == nil {
				return removed, fmt.Errorf("a build is running into NOKMEM_DIST=%s (%s): run clean when it has finished", root, p)
			}
		}
	}
	for _, e := range entries {
		if _, ok := made[e.Name()]; !ok {
			continue
		}
		p := filepath.Join(root, e.Name())
		if err := os.RemoveAll(p); err != nil {
			return removed, err
		}
		removed = append(removed, p)
	}
	if err := os.Remove(root); err != nil {
		return removed, err
	}
	return append(removed, root), nil
}

// StagingDirs lists the staging directories in root: builds running into
// it, or abandoned ones (CleanStale removes those whose owner is gone).
func StagingDirs(root string) ([]string, error) {
	entries, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), stagingPrefix) {
			out = append(out, filepath.Join(root, e.Name()))
		}
	}
	return out, nil
}
