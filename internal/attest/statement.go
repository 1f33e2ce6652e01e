// Package attest writes and checks the in-toto statement published with
// every artifact: an in-toto Statement v1 (https://in-toto.io/Statement/v1)
// whose predicate is SLSA Provenance v1 (https://slsa.dev/provenance/v1),
// signed, when NOKMEM_SIGNING_KEY is set, by an armored detached OpenPGP
// signature over its exact bytes (`gpg --verify provenance.intoto.json.asc
// provenance.intoto.json`).
//
// The statement is the root of an artifact directory's integrity: its
// subject is the binary's sha256, and it pins every other file
// (provenance.json, verify.json, the kubelet's kmem-probe) by sha256 as a
// byproduct. SHA256SUMS stays beside them for `sha256sum -c`, but it is
// unsigned and proves nothing by itself. CheckDir is the one check that the
// cache hit, verify:* and verify:dist rely on.
//
// The types are those of github.com/in-toto/attestation (protobuf, with
// Validate), so what is written and what is checked is parsed by the same
// code a consumer would use.
package attest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	slsa "github.com/in-toto/attestation/go/predicates/provenance/v1"
	ita "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nokmem/nokmem/internal/build"
	"github.com/nokmem/nokmem/internal/dist"
)

// URIs of the statement. BuildType and BuilderID point at the page that
// documents them, as SLSA asks.
const (
	PredicateType = "https://slsa.dev/provenance/v1"
	BuildType     = "https://github.com/nokmem/nokmem/blob/main/docs/provenance.md#build-type-v1"
	BuilderID     = "https://github.com/nokmem/nokmem/blob/main/docs/provenance.md#builder-v1"
)

// Write makes the statement of the artifact directory dir from prov, whose
// binary (prov.Output.File) and other files are already in dir, writes it
// as dist.StatementFile and, when sign is not nil, its signature as
// dist.SignatureFile. Every regular file of dir other than the binary,
// SHA256SUMS and the statement's own files becomes a byproduct pinned by
// sha256, so it must be written before Write is called.
func Write(dir string, prov *dist.Provenance, sign func([]byte) ([]byte, error), finished time.Time) error {
	b, err := Statement(dir, prov, finished)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, dist.StatementFile), b, 0o644); err != nil {
		return err
	}
	if sign == nil {
		return nil
	}
	sig, err := sign(b)
	if err != nil {
		return fmt.Errorf("sign %s: %w", dist.StatementFile, err)
	}
	return os.WriteFile(filepath.Join(dir, dist.SignatureFile), sig, 0o644)
}

// Statement renders the statement Write writes (indented JSON). Only a
// passed verification gets one.
func Statement(dir string, prov *dist.Provenance, finished time.Time) ([]byte, error) {
	if !prov.Verified.Passed {
		return nil, fmt.Errorf("statement for %s %s: the verification did not pass", prov.Project, prov.Version)
	}
	return render(dir, prov, finished)
}

// facts are what a statement records that provenance.json cannot: when it
// was written, and the sha256 of the go binary that compiled the artifact
// (read on the build machine). CheckDir takes them from the statement;
// everything else must be what provenance.json gives.
type facts struct {
	finished time.Time
	goDigest map[string]string // nil: not known
}

// named is one file of the artifact directory, by sha256.
type named struct{ name, sha256 string }

func render(dir string, prov *dist.Provenance, finished time.Time) ([]byte, error) {
	return renderFacts(dir, prov, facts{finished: finished, goDigest: goBinaryDigest(prov)})
}

func renderFacts(dir string, prov *dist.Provenance, f facts) ([]byte, error) {
	bin := prov.Output.File
	sum, err := dist.FileSHA256(filepath.Join(dir, bin))
	if err != nil {
		return nil, err
	}
	if sum != prov.Output.SHA256 {
		return nil, fmt.Errorf("statement for %s %s: %s has sha256 %s, the provenance records %s", prov.Project, prov.Version, bin, sum, prov.Output.SHA256)
	}
	files, err := byproductFiles(dir, prov)
	if err != nil {
		return nil, err
	}
	return compose(prov, files, f, formatCurrent)
}

// format is a version of what nokmem writes into a statement, so that a
// statement an earlier nokmem wrote is still recognised as exact.
type format int

const (
	// formatCurrent: toolchain descriptors carry a uri (and the go
	// binary's digest when known), as the ResourceDescriptor spec asks.
	formatCurrent format = iota
	// formatNoToolchainRefs: what nokmem wrote before, toolchain
	// descriptors with annotations only.
	formatNoToolchainRefs
)

