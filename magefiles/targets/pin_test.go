package targets

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/fixture"
)

// matrix:pin, run as a user would: the tag is resolved through
// NOKMEM_KUBERNETES_REPO and the commit written into the overlay the entry
// came from, with its comment; the project's matrix is untouched.
func TestMatrixPinWritesTheReviewedCommit(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "kubernetes")
	os.MkdirAll(repo, 0o755)
	fixture.Git(t, repo, "init", "-q", "-b", "master")
	writeFile(t, filepath.Join(repo, "README"), "k\n")
	fixture.Git(t, repo, "add", "-A")
	fixture.Git(t, repo, "commit", "-q", "-m", "one")
	fixture.Git(t, repo, "tag", "-a", "-m", "v1.13.12", "v1.13.12")
	commit := fixture.Git(t, repo, "rev-parse", "v1.13.12^{commit}")
	overlay := t.TempDir()
	writeFile(t, filepath.Join(overlay, "kubelet.yaml"), "# my fork\napiVersion: nokmem/v1\nkind: KubeletMatrix\nreleases:\n- version: v1.13.12\n  commit: \"\"\n")
	before, _ := os.ReadFile("../../matrix/kubelet.yaml")
	env := []string{"NOKMEM_KUBERNETES_REPO=" + repo, "NOKMEM_MATRIX_OVERLAY=" + overlay, "NOKMEM_CACHE=" + t.TempDir(), "NOKMEM_DIST=" + filepath.Join(t.TempDir(), "dist")}
	out, err := mage(t, env, "matrix:pin", "kubelet", "v1.13.12")
	if err != nil || !strings.Contains(out, "kubelet v1.13.12 pinned to "+commit) {
		t.Fatalf("%v\n%s", err, out)
	}
	got, _ := os.ReadFile(filepath.Join(overlay, "kubelet.yaml"))
	if !strings.HasPrefix(string(got), "# my fork\n") || !strings.Contains(string(got), "  commit: "+commit+"  # matrix:pin ") {
		t.Fatalf("overlay:\n%s", got)
	}
	if after, _ := os.ReadFile("../../matrix/kubelet.yaml"); string(after) != string(before) {
		t.Fatal("matrix/kubelet.yaml changed")
	}
	if out, err := mage(t, env, "matrix:pin", "docker", "v1.13.12"); err == nil || !strings.Contains(out, "must be kubelet or runc") {
		t.Errorf("unknown project: %v\n%s", err, out)
	}
}

// release and publish:mirror refuse a dist/ with an unpinned artifact,
// unless NOKMEM_ALLOW_UNPINNED=1.
func TestPublishingRefusesUnpinnedArtifacts(t *testing.T) {
	distDir := filepath.Join(t.TempDir(), "dist")
	dir := dist.Dir(distDir, "kubelet", "v1.13.12")
	os.MkdirAll(dir, 0o755)
	b, _ := json.Marshal(dist.Provenance{Schema: dist.ProvenanceSchema, Project: "kubelet", Version: "v1.13.12",
		Source: dist.SourceInfo{Commit: strings.Repeat("a", 40), Pinned: "unpinned"}})
	writeFile(t, filepath.Join(dir, dist.ProvenanceFile), string(b))
	env := []string{"NOKMEM_DIST=" + distDir, "NOKMEM_CACHE=" + t.TempDir(), "NOKMEM_GITHUB_REPO=example/nokmem"}
	for _, args := range [][]string{{"release", "v0.1.0"}, {"publish:mirror", filepath.Join(t.TempDir(), "mirror")}} {
		out, err := mage(t, env, args...)
		if err == nil || !strings.Contains(out, args[0]+" refuses artifacts built from unpinned matrix entries") ||
			!strings.Contains(out, "go tool mage matrix:pin kubelet v1.13.12") {
			t.Errorf("%v: %v\n%s", args, err, out)
		}
	}
	out, _ := mage(t, append(env, "NOKMEM_ALLOW_UNPINNED=1"), "release", "v0.1.0")
	if strings.Contains(out, "refuses artifacts built from unpinned") || !strings.Contains(out, "WARNING: release publishes kubelet v1.13.12") {
		t.Errorf("NOKMEM_ALLOW_UNPINNED=1:\n%s", out)
	}
}
