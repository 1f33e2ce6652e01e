// Package mirror lays out an internal package mirror from the packages in
// dist/packages: a yum repository (metadata by createrepo_c) and a flat apt
// repository (index by dpkg-scanpackages), plus SHA256SUMS over everything
// served.
//
// Publishing is incremental and never rewrites a published package: a
// package whose file name already exists with other bytes is an error.
// Packages are copied in first (each by rename); indexes are regenerated
// after, so an interrupted publish leaves a mirror whose indexes describe
// only complete files, and a re-run completes it.
//
//	<dir>/yum/el7/x86_64/*.rpm, repodata/   (baseurl=<url>/yum/el7/x86_64)
//	<dir>/apt/*.deb, Packages, Packages.gz  (deb [trusted=yes] <url>/apt ./)
//	<dir>/SHA256SUMS (and SHA256SUMS.asc when a signing key is set)
package mirror

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/run"
)

// Layout paths inside the mirror.
const (
	YumDir = "yum/el7/x86_64"
	AptDir = "apt"
)

// Result says what a publish did.
type Result struct {
	Added   []string
	Skipped []string // already published with the same bytes
}

// Publisher publishes packages.
type Publisher struct {
	Runner run.Runner
	// Sign, if set, signs the mirror's SHA256SUMS (see internal/signing).
	Sign func(data []byte) ([]byte, error)
}

// ChangedError says that a published package would be rewritten.
type ChangedError struct{ Path, Published, New string }

func (e *ChangedError) Error() string {
	return fmt.Sprintf("%s is already published with sha256 %s; the new package has %s. A published package is never rewritten: raise the package release (NOKMEM_PACKAGE_RELEASE) instead", e.Path, e.Published, e.New)
}

// Publish copies every package in pkgDir into the mirror at dir and
// regenerates the indexes.
func (p *Publisher) Publish(ctx context.Context, pkgDir, dir string) (*Result, error) {
	pkgs, err := filepath.Glob(filepath.Join(pkgDir, "*"))
	if err != nil {
		return nil, err
	}
	res := &Result{}
	var todo [][2]string
	for _, src := range pkgs {
		var sub string
		switch {
		case strings.HasSuffix(src, ".rpm"):
			sub = YumDir
		case strings.HasSuffix(src, ".deb"):
			sub = AptDir
		default:
			continue
		}
		dst := filepath.Join(dir, sub, filepath.Base(src))
		newSum, err := dist.FileSHA256(src)
		if err != nil {
			return nil, err
		}
		if old, err := dist.FileSHA256(dst); err == nil {
			if old != newSum {
				return nil, &ChangedError{Path: dst, Published: old, New: newSum}
			}
			res.Skipped = append(res.Skipped, dst)
			continue
		}
		todo = append(todo, [2]string{src, dst})
	}
	if len(todo) == 0 && len(res.Skipped) == 0 {
		return nil, fmt.Errorf("no packages in %s: run package first", pkgDir)
	}
	// Check everything before changing anything.
	for _, t := range todo {
		if err := copyAtomic(t[0], t[1]); err != nil {
			return nil, err
		}
		res.Added = append(res.Added, t[1])
	}
	if err := p.index(ctx, dir); err != nil {
		return nil, err
	}
	return res, nil
}

func (p *Publisher) index(ctx context.Context, dir string) error {
	yum := filepath.Join(dir, YumDir)
	if rpms, _ := filepath.Glob(filepath.Join(yum, "*.rpm")); len(rpms) > 0 {
		args := []string{"createrepo_c", "--quiet", "--update", "--simple-md-filenames", yum}
		if _, err := p.Runner.Run(ctx, run.Cmd{Args: args}); err != nil {
			return fmt.Errorf("yum metadata (install createrepo-c): %w", err)
		}
	}
	apt := filepath.Join(dir, AptDir)
	if debs, _ := filepath.Glob(filepath.Join(apt, "*.deb")); len(debs) > 0 {
		out, err := p.Runner.Run(ctx, run.Cmd{Args: []string{"dpkg-scanpackages", "--multiversion", ".", "/dev/null"}, Dir: apt})
		if err != nil {
			return fmt.Errorf("apt index (install dpkg-dev): %w", err)
		}
		idx := stripStderr(out)
		if err := writeAtomic(filepath.Join(apt, "Packages"), idx); err != nil {
			return err
		}
		var gz bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
		zw.Write(idx)
		zw.Close()
		if err := writeAtomic(filepath.Join(apt, "Packages.gz"), gz.Bytes()); err != nil {
			return err
		}
	}
	return p.sums(dir)
}

// stripStderr drops dpkg-scanpackages' progress lines, which the runner
// captures together with the index.
func stripStderr(out []byte) []byte {
	var keep []string
	for _, l := range strings.SplitAfter(string(out), "\n") {
		if strings.HasPrefix(l, "dpkg-scanpackages: ") {
			continue
		}
		keep = append(keep, l)
	}
	return []byte(strings.Join(keep, ""))
}

// sums writes SHA256SUMS over every package and index served.
func (p *Publisher) sums(dir string) error {
	var lines []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if rel == "SHA256SUMS" || rel == "SHA256SUMS.asc" || strings.HasPrefix(filepath.Base(rel), ".") {
			return nil
		}
		sum, err := dist.FileSHA256(path)
		if err != nil {
			return err
		}
		lines = append(lines, sum+"  "+rel)
		return nil
	})
	if err != nil {
		return err
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i][66:] < lines[j][66:] })
	data := []byte(strings.Join(lines, "\n") + "\n")
	if err := writeAtomic(filepath.Join(dir, "SHA256SUMS"), data); err != nil {
		return err
	}
	if p.Sign != nil {
		sig, err := p.Sign(data)
		if err != nil {
			return fmt.Errorf("sign SHA256SUMS: %w", err)
		}
		return writeAtomic(filepath.Join(dir, "SHA256SUMS.asc"), sig)
	}
	return nil
}

func copyAtomic(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return writeAtomic(dst, b)
}

func writeAtomic(path string, data []byte) error { return dist.WriteFileAtomic(path, data, 0o644) }