// compose builds the statement of prov from the digests of its files
// (files: every byproduct; the subject is prov.Output) and facts: the one
// function both Write and CheckDir use, so that a statement can be
// compared field by field with what its provenance.json gives.
func compose(prov *dist.Provenance, files []named, f facts, form format) ([]byte, error) {
	bin, sum := prov.Output.File, prov.Output.SHA256
	byproducts, err := byproducts(prov, files)
	if err != nil {
		return nil, err
	}
	finished := f.finished
	deps, err := resolvedDependencies(prov, f, form)
	if err != nil {
		return nil, err
	}
	// What the user chose: the release, the nodes it is for (NOKMEM_TARGET),
	// the source (NOKMEM_*_REPO). The strategy is the matrix's.
	ext, err := toStruct(map[string]any{
		"project":    prov.Project,
		"version":    prov.Version,
		"target":     prov.Build.Target,
		"strategy":   prov.Strategy,
		"repository": prov.Source.URL,
	})
	if err != nil {
		return nil, err
	}
	internal, err := toStruct(map[string]any{
		"inputKey":   prov.InputKey,
		"matrix":     prov.Source.Matrix,
		"pinned":     prov.Source.Pinned,
		"treeCommit": prov.Source.TreeCommit,
		"build":      prov.Build,
	})
	if err != nil {
		return nil, err
	}
	pred := &slsa.Provenance{
		BuildDefinition: &slsa.BuildDefinition{
			BuildType:            BuildType,
			ExternalParameters:   ext,
			InternalParameters:   internal,
			ResolvedDependencies: deps,
		},
		RunDetails: &slsa.RunDetails{
			Builder:    builder(prov),
			Metadata:   &slsa.BuildMetadata{FinishedOn: timestamppb.New(finished.UTC().Truncate(time.Second))},
			Byproducts: byproducts,
		},
	}
	if err := pred.Validate(); err != nil {
		return nil, fmt.Errorf("statement for %s %s: invalid SLSA provenance: %w", prov.Project, prov.Version, err)
	}
	pj, err := protojson.Marshal(pred)
	if err != nil {
		return nil, err
	}
	predicate := &structpb.Struct{}
	if err := protojson.Unmarshal(pj, predicate); err != nil {
		return nil, err
	}
	st := &ita.Statement{
		Type:          ita.StatementTypeUri,
		Subject:       []*ita.ResourceDescriptor{{Name: bin, Digest: map[string]string{"sha256": sum}}},
		PredicateType: PredicateType,
		Predicate:     predicate,
	}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("statement for %s %s: invalid in-toto statement: %w", prov.Project, prov.Version, err)
	}
	raw, err := protojson.Marshal(st)
	if err != nil {
		return nil, err
	}
	// protojson varies its whitespace on purpose; settle it once, so the
	// signed bytes are what people read.
	var compact, out bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return nil, err
	}
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// own reports the files that are never byproducts: the statement's own.
func own(name string) bool {
	return name == dist.SumsFile || name == dist.StatementFile || name == dist.SignatureFile
}

