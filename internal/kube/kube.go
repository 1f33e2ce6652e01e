// Package kube identifies what a Kubernetes source tree vendors from runc
// and which nokmem treatment it needs, by content rather than by version:
// the vendored runc revision is read from Godeps/Godeps.json or go.mod
// (with its replace directives), and the vendored kmem files are hashed.
package kube

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/mod/modfile"
	"gopkg.in/yaml.v3"

	"github.com/nokmem/nokmem/internal/patch"
	"github.com/nokmem/nokmem/internal/srccheck"
)

// RuncModule is the module (and import path prefix) of runc.
const RuncModule = "github.com/opencontainers/runc"

// VendorPrefix is where runc's files sit in a Kubernetes tree.
const VendorPrefix = "vendor/" + RuncModule

// FSDir is the vendored libcontainer cgroupfs package.
const FSDir = VendorPrefix + "/" + srccheck.FSPackage

// Strategy values (the same words as the runc matrix).
const (
	StrategyPatch = "patch"
	StrategyTag   = "tag"
	StrategyNone  = "none"
)

// Identification is what Identify found.
type Identification struct {
	Strategy string `json:"strategy"`
	// RuncRevision is the vendored runc revision and where it was read.
	RuncRevision string `json:"runcRevision"`
	RevisionFrom string `json:"revisionFrom"`
	// Hashes of the vendored kmem files (absent files are left out).
	Hashes map[string]string `json:"hashes"`
	// Patch is the runc patch that covers the vendored memory.go.
	Patch *patch.Patch `json:"patch,omitempty"`
	// APIStyle is how the vendored cgroupfs manager is constructed:
	// "struct" (&fs.Manager{Cgroups: cg}) or "new" (fs.NewManager(cg, nil, false)).
	APIStyle string `json:"apiStyle"`
}

// UnknownContentError says that vendored kmem content is not covered.
type UnknownContentError struct {
	File, SHA256, Revision string
	Known                  []string
}

func (e *UnknownContentError) Error() string {
	return fmt.Sprintf("%s (vendored runc %s) has sha256 %s, which no nokmem patch covers and which has no nokmem build tag (known memory.go contents: %s); "+
		"review it and add a patch to an overlay patches directory (NOKMEM_PATCHES_OVERLAY)", e.File, e.Revision, e.SHA256, strings.Join(e.Known, ", "))
}

// VendoredRunc reads the vendored runc revision of tree.
func VendoredRunc(tree string) (rev, from string, err error) {
	if b, err := os.ReadFile(filepath.Join(tree, "go.mod")); err == nil {
		f, err := modfile.Parse("go.mod", b, nil)
		if err != nil {
			return "", "", fmt.Errorf("go.mod: %w", err)
		}
		for _, r := range f.Replace {
			if r.Old.Path == RuncModule {
				if r.New.Version == "" {
					return r.New.Path, "go.mod replace (local path)", nil
				}
				return r.New.Version, "go.mod replace " + r.New.Path, nil
			}
		}
		for _, r := range f.Require {
			if r.Mod.Path == RuncModule {
				return r.Mod.Version, "go.mod require", nil
			}
		}
		return "", "", fmt.Errorf("go.mod does not require %s", RuncModule)
	}
	b, err := os.ReadFile(filepath.Join(tree, "Godeps", "Godeps.json"))
	if err != nil {
		return "", "", errors.New("neither go.mod nor Godeps/Godeps.json: not a Kubernetes tree nokmem recognises")
	}
	var g struct {
		Deps []struct{ ImportPath, Rev, Comment string }
	}
	if err := json.Unmarshal(b, &g); err != nil {
		return "", "", fmt.Errorf("Godeps/Godeps.json: %w", err)
	}
	for _, d := range g.Deps {
		if d.ImportPath == RuncModule || strings.HasPrefix(d.ImportPath, RuncModule+"/") {
			return d.Rev, "Godeps/Godeps.json", nil
		}
	}
	return "", "", fmt.Errorf("Godeps/Godeps.json lists no %s package", RuncModule)
}

