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

	"golang.org/x/sys/unix"

	"github.com/nokmem/nokmem/internal/attest"
	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/testenv"
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

// A release that needs no nokmem build has nothing in dist/ to verify:
// saying "run build:runc first" would send the user to a build that exits
// with status 3.
func TestVerifyRuncOfAReleaseWithoutKmemSaysNothingToBuild(t *testing.T) {
	integrityEnv(t, filepath.Join(t.TempDir(), "dist"))
	t.Chdir("../..") // the matrix, as Mage runs the targets
	var buf strings.Builder
	code := -1
	exit, stderr = func(c int) { code = c }, &buf
	t.Cleanup(func() { exit, stderr = os.Exit, os.Stderr })
	err := VerifyArtifact(context.Background(), "runc", "v1.0.0-rc94")
	if err != nil || code != ExitNothingToDo || !strings.Contains(buf.String(), "nothing to build") || strings.Contains(buf.String(), "first") {
		t.Errorf("err %v, exit %d, output %q", err, code, buf.String())
	}
}

// verify:runc finds that it cannot write its report before it verifies,
// and names NOKMEM_DIST.
func TestVerifyRuncChecksItCanWriteTheReportFirst(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, root string)
	}{
		{"reports is a file", func(t *testing.T, root string) { writeFile(t, filepath.Join(root, "reports"), "x") }},
		{"read-only dist", func(t *testing.T, root string) {
			if err := unix.Mount("", root, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "dist")
			os.MkdirAll(root, 0o755)
			if tc.name == "read-only dist" {
				if err := unix.Mount("tmpfs", root, "tmpfs", 0, "size=1m"); err != nil {
					if testenv.InCI() {
						t.Fatal("CI=true but a tmpfs cannot be mounted (needs root)")
					}
					t.Skip("cannot mount a tmpfs here (needs root)")
				}
				t.Cleanup(func() { unix.Unmount(root, 0) })
			}
			integrityEnv(t, root)
			published(t, root, "v1.0.0-rc9")
			tc.setup(t, root)
			out, err := stdout(t, func() error { return VerifyArtifact(context.Background(), "runc", "v1.0.0-rc9") })
			if err == nil || !strings.Contains(err.Error(), "NOKMEM_DIST="+root) || !strings.Contains(err.Error(), filepath.Join(root, "reports")) ||
				!strings.Contains(err.Error(), "nothing was verified") {
				t.Errorf("error: %v", err)
			}
			if strings.Contains(out, "verifying") || strings.Contains(out, "verdict") {
				t.Errorf("verified before finding the report directory unwritable:\n%s", out)
			}
		})
	}
}

// Without a key, verify:dist accepts a signature it cannot check, and says
// loudly that it did not check it and how to.
func TestVerifyDistSaysWhichSignaturesWereNotChecked(t *testing.T) {
	root := filepath.Join(t.TempDir(), "dist")
	integrityEnv(t, root)
	dir := published(t, root, "v1.0.0-rc9")
	writeFile(t, filepath.Join(dir, dist.SignatureFile), "-----BEGIN PGP SIGNATURE-----\nforged\n-----END PGP SIGNATURE-----\n")
	if err := dist.WriteSums(dir); err != nil {
		t.Fatal(err)
	}
	out, err := stdout(t, func() error { return VerifyDist(context.Background()) })
	if err != nil || !strings.Contains(out, "signature NOT checked") || !strings.Contains(out, "1 signatures were NOT checked") ||
		!strings.Contains(out, "NOKMEM_VERIFY_PUBKEY=") || strings.Contains(out, "present but not checked") {
		t.Errorf("%v\n%s", err, out)
	}
}

// verify:host reports (and removes) what builds killed by SIGKILL left in
// NOKMEM_DIST, as it does with the cgroups of dead checks.
func TestVerifyHostReportsAbandonedStaging(t *testing.T) {
	root := filepath.Join(t.TempDir(), "dist")
	integrityEnv(t, root)
	abandoned := filepath.Join(root, ".staging-runc-v1.0.0-rc9-123")
	if err := os.MkdirAll(abandoned, 0o755); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * dist.UncheckableAge)
	os.Chtimes(abandoned, old, old)
	live, err := dist.NewStaging(root, "runc", "v1.0.0-rc5")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Abort()
	out, _ := stdout(t, func() error { return VerifyHost(context.Background()) })
	if !strings.Contains(out, "removed the staging directory of a dead build: "+abandoned) || !strings.Contains(out, live.Path("")) {
		t.Errorf("output:\n%s", out)
	}
	if _, err := os.Stat(abandoned); !os.IsNotExist(err) {
		t.Errorf("abandoned staging survived: %v", err)
	}
}