// byproductFiles hashes every regular file of dir that is a byproduct:
// all but the binary and the statement's own files.
func byproductFiles(dir string, prov *dist.Provenance) ([]named, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []named
	for _, e := range entries {
		name := e.Name()
		if name == prov.Output.File || own(name) {
			continue
		}
		if !e.Type().IsRegular() {
			return nil, fmt.Errorf("statement for %s %s: %s is not a regular file", prov.Project, prov.Version, filepath.Join(dir, name))
		}
		sum, err := dist.FileSHA256(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		out = append(out, named{name: name, sha256: sum})
	}
	return out, nil
}

// byproducts describes files (sorted by name, as a directory lists them),
// the verification report and provenance.json annotated from prov.
func byproducts(prov *dist.Provenance, files []named) ([]*ita.ResourceDescriptor, error) {
	files = slices.Clone(files)
	slices.SortFunc(files, func(a, b named) int { return strings.Compare(a.name, b.name) })
	var out []*ita.ResourceDescriptor
	var err error
	for _, file := range files {
		name := file.name
		rd := &ita.ResourceDescriptor{Name: name, Digest: map[string]string{"sha256": file.sha256}}
		switch name {
		case dist.ReportFile:
			rd.MediaType = "application/json"
			notes := make([]any, len(prov.Verified.Notes))
			for i, n := range prov.Verified.Notes {
				notes[i] = n
			}
			if rd.Annotations, err = structpb.NewStruct(map[string]any{
				"passed": prov.Verified.Passed, "verdict": prov.Verified.Verdict, "dynamic": prov.Verified.Dynamic, "notes": notes,
			}); err != nil {
				return nil, err
			}
		case dist.ProvenanceFile:
			rd.MediaType = "application/json"
			if rd.Annotations, err = structpb.NewStruct(map[string]any{"schema": dist.ProvenanceSchema}); err != nil {
				return nil, err
			}
		}
		out = append(out, rd)
	}
	if !hasName(out, dist.ProvenanceFile) || !hasName(out, dist.ReportFile) {
		return nil, fmt.Errorf("statement for %s %s: write %s and %s into the artifact directory first", prov.Project, prov.Version, dist.ProvenanceFile, dist.ReportFile)
	}
	return out, nil
}

func hasName(rds []*ita.ResourceDescriptor, name string) bool {
	for _, rd := range rds {
		if rd.GetName() == name {
			return true
		}
	}
	return false
}

// resolvedDependencies: the upstream source at its commit, each patch by
// sha256, and the Go toolchain (and the C one when cgo was used), each
// named by a uri (a package URL) as the ResourceDescriptor spec asks, the
// go binary also by digest when it was known.
func resolvedDependencies(prov *dist.Provenance, f facts, form format) ([]*ita.ResourceDescriptor, error) {
	src := &ita.ResourceDescriptor{Name: "source", Uri: SourceURI(prov.Source.URL, prov.Source.Tag)}
	if len(prov.Source.Commit) == 40 {
		src.Digest = map[string]string{"gitCommit": prov.Source.Commit}
	}
	var err error
	if src.Annotations, err = toStruct(map[string]any{"commit": prov.Source.Commit, "commitDate": prov.Source.CommitDate}); err != nil {
		return nil, err
	}
	deps := []*ita.ResourceDescriptor{src}
	for _, p := range prov.Patches {
		rd := &ita.ResourceDescriptor{Name: "patch:" + p.Name, Digest: map[string]string{"sha256": p.SHA256}}
		if rd.Annotations, err = toStruct(map[string]any{"target": p.Target, "baseSHA256": p.BaseSHA256, "resultSHA256": p.ResultSHA256}); err != nil {
			return nil, err
		}
		deps = append(deps, rd)
	}
	tc := map[string]any{"version": prov.Build.GoUsed, "requested": prov.Build.GoRequested, "source": prov.Build.GoSource, "mode": prov.Build.Mode}
	if prov.Build.Image != "" {
		tc["image"] = prov.Build.Image
	}
	goRD := &ita.ResourceDescriptor{Name: "toolchain:go"}
	if form == formatCurrent {
		goRD.Uri = GoURI(prov.Build)
		goRD.Digest = f.goDigest
	}
	if goRD.Annotations, err = toStruct(tc); err != nil {
		return nil, err
	}
	deps = append(deps, goRD)
	if cgo := prov.Build.Cgo; cgo.CC != "" || cgo.Libseccomp != "" {
		rd := &ita.ResourceDescriptor{Name: "toolchain:cgo"}
		if form == formatCurrent {
			rd.Uri = CgoURI(cgo)
		}
		if rd.Annotations, err = toStruct(cgo); err != nil {
			return nil, err
		}
		deps = append(deps, rd)
	}
	return deps, nil
}

// GoURI names the Go toolchain of a build as a package URL: the
// golang.org/toolchain module the go command downloads
// (pkg:golang/golang.org/toolchain@v0.0.1-go1.12.17.linux-amd64) when it
// came through the module proxy (era or an exact version), the image's
// (pkg:docker/golang@1.12) in container mode, and the Go release
// (pkg:generic/go@1.22.2) for a host Go, whose bytes only its digest pins.
func GoURI(b dist.BuildInfo) string {
	v := strings.TrimPrefix(b.GoUsed, "go")
	switch {
	case b.Image != "":
		return dockerPURL(b.Image)
	case b.GoSource != "" && b.GoSource != "host":
		return "pkg:golang/golang.org/toolchain@" + url.PathEscape("v0.0.1-"+b.GoUsed+".linux-amd64")
	}
	return "pkg:generic/go@" + url.PathEscape(v)
}

// CgoURI names the C toolchain of a cgo build as a package URL: the
// compiler `cc --version` named ("gcc (Debian 12.2.0-14) 12.2.0" →
// pkg:generic/gcc@12.2.0), else libseccomp.
func CgoURI(c build.CgoInfo) string {
	if f := strings.Fields(c.CC); len(f) > 0 {
		name := strings.ToLower(f[0])
		if v := f[len(f)-1]; len(f) > 1 && v[0] >= '0' && v[0] <= '9' {
			return "pkg:generic/" + url.PathEscape(name) + "@" + url.PathEscape(v)
		}
		return "pkg:generic/" + url.PathEscape(name)
	}
	return "pkg:generic/libseccomp@" + url.PathEscape(c.Libseccomp)
}

// dockerPURL is the package URL of an image reference:
// k8s.gcr.io/kube-cross:v1.12 → pkg:docker/kube-cross@v1.12?repository_url=k8s.gcr.io.
func dockerPURL(image string) string {
	name, version := image, ""
	if i := strings.Index(name, "@"); i >= 0 {
		name, version = name[:i], name[i+1:]
	} else if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name, version = name[:i], name[i+1:]
	}
	registry := ""
	if first, rest, ok := strings.Cut(name, "/"); ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		registry, name = first, rest
	}
	out := "pkg:docker/" + name
	if version != "" {
		out += "@" + url.PathEscape(version)
	}
	if registry != "" {
		out += "?repository_url=" + url.QueryEscape(registry)
	}
	return out
}

