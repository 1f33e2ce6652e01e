package pinning

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/fixture"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/matrix"
)

const sha = "0123456789abcdef0123456789abcdef01234567"

// Pinning the real matrix changes exactly one line and keeps every comment.
func TestSetCommitChangesOneLineOfTheRealMatrix(t *testing.T) {
	before, err := os.ReadFile("../../matrix/kubelet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	after, err := SetCommit(before, "v1.13.12", sha, "matrix:pin 2026-01-02: reviewed")
	if err != nil {
		t.Fatal(err)
	}
	b, a := strings.Split(string(before), "\n"), strings.Split(string(after), "\n")
	if len(a) != len(b) {
		t.Fatalf("line count %d → %d", len(b), len(a))
	}
	var changed []string
	for i := range b {
		if a[i] != b[i] {
			changed = append(changed, b[i]+" → "+a[i])
		}
	}
	if want := `  commit: "" → ` + "  commit: " + sha + "  # matrix:pin 2026-01-02: reviewed"; len(changed) != 1 || changed[0] != want {
		t.Fatalf("changed lines: %q", changed)
	}
	f, err := matrix.Decode(strings.NewReader(string(after)))
	if err != nil {
		t.Fatal(err)
	}
	if errs := matrix.Validate(f, "kubelet"); len(errs) > 0 {
		t.Fatal(errs)
	}
	for _, r := range f.Releases {
		if r.Version == "v1.13.12" && r.Commit != sha {
			t.Fatalf("v1.13.12 commit %q", r.Commit)
		}
	}
}

func TestSetCommitAddsAMissingKeyAndRefusesFlowStyle(t *testing.T) {
	in := "apiVersion: nokmem/v1\nkind: KubeletMatrix\nreleases:\n# the user's note\n- version: v1.13.12\n  strategy: patch\n- version: v1.14.10\n"
	out, err := SetCommit([]byte(in), "v1.13.12", sha, "why")
	if err != nil {
		t.Fatal(err)
	}
	want := "apiVersion: nokmem/v1\nkind: KubeletMatrix\nreleases:\n# the user's note\n- version: v1.13.12\n  commit: " + sha + "  # why\n  strategy: patch\n- version: v1.14.10\n"
	if string(out) != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out, want)
	}
	if _, err := SetCommit([]byte("releases:\n- {version: v1.13.12, commit: \"\"}\n"), "v1.13.12", sha, "why"); err == nil || !strings.Contains(err.Error(), "flow style") {
		t.Fatalf("flow style: %v", err)
	}
	if _, err := SetCommit([]byte(in), "v9.9.9", sha, "why"); err == nil {
		t.Fatal("pinned a version that is not there")
	}
}

// kubeRepo is a repository with tag v1.13.12 and a matrix naming it
// unpinned, under a header comment.
func kubeRepo(t *testing.T) (repo, matrixDir string) {
	repo = filepath.Join(t.TempDir(), "kubernetes")
	os.MkdirAll(repo, 0o755)
	fixture.Git(t, repo, "init", "-q", "-b", "master")
	os.WriteFile(filepath.Join(repo, "README"), []byte("k\n"), 0o644)
	fixture.Git(t, repo, "add", "-A")
	fixture.Git(t, repo, "commit", "-q", "-m", "one")
	fixture.Git(t, repo, "tag", "-a", "-m", "v1.13.12", "v1.13.12")
	matrixDir = t.TempDir()
	os.WriteFile(filepath.Join(matrixDir, "kubelet.yaml"), []byte("# header kept\napiVersion: nokmem/v1\nkind: KubeletMatrix\nreleases:\n- version: v1.13.12\n  commit: \"\"\n  strategy: patch  # expectation\n"), 0o644)
	return repo, matrixDir
}

