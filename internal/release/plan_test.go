package release

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nokmem/nokmem/internal/packaging"
	"github.com/nokmem/nokmem/internal/packaging/packagingtest"
)

// Only the packages Build made of a verified artifact are released: a
// stray package, even one holding a verified binary, is left out, named,
// and not covered by the signed SHA256SUMS. Each artifact's SBOM is
// released and kept in dist/sbom.
func TestPlanReleasesOnlyPackagesOfVerifiedArtifacts(t *testing.T) {
	d := verifiedDist(t)
	if _, err := packaging.Build(d, "runc", "v1.0.0-rc9", ""); err != nil {
		t.Fatal(err)
	}
	bin, _ := os.ReadFile(filepath.Join(d, "runc", "v1.0.0-rc9", "runc"))
	evil := packagingtest.Stray(t, packaging.Dir(d), "deb", "evil", "9.9.9", "/usr/bin/runc-nokmem", bin)
	if filepath.Base(evil) != "evil_9.9.9-1_amd64.deb" && filepath.Base(evil) != "evil_9.9.9_amd64.deb" {
		t.Fatalf("stray package %s", evil)
	}
	// A package of rc5 whose binary is not the verified one.
	forged := packagingtest.Stray(t, packaging.Dir(d), "rpm", "runc-nokmem-rc5", "1.0.0~rc5", "/usr/bin/runc-nokmem", []byte("forged"))
	p, err := NewPlan(d, func(b []byte) ([]byte, error) { return []byte("sig"), nil })
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var names []string
	var sums string
	for _, a := range p.Assets {
		names = append(names, a.Name)
		if a.Name == "SHA256SUMS" {
			b, _ := os.ReadFile(a.Path)
			sums = string(b)
		}
	}
	got := strings.Join(names, " ")
	for _, want := range []string{"runc-nokmem-rc9-1.0.0~rc9-1.nokmem.el7.x86_64.rpm", "runc-nokmem-rc9_1.0.0~rc9-1.nokmem_amd64.deb", "runc-nokmem-v1.0.0-rc9.sbom.cdx.json", "SHA256SUMS.asc"} {
		if !strings.Contains(got, want) || (want != "SHA256SUMS.asc" && !strings.Contains(sums, "  "+want+"\n")) {
			t.Errorf("release lacks %s: %s\n%s", want, got, sums)
		}
	}
	if strings.Contains(got, "evil") || strings.Contains(sums, "evil") || strings.Contains(got, filepath.Base(forged)) {
		t.Errorf("a stray package is released: %s", got)
	}
	ignored := strings.Join(p.Ignored, "\n")
	if len(p.Ignored) != 2 || !strings.Contains(ignored, filepath.Base(evil)+": package evil 9.9.9 is not the package of any verified artifact") ||
		!strings.Contains(ignored, filepath.Base(forged)+": /usr/bin/runc-nokmem has sha256") {
		t.Errorf("ignored:\n%s", ignored)
	}
	bom, err := os.ReadFile(filepath.Join(SBOMDir(d), "runc-nokmem-v1.0.0-rc9.sbom.cdx.json"))
	if err != nil || !strings.Contains(string(bom), `"bomFormat": "CycloneDX"`) || !strings.Contains(string(bom), "pkg:golang/github.com/opencontainers/runc@v1.0.0-rc9") {
		t.Errorf("dist/sbom: %v\n%s", err, bom)
	}
}

// A plan, dry run or not, leaves no temporary directory behind.
func TestPlanLeavesNoTemporaryFiles(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	p, err := NewPlan(verifiedDist(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 1 {
		t.Fatalf("plan made %d temporary entries", len(left))
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}
