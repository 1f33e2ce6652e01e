package attest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	slsa "github.com/in-toto/attestation/go/predicates/provenance/v1"
	ita "github.com/in-toto/attestation/go/v1"

	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/signing"
)

// Expect is what the caller knows an artifact must be.
type Expect struct {
	// Project and Version, when set, must be what the statement names (a
	// directory renamed or copied to another version is not that version).
	Project, Version string
	// InputKey, when set, must be the input key the statement records; an
	// intact artifact with another key is a *StaleError.
	InputKey string
	// PublicKey, when set (armored OpenPGP), requires a signature by it
	// over the statement.
	PublicKey []byte
}

// Artifact is an artifact that passed CheckDir.
type Artifact struct {
	Dir        string
	Binary     string // path of the binary
	SHA256     string // its sha256, re-hashed, equal to the statement's subject
	InputKey   string
	Verdict    string
	Dynamic    string
	Provenance *dist.Provenance
	Statement  *ita.Statement
	Predicate  *slsa.Provenance
	// Signer is the fingerprint of the key whose signature was checked;
	// empty when no public key was given.
	Signer string
	// Signed says a signature file is present (checked only with a key).
	Signed bool
}

// ErrAbsent: there is no artifact directory.
var ErrAbsent = errors.New("no artifact")

// ErrNoStatement: the directory has no statement (made by a nokmem that
// predates statements, or its statement was removed).
var ErrNoStatement = errors.New("no " + dist.StatementFile)

// ErrUnsigned: a public key is configured but the statement is not signed.
var ErrUnsigned = errors.New(dist.StatementFile + " is not signed, and a signature is required (NOKMEM_SIGNING_KEY or NOKMEM_VERIFY_PUBKEY is set)")

// ModifiedError: a file no longer has the digest the statement records.
type ModifiedError struct {
	File     string // path
	Recorded string // sha256 the record holds
	Actual   string // sha256 of the file now
	Record   string // the file that records it
}

func (e *ModifiedError) Error() string {
	return fmt.Sprintf("%s: sha256 %s, but %s records %s", e.File, e.Actual, e.Record, e.Recorded)
}

// SignatureError: the statement's signature does not verify.
type SignatureError struct {
	File string
	Err  error
}

func (e *SignatureError) Error() string {
	return fmt.Sprintf("%s does not verify with the configured public key (the statement was changed after signing, or signed by another key): %v", e.File, e.Err)
}

func (e *SignatureError) Unwrap() error { return e.Err }

// NotIntactError says that an artifact directory is not what nokmem
// published. Problems holds every finding.
type NotIntactError struct {
	Dir      string
	Problems []error
}

func (e *NotIntactError) Error() string {
	msgs := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		msgs[i] = p.Error()
	}
	head := "is not an intact nokmem artifact"
	if e.Modified() {
		head = "was modified after it was verified"
	}
	return fmt.Sprintf("%s %s (%s)", e.Dir, head, strings.Join(msgs, "; "))
}

func (e *NotIntactError) Unwrap() []error { return e.Problems }

// Modified reports whether a file differs from its recorded digest.
func (e *NotIntactError) Modified() bool {
	var m *ModifiedError
	for _, p := range e.Problems {
		if errors.As(p, &m) {
			return true
		}
	}
	return false
}

// StaleError: the artifact is intact but was built from other inputs.
type StaleError struct {
	Dir, Recorded, Want string
}

func (e *StaleError) Error() string {
	return fmt.Sprintf("%s was built from other inputs (input key %.12s…, now %.12s…)", e.Dir, e.Recorded, e.Want)
}

// Replaceable reports whether an error of CheckDir allows a build to
// replace the directory: it is absent, or intact but built from other
// inputs. Anything else is evidence and is kept, a directory without a
// statement too: removing the statement must not be a way to have a
// tampered directory replaced, and so its evidence destroyed.
func Replaceable(err error) bool {
	var stale *StaleError
	return errors.Is(err, ErrAbsent) || errors.As(err, &stale)
}

// location maps the names a statement uses to local files.
type location struct {
	where     string            // the directory or release base, for messages
	statement string            // path of the statement
	signature string            // path of its signature
	files     map[string]string // name in the statement → path
	// dir, when set, is an artifact directory (the dist layout): every
	// file in it must be accounted for, all byproducts must be present,
	// and its SHA256SUMS must match.
	dir string
}

