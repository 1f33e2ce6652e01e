package dist

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nokmem/nokmem/internal/owner"
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
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Fatalf("abort left: %v", entries)
	}

	// A live run's staging (this process) is kept, whatever its age.
	live, _ := NewStaging(root, "runc", "v2")
	os.WriteFile(live.Path("runc"), []byte("half"), 0o644)
	long := time.Now().Add(-2 * UncheckableAge)
	os.Chtimes(live.dir, long, long)

	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	me := owner.Self()
	deadID, reused, elsewhere := me, me, me
	deadID.PID = dead.Process.Pid
	reused.Start++
	elsewhere.Host = "0badc0de"
	if elsewhere.Host == me.Host {
		elsewhere.Host = "0badf00d"
	}
	mk := func(name string, mtime time.Time) string {
		p := filepath.Join(root, name)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(p, "runc"), []byte("half"), 0o644)
		os.Chtimes(p, mtime, mtime)
		return p
	}
	now := time.Now()
	gone := []string{
		mk(".staging-runc-v3-1"+ownerMark+deadID.String(), now),
		mk(".staging-runc-v4-1"+ownerMark+reused.String(), now),
		mk(".staging-runc-v5-1"+ownerMark+elsewhere.String(), long),
		mk(".staging-runc-v6-123", long), // no owner recorded
	}
	kept := []string{
		live.dir,
		mk(".staging-runc-v7-1"+ownerMark+elsewhere.String(), now),
		mk(".staging-runc-v8-123", now),
		mk("runc", long),
	}
	removed, err := CleanStale(root)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(removed)
	if strings.Join(removed, " ") != strings.Join(gone, " ") {
		t.Errorf("removed:\n%s\nwant:\n%s", strings.Join(removed, "\n"), strings.Join(gone, "\n"))
	}
	for _, p := range gone {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s survived", filepath.Base(p))
		}
	}
	for _, p := range kept {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed: %v", filepath.Base(p), err)
		}
	}
	// The live run can still publish.
	if _, err := live.Publish(); err != nil {
		t.Fatal(err)
	}
}
