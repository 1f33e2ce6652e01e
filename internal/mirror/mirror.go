// Package mirror lays out an internal package mirror from the packages in
// dist/packages: a yum repository (metadata by createrepo_c) and a flat apt
// repository (index by dpkg-scanpackages, Release written here), signed so
// that clients check it: every RPM carries its own signature (made by
// internal/packaging), repomd.xml has repomd.xml.asc, the apt repository
// has InRelease (clearsigned) and Release.gpg. The public key and ready
// client configuration are published beside them.
//
// Only packages that carry a verified artifact are published (Admit,
// internal/packaging's Artifacts.Check); others are reported and left out.
// Publishing is incremental and never rewrites a published package: a
// package whose file name already exists with other bytes is an error.
// Packages are copied in first (each by rename); indexes and signatures
// are regenerated after, so an interrupted publish leaves a mirror whose
// indexes describe only complete files, and a re-run completes it.
//
//	<dir>/yum/el7/x86_64/*.rpm, repodata/ (+ repomd.xml.asc)
//	<dir>/apt/*.deb, Packages, Packages.gz, Release, InRelease, Release.gpg
//	<dir>/nokmem.asc, nokmem.gpg            the public key, armored and binary
//	<dir>/nokmem.repo                       yum/dnf: gpgcheck=1 repo_gpgcheck=1
//	<dir>/nokmem.sources, nokmem.list       apt: signed-by the keyring
//	<dir>/SHA256SUMS (and SHA256SUMS.asc)
package mirror

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/run"
)

// Layout paths inside the mirror.
const (
	YumDir = "yum/el7/x86_64"
	AptDir = "apt"
	// KeyName is the base name of the published public key (.asc, .gpg)
	// and of the client configuration (.repo, .sources, .list).
	KeyName = "nokmem"
	// Keyring is where the apt configuration expects the keyring.
	Keyring = "/usr/share/keyrings/nokmem.gpg"
)

// Result says what a publish did.
type Result struct {
	Added   []string
	Skipped []string // already published with the same bytes
	// Refused lists packages left out, each with the reason.
	Refused []string
	// Fingerprint is the signing key's, when signed.
	Fingerprint string
}

// Signer signs the repository metadata (internal/signing.Signer).
type Signer interface {
	Sign(data []byte) ([]byte, error)      // armored detached signature
	ClearSign(data []byte) ([]byte, error) // clearsigned text
	PublicKey() ([]byte, error)            // armored
	PublicKeyring() ([]byte, error)        // binary, for signed-by
	Fingerprint() string
}

// Publisher publishes packages.
type Publisher struct {
	Runner run.Runner
	// Signer signs the metadata; nil publishes an unsigned mirror, whose
	// clients need gpgcheck=0 or trusted=yes (the configuration says so).
	Signer Signer
	// URL is where clients reach the mirror directory (http(s):// or
	// file://), written into the client configuration; empty means
	// file://<dir>.
	URL string
	// Admit says whether a package may be published (nil error) or why
	// not; required, so that nothing unchecked reaches a mirror.
	Admit func(pkgPath string) error
	// Now is the Release date (tests fix it); nil means time.Now.
	Now func() time.Time
}

// ChangedError says that a published package would be rewritten.
type ChangedError struct{ Path, Published, New string }

func (e *ChangedError) Error() string {
	return fmt.Sprintf("%s is already published with sha256 %s; the new package has %s. A published package is never rewritten: raise the package release (NOKMEM_PACKAGE_RELEASE) instead", e.Path, e.Published, e.New)
}