// CheckDir checks the artifact directory dir (dist/<project>/<version>):
// the statement parses and validates as an in-toto Statement v1 with a
// SLSA Provenance v1 predicate of nokmem's build type; its signature
// verifies when want.PublicKey is set; the binary has the subject's
// sha256 and every other file the sha256 the statement pins; nothing else
// is in the directory; SHA256SUMS matches; the statement is exactly what
// attest writes from provenance.json (exact); and the verification passed.
// Only then is want.InputKey compared. The error is ErrAbsent (wrapped), a
// *NotIntactError (a directory without a statement too) or a *StaleError.
func CheckDir(dir string, want Expect) (*Artifact, error) {
	st, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", dir, ErrAbsent)
	}
	if err != nil {
		return nil, &NotIntactError{Dir: dir, Problems: []error{err}}
	}
	if !st.IsDir() {
		return nil, &NotIntactError{Dir: dir, Problems: []error{errors.New("not a directory")}}
	}
	loc := location{where: dir, dir: dir, statement: filepath.Join(dir, dist.StatementFile),
		signature: filepath.Join(dir, dist.SignatureFile), files: map[string]string{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, &NotIntactError{Dir: dir, Problems: []error{err}}
	}
	var odd []error
	for _, e := range entries {
		loc.files[e.Name()] = filepath.Join(dir, e.Name())
		if !e.Type().IsRegular() {
			odd = append(odd, fmt.Errorf("%s is not a regular file (%s)", loc.files[e.Name()], e.Type()))
		}
	}
	if _, err := os.Lstat(loc.statement); errors.Is(err, os.ErrNotExist) {
		return nil, legacy(dir)
	}
	art, err := check(loc, want)
	if len(odd) == 0 {
		return art, err
	}
	// A symbolic link could be pointed elsewhere after the check.
	var ni *NotIntactError
	if errors.As(err, &ni) {
		ni.Problems = append(odd, ni.Problems...)
		return nil, ni
	}
	return nil, &NotIntactError{Dir: dir, Problems: odd}
}

