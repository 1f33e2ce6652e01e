package fileutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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

// An executable written while other goroutines fork can be run at once:
// without the fork lock, a child forked in the window inherits the write
// descriptor and the exec fails with ETXTBSY ("text file busy").
func TestExecutableRunsWhileOthersFork(t *testing.T) {
	truePath, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true(1) to copy: ", err)
	}
	dir := t.TempDir()
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				exec.Command(truePath).Run()
			}
		}()
	}
	defer func() { stop(); wg.Wait() }()
	for i := 0; i < 200; i++ {
		dst := filepath.Join(dir, fmt.Sprint("true-", i))
		if err := Copy(truePath, dst, 0o755, os.O_EXCL); err != nil {
			t.Fatal(err)
		}
		if err := exec.Command(dst).Run(); err != nil {
			t.Fatalf("copy %d: %v", i, err)
		}
	}
}
