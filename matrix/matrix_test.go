package matrix

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLoadRealMatrix(t *testing.T) {
	m, err := Load("runc", ".")
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Releases[0].Version; got != "v1.0.0-rc2" {
		t.Errorf("first release %s, want v1.0.0-rc2", got)
	}
	if got := m.Releases[len(m.Releases)-1].Version; got != "v1.0.3" {
		t.Errorf("last release %s, want v1.0.3", got)
	}
	want := map[string]struct {
		s    Strategy
		tags string
	}{
		"v1.0.0-rc3":  {StrategyPatch, "seccomp"},
		"v1.0.0-rc5":  {StrategyPatch, "seccomp"},
		"v1.0.0-rc6":  {StrategyTag, "seccomp,nokmem"},
		"v1.0.0-rc9":  {StrategyTag, "seccomp,nokmem"},
		"v1.0.0-rc92": {StrategyTag, "seccomp,selinux,apparmor,nokmem"},
		"v1.0.0-rc93": {StrategyTag, "seccomp,nokmem"},
		"v1.0.0-rc94": {StrategyNone, "seccomp"},
	}
	for v, w := range want {
		r, ok := m.Lookup(v)
		if !ok {
			t.Fatalf("%s missing", v)
		}
		if r.Strategy != w.s || strings.Join(r.BuildTags, ",") != w.tags {
			t.Errorf("%s: %s %v, want %s %s", v, r.Strategy, r.BuildTags, w.s, w.tags)
		}
	}
	rc10, _ := m.Lookup("v1.0.0-rc10")
	rc90, _ := m.Lookup("v1.0.0-rc90")
	if rc10.Commit != rc90.Commit {
		t.Error("rc10 and rc90 are one upstream commit")
	}
	// Every patch the matrix names exists.
	for _, r := range m.Releases {
		for _, p := range r.Patches {
			if _, err := os.Stat(filepath.Join("..", "patches", "runc", p)); err != nil {
				t.Errorf("%s names missing patch %s", r.Version, p)
			}
		}
	}
}

func TestVersionOrderTreatsRCNumerically(t *testing.T) {
	tags := []string{"v1.0.0", "v1.0.0-rc10", "v1.0.0-rc9", "v1.0.0-rc92", "v1.0.0-rc2", "v1.0.1"}
	slices.SortFunc(tags, func(a, b string) int { return MustVersion(a).Compare(MustVersion(b)) })
	if got := strings.Join(tags, " "); got != "v1.0.0-rc2 v1.0.0-rc9 v1.0.0-rc10 v1.0.0-rc92 v1.0.0 v1.0.1" {
		t.Fatalf("order: %s", got)
	}
}

func TestParseVersionRejects(t *testing.T) {
	for _, bad := range []string{"", "1.0.0-rc9", "v1.0.0-rc9;id", "v1.0.0-rc9 ", "$(id)", "v1.0", "latest", "v1.0.0-rc9\n"} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestRuncEra(t *testing.T) {
	for v, want := range map[string]Strategy{"v1.0.0-rc5": StrategyPatch, "v1.0.0-rc6": StrategyTag, "v1.0.0-rc93": StrategyTag, "v1.0.0-rc94": StrategyNone, "v1.1.0": StrategyNone} {
		if got := RuncEra(MustVersion(v)); got != want {
			t.Errorf("%s: %s, want %s", v, got, want)
		}
	}
}

func TestInvalidReportsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	data, _ := os.ReadFile("testdata/invalid-many.yaml")
	os.WriteFile(filepath.Join(dir, "runc.yaml"), data, 0o644)
	_, err := Load("runc", dir)
	if err == nil {
		t.Fatal("invalid matrix loaded")
	}
	for _, want := range []string{
		`apiVersion is "nokmem/v0"`,
		`commit "d736ef14" is not a full 40-hex commit`,
		"strategy patch must not list the nokmem tag",
		`strategy "patch" contradicts upstream history`,
		"duplicate version",
		"strategy tag needs the nokmem build tag",
		`go "go1.12" is not a Go minor`,
		`layout "modules"`,
		"is not a release tag",
		`toolchain "newest" is not era or host`,
		"(v1.0.0-rc10): static is missing",
		`static tag "static build" is not a plain word`,
		`static tag "seccomp" is not a plain word, or repeats a build tag`,
		`installSuffix "../x" is not a plain word`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestUnknownKeyRejected(t *testing.T) {
	dir := t.TempDir()
	data, _ := os.ReadFile("testdata/invalid-unknown-key.yaml")
	os.WriteFile(filepath.Join(dir, "runc.yaml"), data, 0o644)
	_, err := Load("runc", dir)
	if err == nil || !strings.Contains(err.Error(), "buildTag") {
		t.Fatalf("unknown key not reported: %v", err)
	}
}

func TestOverlayAddsAndReplaces(t *testing.T) {
	dir := t.TempDir()
	data, _ := os.ReadFile("testdata/valid-overlay.yaml")
	os.WriteFile(filepath.Join(dir, "runc.yaml"), data, 0o644)
	m, err := Load("runc", ".", dir)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := m.Lookup("v1.0.0-rc9")
	if r.Commit != strings.Repeat("1", 40) || r.Origin != filepath.Join(dir, "runc.yaml") {
		t.Errorf("overlay did not replace rc9: %+v", r)
	}
	if _, ok := m.Lookup("v1.0.0-rc11"); !ok {
		t.Error("overlay did not add rc11")
	}
	if _, ok := m.Lookup("v1.0.0-rc5"); !ok {
		t.Error("overlay dropped base entries")
	}
}

func TestLoadRealKubeletMatrix(t *testing.T) {
	m, err := Load("kubelet", ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"v1.9.11", "v1.13.12", "v1.14.10", "v1.21.1", "v1.21.2", "v1.21.14"} {
		if _, ok := m.Lookup(v); !ok {
			t.Errorf("%s missing", v)
		}
	}
	r, _ := m.Lookup("v1.13.12")
	if r.Strategy != StrategyPatch {
		t.Errorf("v1.13.12 expectation %q", r.Strategy)
	}
	r, _ = m.Lookup("v1.21.14")
	if r.Strategy != StrategyNone {
		t.Errorf("v1.21.14 expectation %q", r.Strategy)
	}
	if r, _ := m.Lookup("v1.21.1"); r.Commit != "5e58841cce77d4bc13713ad2b91fa0d961e69192" {
		t.Errorf("v1.21.1 pin %q", r.Commit)
	}
	if r, _ := m.Lookup("v1.18.20"); r.Commit != "" {
		t.Error("v1.18.20 has conflicting published commits and must stay unpinned")
	}
}