// legacy judges a directory without a statement: not intact (made by an
// older nokmem, or tampered), and modified when its binary contradicts the
// provenance.json beside it.
func legacy(dir string) error {
	problems := []error{fmt.Errorf("%w (made by an older nokmem, or tampered: its statement was removed)", ErrNoStatement)}
	var prov dist.Provenance
	if dist.ReadJSON(dir, dist.ProvenanceFile, &prov) == nil && prov.Output.File != "" && prov.Output.SHA256 != "" &&
		!strings.ContainsAny(prov.Output.File, `/\`) {
		bin := filepath.Join(dir, prov.Output.File)
		if sum, err := dist.FileSHA256(bin); err == nil && sum != prov.Output.SHA256 {
			problems = append(problems, &ModifiedError{File: bin, Recorded: prov.Output.SHA256, Actual: sum, Record: dist.ProvenanceFile})
		}
	}
	return &NotIntactError{Dir: dir, Problems: problems}
}

func check(loc location, want Expect) (*Artifact, error) {
	var problems []error
	bad := func(format string, a ...any) { problems = append(problems, fmt.Errorf(format, a...)) }
	fail := func() error { return &NotIntactError{Dir: loc.where, Problems: problems} }

	raw, err := os.ReadFile(loc.statement)
	if err != nil {
		bad("%w", err)
		return nil, fail()
	}
	stmt, pred, err := Parse(raw)
	if err != nil {
		bad("%s: %w", loc.statement, err)
		return nil, fail()
	}
	art := &Artifact{Dir: loc.where, Statement: stmt, Predicate: pred}

	// The signature first: without it, nothing below is more than a
	// consistency check.
	sig, sigErr := os.ReadFile(loc.signature)
	art.Signed = sigErr == nil
	if len(want.PublicKey) > 0 {
		switch {
		case errors.Is(sigErr, os.ErrNotExist):
			problems = append(problems, ErrUnsigned)
		case sigErr != nil:
			bad("%w", sigErr)
		default:
			fpr, err := signing.Check(want.PublicKey, raw, sig)
			if err != nil {
				problems = append(problems, &SignatureError{File: loc.signature, Err: err})
			}
			art.Signer = fpr
		}
	}

	ext := pred.GetBuildDefinition().GetExternalParameters()
	project, err1 := field(ext, "project")
	version, err2 := field(ext, "version")
	key, err3 := field(pred.GetBuildDefinition().GetInternalParameters(), "inputKey")
	for _, err := range []error{err1, err2, err3} {
		if err != nil {
			bad("%s: %w", loc.statement, err)
		}
	}
	art.InputKey = key
	if want.Project != "" && (project != want.Project || version != want.Version) {
		bad("the statement is for %s %s, not %s %s (a directory renamed or copied?)", project, version, want.Project, want.Version)
	}

	// The subject: the binary.
	subjects := stmt.GetSubject()
	if len(subjects) != 1 || subjects[0].GetDigest()["sha256"] == "" {
		bad("%s: want one subject with a sha256 digest, found %d", loc.statement, len(subjects))
		return nil, fail()
	}
	subject := subjects[0]
	binPath, ok := loc.files[subject.GetName()]
	if !ok || strings.ContainsAny(subject.GetName(), `/\`) {
		bad("the binary %s the statement is about is missing", subject.GetName())
	} else {
		art.Binary = binPath
		if m, err := compare(binPath, subject.GetDigest()["sha256"], filepath.Base(loc.statement)); err != nil {
			problems = append(problems, err)
		} else if m != nil {
			problems = append(problems, m)
		} else {
			art.SHA256 = subject.GetDigest()["sha256"]
		}
	}

	// Byproducts: every other file, pinned by digest.
	pinned := map[string]bool{subject.GetName(): true}
	var report *ita.ResourceDescriptor
	for _, rd := range pred.GetRunDetails().GetByproducts() {
		name := rd.GetName()
		pinned[name] = true
		if name == dist.ReportFile {
			report = rd
		}
		sum := rd.GetDigest()["sha256"]
		if sum == "" {
			continue
		}
		p, ok := loc.files[name]
		if !ok || strings.ContainsAny(name, `/\`) {
			if loc.dir != "" {
				bad("%s, which the statement pins, is missing", name)
			}
			continue
		}
		if m, err := compare(p, sum, filepath.Base(loc.statement)); err != nil {
			problems = append(problems, err)
		} else if m != nil {
			problems = append(problems, m)
		}
	}
	for _, name := range []string{dist.ProvenanceFile, dist.ReportFile} {
		if !pinned[name] {
			bad("the statement does not pin %s", name)
		}
	}
	if loc.dir != "" {
		for _, name := range slices.Sorted(maps.Keys(loc.files)) {
			if !pinned[name] && !own(name) {
				bad("%s is not recorded in the statement", loc.files[name])
			}
		}
		if _, err := dist.CheckSums(loc.dir); err != nil {
			bad("%s: %w", dist.SumsFile, err)
		}
	}

	// The verification passed, as the statement, verify.json and
	// provenance.json all say.
	passed := report.GetAnnotations().GetFields()["passed"].GetBoolValue()
	art.Verdict = report.GetAnnotations().GetFields()["verdict"].GetStringValue()
	art.Dynamic = report.GetAnnotations().GetFields()["dynamic"].GetStringValue()
	if report != nil && !passed {
		bad("the statement records a failed verification (verdict %q); nokmem never publishes one", art.Verdict)
	}
	if p, ok := loc.files[dist.ReportFile]; ok {
		var rep struct {
			Passed  bool   `json:"passed"`
			Verdict string `json:"verdict"`
			SHA256  string `json:"sha256"`
		}
		if err := readJSON(p, &rep); err != nil {
			bad("%s: %w", p, err)
		} else if !rep.Passed {
			bad("%s records a failed verification (verdict %q)", p, rep.Verdict)
		} else if rep.SHA256 != "" && rep.SHA256 != subject.GetDigest()["sha256"] {
			bad("%s verified sha256 %s, not the subject %s", p, rep.SHA256, subject.GetDigest()["sha256"])
		}
	}
	if p, ok := loc.files[dist.ProvenanceFile]; ok {
		var prov dist.Provenance
		if err := readJSON(p, &prov); err != nil {
			bad("%s: %w", p, err)
		} else {
			art.Provenance = &prov
			switch {
			case !prov.Verified.Passed:
				bad("%s records a failed verification (verdict %q)", p, prov.Verified.Verdict)
			case prov.Project != project || prov.Version != version || prov.InputKey != key ||
				prov.Output.File != subject.GetName() || prov.Output.SHA256 != subject.GetDigest()["sha256"]:
				bad("%s disagrees with the statement (%s %s %s sha256 %s, input key %.12s…)", p,
					prov.Project, prov.Version, prov.Output.File, prov.Output.SHA256, prov.InputKey)
			default:
				if err := exact(raw, pred, &prov); err != nil {
					bad("%s: %w", loc.statement, err)
				}
			}
		}
	}
	if len(problems) > 0 {
		return nil, fail()
	}
	if want.InputKey != "" && key != want.InputKey {
		return nil, &StaleError{Dir: loc.where, Recorded: key, Want: want.InputKey}
	}
	return art, nil
}

// compare hashes path: a *ModifiedError when it differs from recorded.
func compare(path, recorded, record string) (*ModifiedError, error) {
	sum, err := dist.FileSHA256(path)
	if err != nil {
		return nil, err
	}
	if sum != recorded {
		return &ModifiedError{File: path, Recorded: recorded, Actual: sum, Record: record}, nil
	}
	return nil, nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// exact requires the statement raw to be what attest writes from prov, the
// provenance.json it pins, field by field. Only what provenance.json
// cannot hold is taken from the statement itself: the byproducts' digests
// (each checked against its file), when it was written (finishedOn) and
// the go binary's digest. Any other edit of the statement without the
// same edit of provenance.json (whose digest the statement pins) is
// found here; an edit of both, consistent, needs the signature to be
// found.
func exact(raw []byte, pred *slsa.Provenance, prov *dist.Provenance) error {
	var files []named
	for _, rd := range pred.GetRunDetails().GetByproducts() {
		files = append(files, named{name: rd.GetName(), sha256: rd.GetDigest()["sha256"]})
	}
	f := facts{finished: pred.GetRunDetails().GetMetadata().GetFinishedOn().AsTime()}
	for _, rd := range pred.GetBuildDefinition().GetResolvedDependencies() {
		if d := rd.GetDigest(); rd.GetName() == "toolchain:go" && len(d) == 1 && isSHA256(d["sha256"]) {
			f.goDigest = map[string]string{"sha256": d["sha256"]}
		}
	}
	got, err := canonical(raw)
	if err != nil {
		return err
	}
	var diffs []string
	for _, form := range []format{formatCurrent, formatNoToolchainRefs} {
		b, err := compose(prov, files, f, form)
		if err != nil {
			return fmt.Errorf("cannot be regenerated from %s: %w", dist.ProvenanceFile, err)
		}
		want, err := canonical(b)
		if err != nil {
			return err
		}
		d := differences("", got, want)
		if len(d) == 0 {
			return nil
		}
		if diffs == nil {
			diffs = d
		}
	}
	const most = 5
	more := ""
	if len(diffs) > most {
		more = fmt.Sprintf("; and %d more", len(diffs)-most)
		diffs = diffs[:most]
	}
	return fmt.Errorf("is not what %s gives (%s%s): the statement was edited", dist.ProvenanceFile, strings.Join(diffs, "; "), more)
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

// canonical decodes JSON into maps, slices and values, so that two
// documents compare by content, not by layout.
func canonical(b []byte) (any, error) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// differences lists where got differs from want, by JSON path.
func differences(path string, got, want any) []string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			break
		}
		var out []string
		for _, k := range slices.Sorted(maps.Keys(w)) {
			if _, ok := g[k]; !ok {
				out = append(out, fmt.Sprintf("%s: missing, %s from %s", strings.TrimPrefix(path+"."+k, "."), short(w[k]), dist.ProvenanceFile))
				continue
			}
			out = append(out, differences(path+"."+k, g[k], w[k])...)
		}
		for _, k := range slices.Sorted(maps.Keys(g)) {
			if _, ok := w[k]; !ok {
				out = append(out, fmt.Sprintf("%s: %s, not in what %s gives", strings.TrimPrefix(path+"."+k, "."), short(g[k]), dist.ProvenanceFile))
			}
		}
		return out
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			break
		}
		var out []string
		for i := range w {
			out = append(out, differences(fmt.Sprintf("%s[%d]", path, i), g[i], w[i])...)
		}
		return out
	default:
		if reflect.DeepEqual(got, want) {
			return nil
		}
	}
	return []string{fmt.Sprintf("%s: %s in the statement, %s from %s", strings.TrimPrefix(path, "."), short(got), short(want), dist.ProvenanceFile)}
}

func short(v any) string {
	b, _ := json.Marshal(v)
	if len(b) > 80 {
		return string(b[:77]) + "..."
	}
	return string(b)
}
