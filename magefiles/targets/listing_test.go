package targets

import (
	"bytes"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nokmem/nokmem/matrix"
)

// matrix:list shows both projects, kubelet with its pin, the treatment
// expected (or that the content decides) and the Go.
func TestMatrixListShowsRuncAndKubelet(t *testing.T) {
	rm, err := matrix.Load("runc", "../../matrix", "")
	if err != nil {
		t.Fatal(err)
	}
	km, err := matrix.Load("kubelet", "../../matrix", "")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := writeMatrixList(&b, rm, km); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, re := range []string{
		`(?m)^runc\nVERSION +COMMIT +STRATEGY`,
		`(?m)^v1\.0\.0-rc9 +[0-9a-f]{12} +tag +seccomp,nokmem`,
		`(?m)^kubelet .*\nVERSION +PINNED +STRATEGY +GO$`,
		`(?m)^v1\.13\.12 +unpinned +patch +1\.11$`,
		`(?m)^v1\.9\.0 +925c127ec6b9 +patch +1\.9$`,
		`(?m)^v1\.21\.2 +092fbfbf5342 +by content +from the tree$`,
		`(?m)^v1\.21\.14 +0f77da5bd480 +none`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("matrix:list lacks %s:\n%s", re, out)
		}
	}
	if n := strings.Count(out, "\nv1."); n != len(rm.Releases)+len(km.Releases) {
		t.Errorf("%d entries listed, want %d", n, len(rm.Releases)+len(km.Releases))
	}
}

// -h build:runc prints the usage the way the README runs it and every
// version that needs a build, as the matrix has them.
func TestHelpOfBuildRuncListsItsVersions(t *testing.T) {
	out, err := mage(t, nil, "-h", "build:runc")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out, "Usage:\n\n\tgo tool mage build:runc <version>\n") {
		t.Errorf("usage line:\n%s", out)
	}
	m, err := matrix.Load("runc", filepath.Join("..", "..", "matrix"), "")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join(append(m.Tags(matrix.StrategyPatch), m.Tags(matrix.StrategyTag)...), ", ")
	if !strings.Contains(out, "Versions: "+want+" (") {
		t.Errorf("-h build:runc does not list %s:\n%s", want, out)
	}
}
