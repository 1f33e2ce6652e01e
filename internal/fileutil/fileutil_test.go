package fileutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCopy(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	os.WriteFile(src, []byte("bytes"), 0o644)
	if err := Copy(src, dst, 0o600, os.O_EXCL); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "bytes" {
		t.Errorf("copied %q", b)
	}
	if st, _ := os.Stat(dst); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
	// O_EXCL refuses an existing file; O_TRUNC replaces it.
	if err := Copy(src, dst, 0o600, os.O_EXCL); err == nil {
		t.Error("O_EXCL overwrote a file")
	}
	if err := Write(dst, strings.NewReader("b"), 0o600, os.O_TRUNC); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "b" {
		t.Errorf("truncated to %q", b)
	}
	if err := Copy(filepath.Join(dir, "missing"), dst, 0o600, os.O_TRUNC); err == nil {
		t.Error("copied a missing file")
	}
}
