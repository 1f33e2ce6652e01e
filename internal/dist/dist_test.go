package dist

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPublishReplacesAtomicallyAndSumsAreChecked(t *testing.T) {
	root := t.TempDir()
	for i, content := range []string{"first", "second"} {
		s, err := NewStaging(root, "runc", "v1.0.0-rc9")
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(s.Path("runc"), []byte(content), 0o755)
		if err := s.WriteJSON(ProvenanceFile, map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
		dir, err := s.Publish()
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "runc")); string(b) != content {
			t.Fatalf("published %q", b)
		}
	}
	entries, _ := os.ReadDir(root)
	if len(entries) != 1 {
		t.Fatalf("leftovers in dist: %v", entries)
	}
	dir := Dir(root, "runc", "v1.0.0-rc9")
	sums, err := CheckSums(dir)
	if err != nil || len(sums) != 2 {
		t.Fatalf("%v %v", sums, err)
	}
	os.WriteFile(filepath.Join(dir, "extra"), nil, 0o644)
	if _, err := CheckSums(dir); err == nil || !strings.Contains(err.Error(), "not listed") {
		t.Fatalf("extra file: %v", err)
	}
	os.Remove(filepath.Join(dir, "extra"))
	os.WriteFile(filepath.Join(dir, "runc"), []byte("evil"), 0o755)
	if _, err := CheckSums(dir); err == nil || !strings.Contains(err.Error(), "modified") {
		t.Fatalf("modified file: %v", err)
	}
}

func TestAbortAndCleanStale(t *testing.T) {
	root := t.TempDir()
	s, _ := NewStaging(root, "runc", "v1")
	s.Abort()
	s2, _ := NewStaging(root, "runc", "v2")
	os.WriteFile(s2.Path("runc"), []byte("half"), 0o644)
	if err := CleanStale(root); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Fatalf("left: %v", entries)
	}
}