var newManagerRE = regexp.MustCompile(`func NewManager\(cg \*configs\.Cgroup, paths map\[string\]string, rootless bool\)`)
var managerStructRE = regexp.MustCompile(`(?s)type Manager struct \{[^}]*\bCgroups\s+\*configs\.Cgroup`)

// Identify decides the treatment of tree from its vendored content.
func Identify(tree string, patches *patch.Set) (*Identification, error) {
	rev, from, err := VendoredRunc(tree)
	if err != nil {
		return nil, err
	}
	id := &Identification{RuncRevision: rev, RevisionFrom: from, Hashes: map[string]string{}}
	fsDir := filepath.Join(tree, filepath.FromSlash(FSDir))
	entries, err := os.ReadDir(fsDir)
	if err != nil {
		return nil, fmt.Errorf("unrecognised vendored layout: no %s (vendored runc %s from %s)", FSDir, rev, from)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(fsDir, e.Name()))
		if err != nil {
			return nil, err
		}
		switch e.Name() {
		case "memory.go", "kmem.go", "kmem_disabled.go":
			id.Hashes[FSDir+"/"+e.Name()] = patch.SHA256(b)
		}
		switch {
		case newManagerRE.Match(b):
			id.APIStyle = "new"
		case managerStructRE.Match(b) && id.APIStyle == "":
			id.APIStyle = "struct"
		}
	}
	mem, ok := id.Hashes[FSDir+"/memory.go"]
	if !ok {
		return nil, fmt.Errorf("unrecognised vendored layout: %s has no memory.go (vendored runc %s)", FSDir, rev)
	}
	if _, ok := id.Hashes[FSDir+"/kmem_disabled.go"]; ok {
		id.Strategy = StrategyTag
		return id, nil
	}
	const target = srccheck.FSPackage + "/memory.go"
	if p, ok := patches.ForContent(target, mem); ok {
		id.Strategy, id.Patch = StrategyPatch, p
		return id, nil
	}
	check, err := srccheck.Check(fsDir, nil)
	if err != nil {
		return nil, err
	}
	if !check.HasKmemCode() && check.OK() {
		id.Strategy = StrategyNone
		return id, nil
	}
	return nil, &UnknownContentError{File: FSDir + "/memory.go", SHA256: mem, Revision: rev, Known: patches.KnownBases(target)}
}

// GoVersion reads the Go version a Kubernetes tree was released with, from
// build/build-image/cross/VERSION (≤1.18, e.g. "v1.13.9-1"),
// build/dependencies.yaml (1.19+, "golang: upstream version") or
// .go-version (1.26+). It returns e.g. "1.13.9" and the file it used.
func GoVersion(tree string) (string, string, error) {
	if b, err := os.ReadFile(filepath.Join(tree, ".go-version")); err == nil {
		return strings.TrimSpace(string(b)), ".go-version", nil
	}
	if b, err := os.ReadFile(filepath.Join(tree, "build", "dependencies.yaml")); err == nil {
		var deps struct {
			Dependencies []struct {
				Name    string `yaml:"name"`
				Version string `yaml:"version"`
			} `yaml:"dependencies"`
		}
		if err := yaml.Unmarshal(b, &deps); err != nil {
			return "", "", fmt.Errorf("build/dependencies.yaml: %w", err)
		}
		for _, d := range deps.Dependencies {
			if strings.HasPrefix(d.Name, "golang: upstream version") {
				return d.Version, "build/dependencies.yaml", nil
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(tree, "build", "build-image", "cross", "VERSION")); err == nil {
		v := strings.TrimPrefix(strings.TrimSpace(string(b)), "v")
		if i := strings.LastIndex(v, "-"); i > 0 {
			v = v[:i]
		}
		return v, "build/build-image/cross/VERSION", nil
	}
	return "", "", errors.New("the tree names no Go version (no .go-version, build/dependencies.yaml or build/build-image/cross/VERSION)")
}

// Minor returns "1.13" for "1.13.9" or "go1.13.9".
func Minor(v string) string {
	v = strings.TrimPrefix(v, "go")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return v
	}
	return parts[0] + "." + strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' })
}
