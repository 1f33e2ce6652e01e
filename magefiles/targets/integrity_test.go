package targets

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nokmem/nokmem/internal/attest"
	"github.com/nokmem/nokmem/internal/dist"
)

// published writes dist/runc/<version>/ as a build publishes it.
func published(t *testing.T, root, version string) string {
	t.Helper()
	dir := dist.Dir(root, "runc", version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "runc"), "ELF "+version)
	sum := dist.SHA256Hex([]byte("ELF " + version))
	writeFile(t, filepath.Join(dir, dist.ReportFile), `{"passed": true, "verdict": "nokmem", "sha256": "`+sum+`"}`)
	prov := &dist.Provenance{Schema: dist.ProvenanceSchema, Project: "runc", Version: version, Strategy: "tag", InputKey: strings.Repeat("ab", 32),
		Source:   dist.SourceInfo{URL: "https://github.com/opencontainers/runc.git", Tag: version, Commit: strings.Repeat("d", 40)},
		Output:   dist.OutputInfo{File: "runc", SHA256: sum},
		Verified: dist.VerifiedInfo{Passed: true, Verdict: "nokmem", Dynamic: "pass"}}
	b, _ := json.Marshal(prov)
	writeFile(t, filepath.Join(dir, dist.ProvenanceFile), string(b))
	if err := attest.Write(dir, prov, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := dist.WriteSums(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// stdout runs f and returns what it printed.
func stdout(t *testing.T, f func() error) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() { b, _ := io.ReadAll(r); done <- string(b) }()
	ferr := f()
	os.Stdout = old
	w.Close()
	return <-done, ferr
}

func integrityEnv(t *testing.T, distDir string) {
	t.Setenv("NOKMEM_DIST", distDir)
	t.Setenv("NOKMEM_CACHE", t.TempDir())
	t.Setenv("NOKMEM_SIGNING_KEY", "")
	t.Setenv("NOKMEM_VERIFY_PUBKEY", "")
}

// Flip the artifact, regenerate SHA256SUMS: verify:runc and verify:dist
// both fail, and say which file was modified.
func TestVerifyTargetsRefuseATamperedAndResummedArtifact(t *testing.T) {
	root := filepath.Join(t.TempDir(), "dist")
	integrityEnv(t, root)
	dir := published(t, root, "v1.0.0-rc9")
	published(t, root, "v1.0.0-rc5")
	out, err := stdout(t, func() error { return VerifyDist(context.Background()) })
	if err != nil || !strings.Contains(out, "2 artifacts intact and verified") || strings.Count(out, "  ok ") != 2 {
		t.Fatalf("intact dist: %v\n%s", err, out)
	}

	writeFile(t, filepath.Join(dir, "runc"), "ELF evil")
	if err := dist.WriteSums(dir); err != nil {
		t.Fatal(err)
	}
	_, err = stdout(t, func() error { return VerifyArtifact(context.Background(), "runc", "v1.0.0-rc9") })
	if err == nil || !strings.Contains(err.Error(), "was modified after it was verified") || !strings.Contains(err.Error(), filepath.Join(dir, "runc")+": sha256 ") {
		t.Errorf("verify:runc: %v", err)
	}
	out, err = stdout(t, func() error { return VerifyDist(context.Background()) })
	if err == nil || !strings.Contains(err.Error(), "1 problem)") || !strings.Contains(err.Error(), filepath.Join(dir, "runc")) {
		t.Errorf("verify:dist error: %v", err)
	}
	t.Logf("%s%v", out, err)
	if !strings.Contains(out, "MODIFIED  runc v1.0.0-rc9") || !strings.Contains(out, "ok        runc v1.0.0-rc5") {
		t.Errorf("verify:dist lines:\n%s", out)
	}
}

func TestVerifyRuncWithoutArtifactSaysBuildFirst(t *testing.T) {
	integrityEnv(t, filepath.Join(t.TempDir(), "dist"))
	if err := VerifyArtifact(context.Background(), "runc", "v1.0.0-rc9"); err == nil || !strings.Contains(err.Error(), "run build:runc v1.0.0-rc9 first") {
		t.Errorf("%v", err)
	}
}

// NOKMEM_DIST naming somebody's directory: clean removes nothing there.
func TestCleanOnlyRemovesNokmemsOutput(t *testing.T) {
	home := t.TempDir()
	published(t, home, "v1.0.0-rc9")
	writeFile(t, filepath.Join(home, "thesis.tex"), "years of work")
	integrityEnv(t, home)
	if _, err := stdout(t, Clean); err == nil || !strings.Contains(err.Error(), "thesis.tex") {
		t.Fatalf("clean of a foreign directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(home, "runc", "v1.0.0-rc9", "runc")); err != nil {
		t.Fatalf("clean removed something before refusing: %v", err)
	}
	os.Remove(filepath.Join(home, "thesis.tex"))
	out, err := stdout(t, Clean)
	if err != nil || !strings.Contains(out, "removed "+filepath.Join(home, "runc")) {
		t.Fatalf("clean: %v\n%s", err, out)
	}
	if _, err := os.Stat(home); !os.IsNotExist(err) {
		t.Errorf("dist survived clean: %v", err)
	}
}
