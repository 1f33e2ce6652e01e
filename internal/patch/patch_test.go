package patch

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRealPatchesParse(t *testing.T) {
	s, err := LoadDirs("../../patches/runc")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"runc-memory-go-rc2.patch":     "3844070b5c2761c5338bbce8ad33504fc5c17a00a0934cbdd3a57fddc5888cbe",
		"runc-memory-go-rc3.patch":     "898fa0f4d0e731847c25dfd563b65dd72549d6db04814d0d591870bfc01be2f4",
		"runc-memory-go-rc4-rc5.patch": "d922675755bcb2a4599fd14468e11bfa188a041e46279c7bd46a5a93bc2f6794",
	}
	if got := strings.Join(s.Names(), " "); got != "runc-memory-go-rc2.patch runc-memory-go-rc3.patch runc-memory-go-rc4-rc5.patch" {
		t.Fatalf("patches: %s", got)
	}
	for name, base := range want {
		p, _ := s.Get(name)
		if p.BaseSHA256 != base || p.Target != "libcontainer/cgroups/fs/memory.go" {
			t.Errorf("%s: %+v", name, p)
		}
		if q, ok := s.ForContent(p.Target, base); !ok || q.Name != name {
			t.Errorf("ForContent(%s) did not find %s", base, name)
		}
	}
	// The rc3 patch keeps rc3's unique uint64 signature.
	b, _ := os.ReadFile("../../patches/runc/runc-memory-go-rc3.patch")
	if !strings.Contains(string(b), "+\treturn fmt.Errorf(\"kernel memory accounting disabled in this runc build\")") ||
		!strings.Contains(string(b), " func setKernelMemory(path string, kernelMemoryLimit uint64) error {") {
		t.Error("rc3 patch lost its uint64 signature or its stub")
	}
}

const sample = "package x\n\nfunc A() int {\n\treturn 1\n}\n"
const sampleAfter = "package x\n\nfunc A() int {\n\treturn 0\n}\n"
const sampleDiff = "--- a/x/a.go\n+++ b/x/a.go\n@@ -1,5 +1,5 @@\n package x\n \n func A() int {\n-\treturn 1\n+\treturn 0\n }\n"

func header(base, result string) string {
	return "# nokmem-patch: v1\n# target: x/a.go\n# base-sha256: " + base + "\n# result-sha256: " + result + "\n# summary: test\n#   continued\n"
}

func TestApplyChecksContentBothWays(t *testing.T) {
	p, err := Parse("t.patch", []byte(header(SHA256([]byte(sample)), SHA256([]byte(sampleAfter)))+sampleDiff))
	if err != nil {
		t.Fatal(err)
	}
	if p.Summary != "test continued" {
		t.Errorf("summary %q", p.Summary)
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "vendor/x"), 0o755)
	os.WriteFile(filepath.Join(root, "vendor/x/a.go"), []byte(sample), 0o600)
	if err := p.Apply(root, "vendor", nil); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(root, "vendor/x/a.go"))
	st, _ := os.Stat(filepath.Join(root, "vendor/x/a.go"))
	if string(got) != sampleAfter || st.Mode().Perm() != 0o600 {
		t.Fatalf("after apply: %q %v", got, st.Mode())
	}
	// Applying again meets other content: refused, naming file, hash and known hashes.
	err = p.Apply(root, "vendor", []string{"abc (t.patch)"})
	var ce *ContentError
	if !errors.As(err, &ce) || ce.File != "vendor/x/a.go" || ce.Found != SHA256([]byte(sampleAfter)) ||
		!strings.Contains(err.Error(), "abc (t.patch)") {
		t.Fatalf("want ContentError, got %v", err)
	}
	// A patch whose declared result disagrees with what it produces.
	bad, _ := Parse("bad.patch", []byte(header(SHA256([]byte(sample)), strings.Repeat("0", 64))+sampleDiff))
	os.WriteFile(filepath.Join(root, "vendor/x/a.go"), []byte(sample), 0o600)
	if err := bad.Apply(root, "vendor", nil); err == nil || !strings.Contains(err.Error(), "not the reviewed result") {
		t.Fatalf("inconsistent patch applied: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "vendor/x/a.go")); string(got) != sample {
		t.Fatal("a refused patch changed the file")
	}
}

func TestParseRejects(t *testing.T) {
	base := SHA256([]byte(sample))
	for name, text := range map[string]string{
		"no header":      sampleDiff,
		"bad hash":       header("xyz", base) + sampleDiff,
		"target differs": strings.Replace(header(base, base), "x/a.go", "y/b.go", 1) + sampleDiff,
		"escaping path":  strings.Replace(header(base, base), "x/a.go", "../a.go", 1) + sampleDiff,
		"unknown key":    "# nokmem-patch: v1\n# colour: red\n" + sampleDiff,
	} {
		if _, err := Parse(name, []byte(text)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
