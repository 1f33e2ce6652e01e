package attest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/signing"
)

// Projects are the artifact kinds nokmem publishes.
var Projects = []string{"runc", "kubelet"}

// Release asset names: <project>-nokmem-<version><suffix>.
const (
	releaseInfix     = "-nokmem-"
	releaseBinary    = "-linux-amd64"
	releaseStatement = ".intoto.json"
	releaseSignature = ".intoto.json.asc"
)

// ReleaseAsset is the name under which a GitHub release carries the file
// name of the artifact directory of project version (runc →
// runc-nokmem-v1.0.0-rc9-linux-amd64, provenance.intoto.json →
// runc-nokmem-v1.0.0-rc9.intoto.json, verify.json →
// runc-nokmem-v1.0.0-rc9.verify.json).
func ReleaseAsset(project, version, name string) string {
	base := project + releaseInfix + version
	switch name {
	case project:
		return base + releaseBinary
	case dist.StatementFile:
		return base + releaseStatement
	case dist.SignatureFile:
		return base + releaseSignature
	}
	return base + "." + name
}

// Entry is one artifact CheckTree found.
type Entry struct {
	Project, Version string
	Where            string    // its directory, or its release base path
	Artifact         *Artifact // set when it passed
	Err              error     // why it did not
}

// Tree is what CheckTree found.
type Tree struct {
	Root    string
	Release bool // a downloaded release (flat assets), not a dist/ tree
	Entries []Entry
	// Problems lists every failure, one line each: those of the entries
	// and those of the release's own SHA256SUMS.
	Problems []string
	// SignaturesChecked says a public key was given.
	SignaturesChecked bool
}

// CheckTree checks every artifact under root the way a consumer would:
// either a dist/ tree (dist/<project>/<version>/, each with CheckDir) or a
// downloaded GitHub release (flat assets named by ReleaseAsset, plus the
// release's SHA256SUMS and SHA256SUMS.asc). publicKey, when set, requires
// a good signature on every statement (and on the release's SHA256SUMS).
// The error is for a root that holds no artifact at all, or ctx's: a
// cancelled check is never a pass.
func CheckTree(ctx context.Context, root string, publicKey []byte) (*Tree, error) {
	t := &Tree{Root: root, SignaturesChecked: len(publicKey) > 0}
	want := func(project, version string) Expect {
		return Expect{Project: project, Version: version, PublicKey: publicKey}
	}
	for _, project := range Projects {
		entries, err := os.ReadDir(filepath.Join(root, project))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if strings.HasPrefix(e.Name(), ".") {
				continue
			}
			dir := filepath.Join(root, project, e.Name())
			art, err := CheckDir(dir, want(project, e.Name()))
			t.add(Entry{Project: project, Version: e.Name(), Where: dir, Artifact: art, Err: err})
		}
	}
	if len(t.Entries) > 0 {
		return t, ctx.Err()
	}

	// A downloaded release.
	names, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", root, err)
	}
	have := map[string]bool{}
	for _, e := range names {
		if e.Type().IsRegular() {
			have[e.Name()] = true
		}
	}
	for _, name := range slices.Sorted(maps.Keys(have)) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var base string
		switch {
		case strings.HasSuffix(name, releaseStatement):
			base = strings.TrimSuffix(name, releaseStatement)
		case strings.HasSuffix(name, releaseBinary):
			if b := strings.TrimSuffix(name, releaseBinary); !have[b+releaseStatement] {
				t.Release = true
				t.add(Entry{Where: filepath.Join(root, b), Err: fmt.Errorf("%s has no statement %s beside it", filepath.Join(root, name), b+releaseStatement)})
			}
			continue
		default:
			continue
		}
		t.Release = true
		project, version, ok := strings.Cut(base, releaseInfix)
		if !ok {
			t.add(Entry{Where: filepath.Join(root, base), Err: fmt.Errorf("%s: not named <project>%s<version>%s", filepath.Join(root, name), releaseInfix, releaseStatement)})
			continue
		}
		loc := location{where: filepath.Join(root, base), files: map[string]string{},
			statement: filepath.Join(root, ReleaseAsset(project, version, dist.StatementFile)),
			signature: filepath.Join(root, ReleaseAsset(project, version, dist.SignatureFile))}
		for _, n := range []string{project, dist.ProvenanceFile, dist.ReportFile} {
			if a := ReleaseAsset(project, version, n); have[a] {
				loc.files[n] = filepath.Join(root, a)
			}
		}
		art, err := check(loc, want(project, version))
		t.add(Entry{Project: project, Version: version, Where: loc.where, Artifact: art, Err: err})
	}
	if !t.Release {
		return nil, fmt.Errorf("%s holds no artifact: expected a dist/ tree (<project>/<version>/%s) or a downloaded release (*%s assets)", root, dist.StatementFile, releaseStatement)
	}
	t.Problems = append(t.Problems, releaseSums(root, publicKey)...)
	return t, ctx.Err()
}

func (t *Tree) add(e Entry) {
	t.Entries = append(t.Entries, e)
	if e.Err != nil {
		t.Problems = append(t.Problems, e.Err.Error())
	}
}

// releaseSums checks a release's own SHA256SUMS (every listed asset must
// be there and match) and, with a public key, SHA256SUMS.asc.
func releaseSums(root string, publicKey []byte) []string {
	path := filepath.Join(root, dist.SumsFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return []string{fmt.Sprintf("%v (download every asset of the release)", err)}
	}
	var problems []string
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 || name == "" || strings.ContainsAny(name, `/\`) {
			problems = append(problems, fmt.Sprintf("%s: malformed line %q", path, sc.Text()))
			continue
		}
		got, err := dist.FileSHA256(filepath.Join(root, name))
		switch {
		case errors.Is(err, os.ErrNotExist):
			problems = append(problems, fmt.Sprintf("%s is listed in %s but was not downloaded", name, path))
		case err != nil:
			problems = append(problems, err.Error())
		case got != sum:
			problems = append(problems, (&ModifiedError{File: filepath.Join(root, name), Recorded: sum, Actual: got, Record: dist.SumsFile}).Error())
		}
	}
	if len(publicKey) == 0 {
		return problems
	}
	sig, err := os.ReadFile(path + ".asc")
	if err != nil {
		return append(problems, fmt.Sprintf("%s is not signed (%v), and a public key was given", path, err))
	}
	if _, err := signing.Check(publicKey, data, sig); err != nil {
		problems = append(problems, (&SignatureError{File: path + ".asc", Err: err}).Error())
	}
	return problems
}
