// Package packagingtest makes packages that did not come from
// packaging.Build, for tests of what release and mirror accept.
package packagingtest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // register the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // register the rpm packager
)

// Stray writes a package of format ("rpm" or "deb") named name at version
// (release 1) into dir, with binary installed at dst, and returns its
// path, named as nfpm names it.
func Stray(t testing.TB, dir, format, name, version, dst string, binary []byte) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "payload")
	if err := os.WriteFile(src, binary, 0o755); err != nil {
		t.Fatal(err)
	}
	info := nfpm.WithDefaults(&nfpm.Info{Name: name, Arch: "amd64", Platform: "linux", Version: version, Release: "1",
		Maintainer: "mallory <mallory@example.invalid>", Description: "not from packaging.Build",
		Overridables: nfpm.Overridables{Contents: files.Contents{{Source: src, Destination: dst, FileInfo: &files.ContentFileInfo{Mode: 0o755}}}}})
	return Write(t, dir, format, info)
}

// Write writes the package info describes, in format (rpm, deb), into dir
// under its conventional file name, and returns its path.
func Write(t testing.TB, dir, format string, info *nfpm.Info) string {
	t.Helper()
	pkgr, err := nfpm.Get(format)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, pkgr.ConventionalFileName(info))
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pkgr.Package(info, f); err != nil {
		t.Fatal(err)
	}
	return p
}

// Main runs a test binary's tests with HOME isolated (IsolateHome): call it
// from TestMain.
func Main(m *testing.M) {
	cleanup, err := IsolateHome()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// IsolateHome points HOME at a fresh temporary directory for a test
// binary (call it from TestMain), keeping the Go caches where they were:
// Debian's rpm keeps its database in ~/.rpmdb (%_dbpath), so every rpm
// query, rpmlint and gpg would otherwise write into the real home. The
// returned function removes the directory.
func IsolateHome() (func(), error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return nil, err
	}
	config, err := os.UserConfigDir()
	if err != nil {
		return nil, err
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return nil, err
	}
	for k, v := range map[string]string{"GOCACHE": filepath.Join(cache, "go-build"), "GOPATH": filepath.Join(home, "go"),
		"GOENV": filepath.Join(config, "go", "env"), "XDG_CACHE_HOME": cache} {
		if os.Getenv(k) == "" {
			os.Setenv(k, v)
		}
	}
	tmp, err := os.MkdirTemp("", "nokmem-test-home-")
	if err != nil {
		return nil, err
	}
	os.Setenv("HOME", tmp)
	return func() { os.RemoveAll(tmp) }, nil
}