func pinReq(repo, matrixDir, distDir string) Request {
	return Request{Project: "kubelet", Version: "v1.13.12", MatrixDir: matrixDir, RepoURL: repo, Setting: "NOKMEM_KUBERNETES_REPO",
		CacheDir: filepath.Join(distDir, "..", "cache"), DistDir: distDir, Runner: run.Local{}, Now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func TestPinResolvesTheTagAndWritesTheMatrix(t *testing.T) {
	repo, md := kubeRepo(t)
	commit := fixture.Git(t, repo, "rev-parse", "v1.13.12^{commit}")
	distDir := filepath.Join(t.TempDir(), "dist")
	res, err := Pin(context.Background(), pinReq(repo, md, distDir))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(md, "kubelet.yaml"))
	want := "# header kept\napiVersion: nokmem/v1\nkind: KubeletMatrix\nreleases:\n- version: v1.13.12\n  commit: " + commit +
		"  # matrix:pin 2026-01-02: refs/tags/v1.13.12 at " + repo + "\n  strategy: patch  # expectation\n"
	if res.Commit != commit || res.Already || res.Reviewed != "" || string(got) != want {
		t.Fatalf("result %+v, file:\n%s", res, got)
	}
	if res, err := Pin(context.Background(), pinReq(repo, md, distDir)); err != nil || !res.Already {
		t.Fatalf("second pin: %+v %v", res, err)
	}
	// A pinned entry is never re-pinned to where a moved tag points.
	fixture.Git(t, repo, "commit", "-q", "--allow-empty", "-m", "two")
	fixture.Git(t, repo, "tag", "-f", "-a", "-m", "moved", "v1.13.12")
	if _, err := Pin(context.Background(), pinReq(repo, md, distDir)); err == nil || !strings.Contains(err.Error(), "supply-chain event") {
		t.Fatalf("moved tag: %v", err)
	}
	if again, _ := os.ReadFile(filepath.Join(md, "kubelet.yaml")); string(again) != want {
		t.Fatal("the matrix changed")
	}
}

// The review is of the artifact in dist/: a tag that moved since it was
// built is not pinned.
func TestPinRefusesWhenTheReviewedArtifactCameFromAnotherCommit(t *testing.T) {
	repo, md := kubeRepo(t)
	distDir := filepath.Join(t.TempDir(), "dist")
	writeProv(t, distDir, "kubelet", "v1.13.12", "unpinned", sha)
	before, _ := os.ReadFile(filepath.Join(md, "kubelet.yaml"))
	if _, err := Pin(context.Background(), pinReq(repo, md, distDir)); err == nil || !strings.Contains(err.Error(), "was built from "+sha) {
		t.Fatalf("want a refusal naming the built commit, got %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(md, "kubelet.yaml")); string(after) != string(before) {
		t.Fatal("the matrix changed")
	}
	commit := fixture.Git(t, repo, "rev-parse", "v1.13.12^{commit}")
	writeProv(t, distDir, "kubelet", "v1.13.12", "unpinned", commit)
	res, err := Pin(context.Background(), pinReq(repo, md, distDir))
	if err != nil || res.Reviewed != dist.Dir(distDir, "kubelet", "v1.13.12") {
		t.Fatalf("%+v %v", res, err)
	}
	if got, _ := os.ReadFile(filepath.Join(md, "kubelet.yaml")); !strings.Contains(string(got), "as built and verified in "+res.Reviewed) {
		t.Fatalf("matrix:\n%s", got)
	}
}

func writeProv(t *testing.T, distDir, project, version, pinned, commit string) {
	t.Helper()
	dir := dist.Dir(distDir, project, version)
	os.MkdirAll(dir, 0o755)
	b, _ := json.Marshal(dist.Provenance{Schema: dist.ProvenanceSchema, Project: project, Version: version,
		Source: dist.SourceInfo{Commit: commit, Pinned: pinned}})
	if err := os.WriteFile(filepath.Join(dir, dist.ProvenanceFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCheckPublishableRefusesUnpinnedArtifacts(t *testing.T) {
	distDir := t.TempDir()
	writeProv(t, distDir, "runc", "v1.0.0-rc9", "pinned", sha)
	if u, err := CheckPublishable(distDir, "release", false); err != nil || len(u) != 0 {
		t.Fatalf("pinned artifacts refused: %v %v", u, err)
	}
	writeProv(t, distDir, "kubelet", "v1.13.12", "unpinned", sha)
	_, err := CheckPublishable(distDir, "publish:mirror", false)
	var ue *UnpinnedError
	if !errors.As(err, &ue) || len(ue.Unpinned) != 1 {
		t.Fatalf("want an UnpinnedError, got %v", err)
	}
	for _, w := range []string{"publish:mirror refuses", "kubelet v1.13.12 (commit " + sha, "go tool mage matrix:pin kubelet v1.13.12", "NOKMEM_ALLOW_UNPINNED=1"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("message lacks %q: %v", w, err)
		}
	}
	if u, err := CheckPublishable(distDir, "release", true); err != nil || len(u) != 1 {
		t.Fatalf("allowed: %v %v", u, err)
	}
}
