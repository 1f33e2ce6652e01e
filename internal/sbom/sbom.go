// Package sbom writes a CycloneDX software bill of materials for each
// verified artifact, from the Go build information in the binary itself
// (debug/buildinfo) and the artifact's provenance.
//
// What a binary records depends on how it was built. Binaries built in
// module mode by Go 1.13 or later list the main module and every module
// linked in, with versions and go.sum hashes (Go 1.18 and later also the
// build settings: tags, cgo, GOAMD64). GOPATH-mode builds (runc before
// rc92 with its era Go, Kubernetes 1.13's make) and anything built by Go
// before 1.13 record no modules at all: their SBOM names the upstream
// project, the Go toolchain and, for static cgo builds, libseccomp, and
// says in its composition that the dependencies are not listed (vendored
// code is part of the upstream source at the recorded commit). The C
// runtime of a static cgo binary is never listed, so such an SBOM is
// "incomplete" too.
package sbom

import (
	"bytes"
	"debug/buildinfo"
	"fmt"
	"path/filepath"
	"runtime/debug"
	"strings"

	cdx "github.com/CycloneDX/cyclonedx-go"

	"github.com/nokmem/nokmem/internal/dist"
)

// File is the SBOM's name beside an artifact (dist/sbom/<project>-nokmem-
// <version>.sbom.cdx.json, and the release asset of the same name).
const File = "sbom.cdx.json"

// upstream module paths, for the package URLs of the main component.
var modules = map[string]string{"runc": "github.com/opencontainers/runc", "kubelet": "k8s.io/kubernetes"}

