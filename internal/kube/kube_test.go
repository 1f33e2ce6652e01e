package kube

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nokmem/nokmem/internal/patch"
)

func write(t *testing.T, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, rel)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestVendoredRunc(t *testing.T) {
	cases := []struct {
		name, file, content, rev, from string
	}{
		{"godeps", "Godeps/Godeps.json", `{"Deps":[{"ImportPath":"github.com/other/x","Rev":"1"},{"ImportPath":"github.com/opencontainers/runc/libcontainer","Rev":"871ba2e58e24314d1fab4517a80410191ba5ad01"}]}`,
			"871ba2e58e24314d1fab4517a80410191ba5ad01", "Godeps/Godeps.json"},
		{"go.mod require", "go.mod", "module k8s.io/kubernetes\n\ngo 1.13\n\nrequire github.com/opencontainers/runc v1.0.0-rc9\n", "v1.0.0-rc9", "go.mod require"},
		{"go.mod replace wins", "go.mod", "module k8s.io/kubernetes\n\nrequire github.com/opencontainers/runc v1.0.0-rc9\n\nreplace github.com/opencontainers/runc => github.com/opencontainers/runc v1.0.0-rc10\n",
			"v1.0.0-rc10", "go.mod replace github.com/opencontainers/runc"},
	}
	for _, c := range cases {
		dir := t.TempDir()
		write(t, dir, c.file, c.content)
		rev, from, err := VendoredRunc(dir)
		if err != nil || rev != c.rev || from != c.from {
			t.Errorf("%s: %q %q %v", c.name, rev, from, err)
		}
	}
	if _, _, err := VendoredRunc(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a Kubernetes tree") {
		t.Errorf("empty tree: %v", err)
	}
}

func TestGoVersion(t *testing.T) {
	for _, c := range []struct{ file, content, want string }{
		{"build/build-image/cross/VERSION", "v1.11.13-1\n", "1.11.13"},
		{"build/dependencies.yaml", "dependencies:\n  - name: \"golang: upstream version\"\n    version: 1.16.7\n", "1.16.7"},
		{".go-version", "1.22.1\n", "1.22.1"},
	} {
		dir := t.TempDir()
		write(t, dir, c.file, c.content)
		got, from, err := GoVersion(dir)
		if err != nil || got != c.want || from != c.file {
			t.Errorf("%s: %q %q %v", c.file, got, from, err)
		}
	}
	if _, _, err := GoVersion(t.TempDir()); err == nil {
		t.Error("tree without a Go version accepted")
	}
	if Minor("go1.13.9") != "1.13" || Minor("1.26.8") != "1.26" {
		t.Error("Minor")
	}
}

func TestIdentifyRefusesUnknownLayoutAndContent(t *testing.T) {
	set, _ := patch.LoadDirs("../../patches/runc")
	dir := t.TempDir()
	write(t, dir, "go.mod", "module k8s.io/kubernetes\n\nrequire github.com/opencontainers/runc v1.0.0-rc9\n")
	if _, err := Identify(dir, set); err == nil || !strings.Contains(err.Error(), "unrecognised vendored layout") {
		t.Fatalf("no vendor: %v", err)
	}
	write(t, dir, FSDir+"/memory.go", "package fs\n\nconst f = \"memory.kmem.limit_in_bytes\"\n\nfunc EnableKernelMemoryAccounting(path string) error { return write(path, f) }\n\nfunc write(p, f string) error { return nil }\n")
	_, err := Identify(dir, set)
	var u *UnknownContentError
	if !errors.As(err, &u) || u.Revision != "v1.0.0-rc9" || len(u.Known) != 3 {
		t.Fatalf("unknown content: %v", err)
	}
}