// goBinaryDigest is the sha256 of the go binary a host build ran
// (prov.Build.Args[0], looked up in PATH as the build did); nil when it
// cannot be read, or the build ran in a container.
func goBinaryDigest(prov *dist.Provenance) map[string]string {
	if prov.Build.Mode != "host" || len(prov.Build.Args) == 0 {
		return nil
	}
	bin, err := exec.LookPath(prov.Build.Args[0])
	if err != nil {
		return nil
	}
	sum, err := dist.FileSHA256(bin)
	if err != nil {
		return nil
	}
	return map[string]string{"sha256": sum}
}

// builder is this toolkit, at the revision that made the artifact.
func builder(prov *dist.Provenance) *slsa.Builder {
	b := &slsa.Builder{Id: BuilderID}
	if prov.Build.Toolkit != "" {
		b.Version = map[string]string{"nokmem": prov.Build.Toolkit}
	}
	return b
}

// SourceURI names the upstream tag the SLSA way: git+<url>@refs/tags/<tag>,
// with a local path as a file:// URL.
func SourceURI(url, tag string) string {
	if !strings.Contains(url, "://") && filepath.IsAbs(url) {
		url = "file://" + url
	}
	return "git+" + url + "@refs/tags/" + tag
}

// toStruct converts v through its JSON form, so dist's JSON names are kept.
func toStruct(v any) (*structpb.Struct, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	s := &structpb.Struct{}
	if err := protojson.Unmarshal(b, s); err != nil {
		return nil, err
	}
	return s, nil
}

// Parse decodes a statement with the in-toto types, validates it (the
// statement, then its SLSA Provenance v1 predicate) and requires nokmem's
// build type. Unknown fields are errors.
func Parse(b []byte) (*ita.Statement, *slsa.Provenance, error) {
	st := &ita.Statement{}
	if err := protojson.Unmarshal(b, st); err != nil {
		return nil, nil, fmt.Errorf("not an in-toto statement: %w", err)
	}
	if err := st.Validate(); err != nil {
		return nil, nil, fmt.Errorf("invalid in-toto statement: %w", err)
	}
	if st.GetType() != ita.StatementTypeUri {
		return nil, nil, fmt.Errorf("statement type %q, want %q", st.GetType(), ita.StatementTypeUri)
	}
	if st.GetPredicateType() != PredicateType {
		return nil, nil, fmt.Errorf("predicate type %q, want %q", st.GetPredicateType(), PredicateType)
	}
	pj, err := protojson.Marshal(st.GetPredicate())
	if err != nil {
		return nil, nil, err
	}
	pred := &slsa.Provenance{}
	if err := protojson.Unmarshal(pj, pred); err != nil {
		return nil, nil, fmt.Errorf("predicate is not SLSA Provenance v1: %w", err)
	}
	if err := pred.Validate(); err != nil {
		return nil, nil, fmt.Errorf("invalid SLSA Provenance v1: %w", err)
	}
	if bt := pred.GetBuildDefinition().GetBuildType(); bt != BuildType {
		return nil, nil, fmt.Errorf("build type %q is not nokmem's (%s)", bt, BuildType)
	}
	return st, pred, nil
}

// errNoField is returned for a statement without a field nokmem writes.
var errNoField = errors.New("missing")

func field(s *structpb.Struct, name string) (string, error) {
	v, ok := s.GetFields()[name]
	if !ok {
		return "", fmt.Errorf("%s: %w", name, errNoField)
	}
	if _, ok := v.GetKind().(*structpb.Value_StringValue); !ok {
		return "", fmt.Errorf("%s is not a string", name)
	}
	return v.GetStringValue(), nil
}