// Generate returns the SBOM (CycloneDX 1.6, JSON) of the artifact binary
// at bin, whose provenance is prov and sha256 sum.
func Generate(bin string, prov *dist.Provenance, sum string) ([]byte, error) {
	info, infoErr := buildinfo.ReadFile(bin)
	module := modules[prov.Project]
	if module == "" {
		return nil, fmt.Errorf("sbom: unknown project %q", prov.Project)
	}
	purl := "pkg:golang/" + module + "@" + prov.Version
	if prov.Project == "kubelet" {
		purl += "#cmd/kubelet"
	}
	upstream := cdx.Component{Type: cdx.ComponentTypeApplication, Name: prov.Project, Version: prov.Version, PackageURL: purl,
		ExternalReferences: &[]cdx.ExternalReference{{Type: cdx.ERTypeVCS, URL: prov.Source.URL, Comment: "tag " + prov.Source.Tag + ", commit " + prov.Source.Commit}}}
	var patches []cdx.Patch
	var notes []string
	for _, p := range prov.Patches {
		patches = append(patches, cdx.Patch{Type: cdx.PatchTypeUnofficial, Diff: &cdx.Diff{Text: &cdx.AttachedText{Content: p.Name + " on " + p.Target + " (sha256 " + p.SHA256 + ")"}}})
	}
	if len(patches) == 0 {
		notes = append(notes, "no source change; built with the tags "+strings.Join(prov.Build.Tags, " ")+", which compile upstream's kmem-disabled code")
	}
	modified := true
	main := cdx.Component{
		BOMRef: purl, Type: cdx.ComponentTypeApplication, Name: prov.Project, Version: prov.Version, PackageURL: purl,
		Description: prov.Project + " " + prov.Version + " rebuilt by nokmem with cgroup v1 kernel-memory accounting disabled",
		Hashes:      &[]cdx.Hash{{Algorithm: cdx.HashAlgoSHA256, Value: sum}},
		Licenses:    &cdx.Licenses{{License: &cdx.License{ID: "Apache-2.0"}}},
		Modified:    &modified,
		Pedigree:    &cdx.Pedigree{Ancestors: &[]cdx.Component{upstream}, Notes: strings.Join(notes, "; ")},
		Properties: &[]cdx.Property{
			{Name: "nokmem:source:commit", Value: prov.Source.Commit},
			{Name: "nokmem:strategy", Value: string(prov.Strategy)},
			{Name: "nokmem:build:tags", Value: strings.Join(prov.Build.Tags, ",")},
			{Name: "nokmem:build:go", Value: prov.Build.GoUsed},
			{Name: "nokmem:verification", Value: prov.Verified.Verdict},
		},
	}
	if len(patches) > 0 {
		main.Pedigree.Patches = &patches
	}
	var comps []cdx.Component
	var refs []string
	add := func(c cdx.Component) {
		c.BOMRef = c.PackageURL
		comps = append(comps, c)
		refs = append(refs, c.BOMRef)
	}
	goVersion := prov.Build.GoUsed
	coverage := ""
	complete := false
	switch {
	case infoErr != nil:
		coverage = fmt.Sprintf("the binary carries no Go build information (%v): built by %s, which records none before Go 1.13; the dependencies upstream vendors are not listed", infoErr, goVersion)
	case info.Main.Path == "" && len(info.Deps) == 0:
		goVersion = info.GoVersion
		coverage = "built in GOPATH mode by " + info.GoVersion + ", which records no modules: the dependencies upstream vendors are not listed"
	default:
		goVersion = info.GoVersion
		coverage = fmt.Sprintf("every Go module linked in, as the binary records it (%d modules)", len(info.Deps))
		complete = true
		for _, d := range info.Deps {
			add(goModule(d))
		}
		var settings []cdx.Property
		for _, s := range info.Settings {
			settings = append(settings, cdx.Property{Name: "golang:build:" + s.Key, Value: s.Value})
		}
		if len(settings) > 0 {
			*main.Properties = append(*main.Properties, settings...)
		}
		for _, s := range info.Settings {
			if s.Key == "CGO_ENABLED" && s.Value == "1" {
				complete = false
			}
		}
	}
	if goVersion != "" {
		add(cdx.Component{Type: cdx.ComponentTypeLibrary, Name: "std", Version: goVersion, PackageURL: "pkg:golang/std@" + goVersion,
			Description: "the Go standard library and runtime", Licenses: &cdx.Licenses{{License: &cdx.License{ID: "BSD-3-Clause"}}}})
	}
	if c := prov.Build.Cgo; c.LibseccompStatic != "" && c.Libseccomp != "" {
		add(cdx.Component{Type: cdx.ComponentTypeLibrary, Name: "libseccomp", Version: c.Libseccomp, PackageURL: "pkg:generic/libseccomp@" + c.Libseccomp,
			Description: "linked statically from " + filepath.Base(c.LibseccompStatic), Licenses: &cdx.Licenses{{License: &cdx.License{ID: "LGPL-2.1-only"}}}})
		complete = false
	}
	if prov.Build.Cgo.CC != "" && !complete {
		coverage += "; the C runtime linked into a cgo binary is not listed"
	}
	aggregate := cdx.CompositionAggregateIncomplete
	if complete {
		aggregate = cdx.CompositionAggregateComplete
	}
	bom := cdx.NewBOM()
	bom.Metadata = &cdx.Metadata{
		Component: &main,
		Tools: &cdx.ToolsChoice{Components: &[]cdx.Component{{Type: cdx.ComponentTypeApplication, Name: "nokmem", Version: prov.Build.Toolkit,
			ExternalReferences: &[]cdx.ExternalReference{{Type: cdx.ERTypeWebsite, URL: "https://github.com/nokmem/nokmem"}}}}},
		Properties: &[]cdx.Property{{Name: "nokmem:sbom:coverage", Value: coverage}},
	}
	if len(comps) > 0 {
		bom.Components = &comps
	}
	bom.Dependencies = &[]cdx.Dependency{{Ref: main.BOMRef, Dependencies: &refs}}
	bom.Compositions = &[]cdx.Composition{{Aggregate: aggregate, Assemblies: &[]cdx.BOMReference{cdx.BOMReference(main.BOMRef)}}}
	var out bytes.Buffer
	enc := cdx.NewBOMEncoder(&out, cdx.BOMFileFormatJSON)
	enc.SetPretty(true)
	if err := enc.EncodeVersion(bom, cdx.SpecVersion1_6); err != nil {
		return nil, fmt.Errorf("sbom: %w", err)
	}
	return out.Bytes(), nil
}

// goModule is a module the binary records, replacements resolved.
func goModule(d *debug.Module) cdx.Component {
	used := d
	var props []cdx.Property
	if d.Replace != nil {
		used = d.Replace
		props = append(props, cdx.Property{Name: "golang:replaces", Value: d.Path + "@" + d.Version})
	}
	if used.Sum != "" {
		props = append(props, cdx.Property{Name: "golang:sum", Value: used.Sum}) // go.sum's h1: hash
	}
	c := cdx.Component{Type: cdx.ComponentTypeLibrary, Name: used.Path, Version: used.Version, PackageURL: "pkg:golang/" + used.Path + "@" + used.Version}
	if strings.HasPrefix(used.Path, ".") || strings.HasPrefix(used.Path, "/") {
		// A directory replacement (e.g. Kubernetes' staging repositories):
		// the code is part of the main module's tree.
		c.Name, c.Version, c.PackageURL = d.Path, d.Version, "pkg:golang/"+d.Path+"@"+d.Version
		props = append(props[:0], cdx.Property{Name: "golang:replaced-by-directory", Value: used.Path})
	}
	if len(props) > 0 {
		c.Properties = &props
	}
	return c
}
