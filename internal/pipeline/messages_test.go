package pipeline

import (
	"strings"
	"testing"

	"github.com/nokmem/nokmem/matrix"
)

// The refusal of an unknown kubelet names every entry of the real matrix,
// also those whose treatment the vendored content decides (v1.21.2).
func TestNotInMatrixNamesEveryEntry(t *testing.T) {
	c := &Config{MatrixDir: "../../matrix"}
	_, err := c.loadRelease("kubelet", "v1.8.0")
	if !isUser(err) {
		t.Fatalf("want a user error, got %v", err)
	}
	m, lerr := matrix.Load("kubelet", "../../matrix", "")
	if lerr != nil {
		t.Fatal(lerr)
	}
	for _, r := range m.Releases {
		if !strings.Contains(err.Error(), r.Version+",") && !strings.Contains(err.Error(), r.Version+".") {
			t.Errorf("%s (strategy %q) is not named: %v", r.Version, r.Strategy, err)
		}
	}
	if !strings.Contains(err.Error(), "Decided by the vendored content when built: v1.21.2") {
		t.Errorf("content-decided entries: %v", err)
	}
	// runc has no such entries, and says nothing about them.
	if _, err := c.loadRelease("runc", "v9.9.9"); err == nil || strings.Contains(err.Error(), "vendored content") {
		t.Errorf("runc: %v", err)
	}
}
