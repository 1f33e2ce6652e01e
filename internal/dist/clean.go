package dist

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// versionDir is the name of an artifact directory: a release tag.
var versionDir = regexp.MustCompile(`^v[0-9][0-9A-Za-z.+~-]*$`)

// made lists, for each top-level directory nokmem writes into dist/, what
// may be in it.
var made = map[string]func(e os.DirEntry, dir string) bool{
	// Artifact directories, each published with its SHA256SUMS.
	"runc":    artifactDir,
	"kubelet": artifactDir,
	// The node tool that passed its gate (internal/nodetools).
	"tools": artifactDir,
	// verify:* reports (and one being renamed into place).
	"reports": func(e os.DirEntry, _ string) bool {
		return e.Type().IsRegular() && (strings.HasSuffix(e.Name(), ".verify.json") || strings.HasSuffix(e.Name(), ".verify.json.tmp"))
	},
	// SBOMs of released artifacts (internal/release), and one being written.
	"sbom": func(e os.DirEntry, _ string) bool {
		n := e.Name()
		return e.Type().IsRegular() && (strings.HasSuffix(n, ".sbom.cdx.json") || strings.HasPrefix(n, ".tmp-"))
	},
	// Packages, and a package being written.
	"packages": func(e os.DirEntry, _ string) bool {
		n := e.Name()
		return e.Type().IsRegular() && (strings.HasSuffix(n, ".rpm") || strings.HasSuffix(n, ".deb") || strings.HasPrefix(n, ".pkg-"))
	},
}

func artifactDir(e os.DirEntry, dir string) bool {
	if !e.IsDir() || !versionDir.MatchString(e.Name()) {
		return false
	}
	st, err := os.Lstat(filepath.Join(dir, e.Name(), SumsFile))
	return err == nil && st.Mode().IsRegular()
}

// Clean removes what nokmem made in the output directory root, and root
// itself: runc/ and kubelet/ artifact directories, reports/, packages/,
// sbom/ and abandoned staging directories. It first checks that root holds only
// that layout; anything else (a file, a directory nokmem does not make, a
// symbolic link, a live build's staging directory) makes it remove nothing
// and say what it found, so that NOKMEM_DIST pointing at the wrong
// directory cannot lose anyone's files. It returns what it removed.
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
			if !ok(s, p) {
				foreign = append(foreign, filepath.Join(p, s.Name()))
			}
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
