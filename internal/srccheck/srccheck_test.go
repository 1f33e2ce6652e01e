package srccheck

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nokmem/nokmem/internal/fixture"
)

func TestFixtureEras(t *testing.T) {
	r := fixture.NewRuncRepo(t)
	cases := []struct {
		version string
		tags    []string
		patched bool
		ok      bool
		file    string
	}{
		{"v1.0.0-rc5", []string{"seccomp"}, false, false, "memory.go"},
		{"v1.0.0-rc5", []string{"seccomp", "nokmem"}, false, false, "memory.go"}, // the tag does not exist there
		{"v1.0.0-rc5", []string{"seccomp"}, true, true, "memory.go"},
		{"v1.0.0-rc9", []string{"seccomp"}, false, false, "kmem.go"},
		{"v1.0.0-rc9", []string{"seccomp", "nokmem"}, false, true, "kmem_disabled.go"},
		{"v1.0.0-rc92", []string{"seccomp", "selinux", "apparmor", "nokmem"}, false, true, "kmem_disabled.go"},
	}
	for _, c := range cases {
		dir := filepath.Join(t.TempDir(), "fs")
		fixture.Git(t, filepath.Dir(dir), "clone", "-q", "--branch", c.version, r.Dir, "src")
		src := filepath.Join(filepath.Dir(dir), "src", "libcontainer", "cgroups", "fs")
		if c.patched {
			os.WriteFile(filepath.Join(src, "memory.go"), []byte(fixture.MemoryGo(fixture.EraOf(c.version), true)), 0o644)
		}
		res, err := Check(src, c.tags)
		if err != nil {
			t.Fatal(err)
		}
		if res.OK() != c.ok || res.KmemFuncs["EnableKernelMemoryAccounting"] != c.file {
			t.Errorf("%s %v patched=%v: ok=%v funcs=%v findings=%v", c.version, c.tags, c.patched, res.OK(), res.KmemFuncs, res.Findings)
		}
		if !c.ok && !strings.Contains(res.Error(), "EnableKernelMemoryAccounting: is not a no-op") {
			t.Errorf("finding does not name the enabler: %s", res.Error())
		}
	}
}

func TestNoSelectedFiles(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "x_windows.go"), []byte("package fs\n"), 0o644)
	if _, err := Check(dir, nil); err == nil {
		t.Fatal("empty package accepted")
	}
}
