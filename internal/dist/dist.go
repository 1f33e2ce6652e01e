// Package dist owns the output directory. Artifacts are assembled in a
// staging directory inside dist/ and appear at dist/<project>/<version>/
// in one rename, only after they were verified; a failed or interrupted run
// leaves at most a hidden staging directory, which a later run removes once
// its owner is gone (runs of other versions share dist/ and must keep
// theirs).
//
// Layout (stable; tests assert it):
//
//	dist/<project>/<version>/<binary>          the nokmem binary (runc, kubelet)
//	dist/<project>/<version>/provenance.json   how it was made (schema nokmem.provenance/v1)
//	dist/<project>/<version>/provenance.intoto.json      in-toto Statement v1, SLSA Provenance v1 (internal/attest)
//	dist/<project>/<version>/provenance.intoto.json.asc  its OpenPGP signature, when NOKMEM_SIGNING_KEY is set
//	dist/<project>/<version>/verify.json       the verification report
//	dist/<project>/<version>/SHA256SUMS        sha256 of every file above (for sha256sum -c; unsigned, so the statement is the proof)
package dist

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/nokmem/nokmem/internal/digest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nokmem/nokmem/internal/owner"
)

// File names inside an artifact directory.
const (
	SumsFile       = "SHA256SUMS"
	ProvenanceFile = "provenance.json"
	ReportFile     = "verify.json"
	stagingPrefix  = ".staging-"
)

// Dir returns dist/<project>/<version>.
func Dir(root, project, version string) string {
	return filepath.Join(root, project, version)
}

// Staging is an artifact being assembled.
type Staging struct {
	root, project, version string
	dir                    string
}

// ownerMark separates a staging directory's name from its owner
// (internal/owner): .staging-<project>-<version>-<random>.owner-<id>. The
// owner is part of the name so that it exists from the directory's first
// moment.
const ownerMark = ".owner-"

// UncheckableAge is how old a staging directory whose owner cannot be
// checked from here (another host or pid namespace sharing dist/, or one
// made by a nokmem that recorded no owner) must be to count as abandoned:
// far longer than any build runs.
const UncheckableAge = 24 * time.Hour

// CleanStale removes the staging directories of runs that are provably
// gone (killed, or before a reboot) and returns their paths. Those of live
// runs, building other versions into the same dist/, are kept.
func CleanStale(root string) ([]string, error) {
	entries, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), stagingPrefix) || !abandoned(filepath.Join(root, e.Name())) {
			continue
		}
		p := filepath.Join(root, e.Name())
		if err := os.RemoveAll(p); err != nil {
			return removed, err
		}
		removed = append(removed, p)
	}
	return removed, nil
}

// abandoned reports whether the owner of staging directory p is gone.
func abandoned(p string) bool {
	state := owner.Unknown
	if i := strings.LastIndex(filepath.Base(p), ownerMark); i >= 0 {
		if id, ok := owner.Parse(filepath.Base(p)[i+len(ownerMark):]); ok {
			state = id.Check()
		}
	}
	if state != owner.Unknown {
		return state == owner.Gone
	}
	st, err := os.Lstat(p)
	return err == nil && time.Since(st.ModTime()) > UncheckableAge
}

// NewStaging creates an empty staging directory under root, owned by this
// process.
func NewStaging(root, project, version string) (*Staging, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("output directory (NOKMEM_DIST): %w", err)
	}
	dir, err := os.MkdirTemp(root, stagingPrefix+project+"-"+version+"-*"+ownerMark+owner.Self().String())
	if err != nil {
		return nil, fmt.Errorf("staging directory in the output directory (NOKMEM_DIST): %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	return &Staging{root: root, project: project, version: version, dir: dir}, nil
}

// Path returns the path of name inside the staging directory.
func (s *Staging) Path(name string) string { return filepath.Join(s.dir, name) }

// WriteJSON writes v, indented, as name.
func (s *Staging) WriteJSON(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(s.Path(name), append(b, '\n'), 0o644)
}

// Abort removes the staging directory.
func (s *Staging) Abort() { os.RemoveAll(s.dir) }

// Publish writes SHA256SUMS over every file and moves the directory into
// place atomically, replacing any previous artifact of the same version.
func (s *Staging) Publish() (string, error) {
	if err := WriteSums(s.dir); err != nil {
		return "", err
	}
	final := Dir(s.root, s.project, s.version)
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return "", err
	}
	if _, err := os.Lstat(final); err == nil {
		// Swap in one step, then drop the old artifact.
		if err := unix.Renameat2(unix.AT_FDCWD, s.dir, unix.AT_FDCWD, final, unix.RENAME_EXCHANGE); err != nil {
			return "", fmt.Errorf("publish %s: %w", final, err)
		}
		os.RemoveAll(s.dir)
		return final, nil
	}
	if err := os.Rename(s.dir, final); err != nil {
		return "", fmt.Errorf("publish %s: %w", final, err)
	}
	return final, nil
}

// WriteSums writes dir/SHA256SUMS for every regular file in dir.
func WriteSums(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var lines []string
	for _, e := range entries {
		if e.Name() == SumsFile || !e.Type().IsRegular() {
			continue
		}
		sum, err := FileSHA256(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		lines = append(lines, sum+"  "+e.Name())
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i][66:] < lines[j][66:] })
	return os.WriteFile(filepath.Join(dir, SumsFile), []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}

// CheckSums re-hashes every file SHA256SUMS lists and requires that the
// directory holds exactly those files. It returns the sums by name.
func CheckSums(dir string) (map[string]string, error) {
	f, err := os.Open(filepath.Join(dir, SumsFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sums := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 || strings.ContainsAny(name, "/\\") {
			return nil, fmt.Errorf("%s: malformed line %q", SumsFile, sc.Text())
		}
		got, err := FileSHA256(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		if got != sum {
			return nil, fmt.Errorf("%s: sha256 %s, SHA256SUMS says %s (the artifact was modified)", filepath.Join(dir, name), got, sum)
		}
		sums[name] = sum
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if _, ok := sums[e.Name()]; !ok && e.Name() != SumsFile {
			return nil, fmt.Errorf("%s: %s is not listed in SHA256SUMS", dir, e.Name())
		}
	}
	return sums, sc.Err()
}

// FileSHA256 hashes a file (internal/digest).
func FileSHA256(path string) (string, error) { return digest.File(path) }

// SHA256Hex hashes data.
func SHA256Hex(data []byte) string { return digest.Bytes(data) }

// ReadJSON decodes dir/name into v.
func ReadJSON(dir, name string, v any) error {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// WriteFileAtomic replaces path with data (mode perm) through a temporary
// file in the same directory and a rename, so readers see the old or the
// new content, never a part.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
