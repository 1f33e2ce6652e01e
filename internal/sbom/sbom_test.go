package sbom

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	cdx "github.com/CycloneDX/cyclonedx-go"

	"github.com/nokmem/nokmem/internal/build"
	"github.com/nokmem/nokmem/internal/dist"
)

func prov(project string) *dist.Provenance {
	return &dist.Provenance{Project: project, Version: "v1.0.0-rc93", Strategy: "tag",
		Source:   dist.SourceInfo{URL: "https://github.com/opencontainers/runc.git", Tag: "v1.0.0-rc93", Commit: "12644e614e25b05da6fd08a38ffa0cfe1903fdec"},
		Build:    dist.BuildInfo{Tags: []string{"seccomp", "nokmem"}, GoUsed: "go1.15.15", Toolkit: "abc123", Cgo: build.CgoInfo{CC: "gcc 12", Libseccomp: "2.5.4", LibseccompStatic: "/usr/lib/x86_64-linux-gnu/libseccomp.a"}},
		Verified: dist.VerifiedInfo{Passed: true, Verdict: "nokmem"}}
}

func decode(t *testing.T, b []byte) *cdx.BOM {
	t.Helper()
	var bom cdx.BOM
	if err := cdx.NewBOMDecoder(bytes.NewReader(b), cdx.BOMFileFormatJSON).Decode(&bom); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if bom.SpecVersion != cdx.SpecVersion1_6 || bom.Metadata == nil || bom.Metadata.Component == nil {
		t.Fatalf("bom: %+v", bom)
	}
	return &bom
}

func names(bom *cdx.BOM) map[string]string {
	out := map[string]string{}
	if bom.Components != nil {
		for _, c := range *bom.Components {
			out[c.Name] = c.Version
		}
	}
	return out
}

// A module-mode binary: every module it records is listed, with its
// version, plus the Go standard library.
func TestModuleBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "prog")
	c := exec.Command("go", "build", "-o", bin, "./testdata/prog")
	c.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GOTOOLCHAIN=local")
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	b, err := Generate(bin, prov("runc"), strings.Repeat("ab", 32))
	if err != nil {
		t.Fatal(err)
	}
	bom := decode(t, b)
	main := bom.Metadata.Component
	if main.PackageURL != "pkg:golang/github.com/opencontainers/runc@v1.0.0-rc93" || (*main.Hashes)[0].Value != strings.Repeat("ab", 32) || !*main.Modified {
		t.Errorf("main component: %+v", main)
	}
	n := names(bom)
	if n["github.com/CycloneDX/cyclonedx-go"] != "v0.12.0" || !strings.HasPrefix(n["std"], "go1.") || n["libseccomp"] != "2.5.4" {
		t.Errorf("components: %v", n)
	}
	// cgo and a static libseccomp: the C runtime is not listed.
	if (*bom.Compositions)[0].Aggregate != cdx.CompositionAggregateIncomplete {
		t.Errorf("composition %s", (*bom.Compositions)[0].Aggregate)
	}
	if deps := (*bom.Dependencies)[0]; deps.Ref != main.BOMRef || len(*deps.Dependencies) != len(*bom.Components) {
		t.Errorf("dependencies: %+v", deps)
	}
}

// A GOPATH-mode build records no modules: the SBOM says so.
func TestGOPATHBinary(t *testing.T) {
	gopath := t.TempDir()
	src := filepath.Join(gopath, "src", "example.com", "tool")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644)
	bin := filepath.Join(t.TempDir(), "tool")
	c := exec.Command("go", "build", "-o", bin, ".")
	c.Dir, c.Env = src, append(os.Environ(), "GO111MODULE=off", "GOPATH="+gopath, "CGO_ENABLED=0", "GOFLAGS=", "GOTOOLCHAIN=local")
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	p := prov("kubelet")
	p.Build.Cgo = build.CgoInfo{}
	b, err := Generate(bin, p, strings.Repeat("cd", 32))
	if err != nil {
		t.Fatal(err)
	}
	bom := decode(t, b)
	if bom.Metadata.Component.PackageURL != "pkg:golang/k8s.io/kubernetes@v1.0.0-rc93#cmd/kubelet" {
		t.Errorf("purl %s", bom.Metadata.Component.PackageURL)
	}
	if n := names(bom); len(n) != 1 || !strings.HasPrefix(n["std"], "go1.") {
		t.Errorf("components: %v", n)
	}
	cov := (*bom.Metadata.Properties)[0].Value
	if !strings.Contains(cov, "GOPATH mode") || (*bom.Compositions)[0].Aggregate != cdx.CompositionAggregateIncomplete {
		t.Errorf("coverage %q, composition %s", cov, (*bom.Compositions)[0].Aggregate)
	}
}

// A binary without build information (Go before 1.13): the toolchain from
// the provenance, and the gap said.
func TestBinaryWithoutBuildInfo(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "old")
	os.WriteFile(bin, []byte("\x7fELF not really"), 0o755)
	b, err := Generate(bin, prov("runc"), strings.Repeat("ef", 32))
	if err != nil {
		t.Fatal(err)
	}
	bom := decode(t, b)
	if n := names(bom); n["std"] != "go1.15.15" || n["libseccomp"] != "2.5.4" {
		t.Errorf("components: %v", n)
	}
	if cov := (*bom.Metadata.Properties)[0].Value; !strings.Contains(cov, "no Go build information") || !strings.Contains(cov, "C runtime") {
		t.Errorf("coverage %q", cov)
	}
	// The same input gives the same bytes: a release can be re-run.
	again, _ := Generate(bin, prov("runc"), strings.Repeat("ef", 32))
	if !bytes.Equal(b, again) {
		t.Error("SBOM is not deterministic")
	}
}