// Publish copies every admitted package in pkgDir into the mirror at dir
// and regenerates the indexes, signatures and client configuration.
func (p *Publisher) Publish(ctx context.Context, pkgDir, dir string) (*Result, error) {
	if p.Admit == nil {
		return nil, errors.New("mirror: no package check configured (Admit)")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
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
		if err := p.Admit(src); err != nil {
			res.Refused = append(res.Refused, err.Error())
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
		if len(res.Refused) > 0 {
			return nil, fmt.Errorf("no package in %s carries a verified artifact:\n  %s", pkgDir, strings.Join(res.Refused, "\n  "))
		}
		return nil, fmt.Errorf("no packages in %s: run package first", pkgDir)
	}
	// Check everything before changing anything.
	for _, t := range todo {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := copyAtomic(t[0], t[1]); err != nil {
			return nil, err
		}
		res.Added = append(res.Added, t[1])
	}
	if err := p.index(ctx, dir); err != nil {
		return nil, err
	}
	if p.Signer != nil {
		res.Fingerprint = p.Signer.Fingerprint()
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
		repomd := filepath.Join(yum, "repodata", "repomd.xml")
		if err := p.signFile(repomd, repomd+".asc"); err != nil {
			return fmt.Errorf("sign %s: %w", repomd, err)
		}
	}
	apt := filepath.Join(dir, AptDir)
	if debs, _ := filepath.Glob(filepath.Join(apt, "*.deb")); len(debs) > 0 {
		out, err := p.Runner.Run(ctx, run.Cmd{Args: []string{"dpkg-scanpackages", "--multiversion", ".", "/dev/null"}, Dir: apt})
		if err != nil {
			return fmt.Errorf("apt index (install dpkg-dev): %w", err)
		}
		idx := stripStderr(out)
		var gz bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
		zw.Write(idx)
		zw.Close()
		if err := p.release(apt, map[string][]byte{"Packages": idx, "Packages.gz": gz.Bytes()}); err != nil {
			return fmt.Errorf("apt Release: %w", err)
		}
	}
	if err := p.clientConfig(dir); err != nil {
		return err
	}
	return p.sums(dir)
}

// release writes the indexes, then Release over them (the hashes apt
// checks every index against), then InRelease and Release.gpg: apt reads
// InRelease first and falls back to Release + Release.gpg.
func (p *Publisher) release(apt string, indexes map[string][]byte) error {
	names := make([]string, 0, len(indexes))
	for n, data := range indexes {
		if err := writeAtomic(filepath.Join(apt, n), data); err != nil {
			return err
		}
		names = append(names, n)
	}
	sort.Strings(names)
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	var b strings.Builder
	b.WriteString("Origin: nokmem\nLabel: nokmem\n")
	b.WriteString("Architectures: amd64\n")
	fmt.Fprintf(&b, "Date: %s\n", now().UTC().Format("Mon, 02 Jan 2006 15:04:05 UTC"))
	b.WriteString("Description: runc and kubelet without cgroup v1 kernel-memory accounting\n")
	for _, h := range []struct {
		field string
		new   func() hash.Hash
	}{{"MD5Sum", md5.New}, {"SHA1", sha1.New}, {"SHA256", sha256.New}, {"SHA512", sha512.New}} {
		fmt.Fprintf(&b, "%s:\n", h.field)
		for _, n := range names {
			d := h.new()
			d.Write(indexes[n])
			fmt.Fprintf(&b, " %s %d %s\n", hex.EncodeToString(d.Sum(nil)), len(indexes[n]), n)
		}
	}
	rel := []byte(b.String())
	if p.Signer == nil {
		for _, n := range []string{"InRelease", "Release.gpg"} {
			if err := os.Remove(filepath.Join(apt, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		return writeAtomic(filepath.Join(apt, "Release"), rel)
	}
	in, err := p.Signer.ClearSign(rel)
	if err != nil {
		return err
	}
	sig, err := p.Signer.Sign(rel)
	if err != nil {
		return err
	}
	// Release first: a client that sees the new InRelease finds the
	// indexes it names already in place.
	for _, f := range []struct {
		name string
		data []byte
	}{{"Release", rel}, {"Release.gpg", sig}, {"InRelease", in}} {
		if err := writeAtomic(filepath.Join(apt, f.name), f.data); err != nil {
			return err
		}
	}
	return nil
}

// signFile writes an armored detached signature of file to sigPath (or
// removes a stale one from an earlier signed publish when unsigned).
func (p *Publisher) signFile(file, sigPath string) error {
	if p.Signer == nil {
		if err := os.Remove(sigPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	sig, err := p.Signer.Sign(data)
	if err != nil {
		return err
	}
	return writeAtomic(sigPath, sig)
}

// clientConfig publishes the public key and the configuration a node
// needs: nokmem.repo for yum/dnf, nokmem.sources (deb822) and nokmem.list
// (one line) for apt.
func (p *Publisher) clientConfig(dir string) error {
	url := strings.TrimRight(p.URL, "/")
	if url == "" {
		url = "file://" + dir
	}
	files := map[string][]byte{}
	var header string
	if p.Signer != nil {
		pub, err := p.Signer.PublicKey()
		if err != nil {
			return err
		}
		ring, err := p.Signer.PublicKeyring()
		if err != nil {
			return err
		}
		files[KeyName+".asc"], files[KeyName+".gpg"] = pub, ring
		header = fmt.Sprintf("# Signing key fingerprint: %s\n# (check it against the one your administrators publish before trusting it)\n", p.Signer.Fingerprint())
	} else {
		header = "# UNSIGNED mirror (published without NOKMEM_SIGNING_KEY): clients cannot\n# tell its packages from anyone else's. Do not use it beyond a test.\n"
	}
	check := "gpgcheck=1\nrepo_gpgcheck=1\ngpgkey=" + url + "/" + KeyName + ".asc\n"
	signedBy := "Signed-By: " + Keyring + "\n"
	option := "signed-by=" + Keyring
	if p.Signer == nil {
		check, signedBy, option = "gpgcheck=0\nrepo_gpgcheck=0\n", "Trusted: yes\n", "trusted=yes"
	}
	files[KeyName+".repo"] = []byte("# nokmem: runc and kubelet without cgroup v1 kernel-memory accounting.\n" +
		"# Install: curl -fsSLo /etc/yum.repos.d/nokmem.repo " + url + "/nokmem.repo\n" + header +
		"[nokmem]\nname=nokmem (runc and kubelet without kernel-memory accounting)\n" +
		"baseurl=" + url + "/" + YumDir + "\nenabled=1\n" + check)
	install := "# Install: curl -fsSLo /etc/apt/sources.list.d/nokmem.sources " + url + "/nokmem.sources\n"
	if p.Signer != nil {
		install = "# Install: curl -fsSLo " + Keyring + " " + url + "/" + KeyName + ".gpg\n" +
			"#          curl -fsSLo /etc/apt/sources.list.d/nokmem.sources " + url + "/nokmem.sources\n"
	}
	files[KeyName+".sources"] = []byte("# nokmem: runc and kubelet without cgroup v1 kernel-memory accounting.\n" + install + header +
		"Types: deb\nURIs: " + url + "/" + AptDir + "/\nSuites: ./\n" + signedBy)
	files[KeyName+".list"] = []byte("deb [" + option + "] " + url + "/" + AptDir + " ./\n")
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := writeAtomic(filepath.Join(dir, n), files[n]); err != nil {
			return err
		}
	}
	if p.Signer == nil {
		for _, n := range []string{KeyName + ".asc", KeyName + ".gpg"} {
			if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	return nil
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
	return p.signFile(filepath.Join(dir, "SHA256SUMS"), filepath.Join(dir, "SHA256SUMS.asc"))
}

func copyAtomic(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return writeAtomic(dst, b)
}

func writeAtomic(path string, data []byte) error { return dist.WriteFileAtomic(path, data, 0o644) }
