package digest

import (
	"os"
	"path/filepath"
	"testing"
)

func TestFileAndBytesMatchSha256sum(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("nokmem\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// printf 'nokmem\n' | sha256sum
	const want = "69890a73d92274263467041defd763222f05845b7ae9db48c1693b2e89b431ca"
	if got, err := File(p); err != nil || got != want {
		t.Fatalf("File = %s, %v; want %s", got, err, want)
	}
	if got := Bytes([]byte("nokmem\n")); got != want {
		t.Fatalf("Bytes = %s; want %s", got, want)
	}
	if _, err := File(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("a missing file hashed")
	}
}
