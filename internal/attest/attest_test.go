package attest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	slsa "github.com/in-toto/attestation/go/predicates/provenance/v1"
	ita "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/nokmem/nokmem/internal/build"
	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var finished = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

// goDigest stands for the sha256 of the go binary of the build machine.
var goDigest = map[string]string{"sha256": strings.Repeat("7e", 32)}

// testKey writes an armored private key and returns its path.
func testKey(t *testing.T, name string) string {
	t.Helper()
	e, err := openpgp.NewEntity(name, "", name+"@example.com", nil)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	w, _ := armor.Encode(&b, openpgp.PrivateKeyType, nil)
	if err := e.SerializePrivate(w, nil); err != nil {
		t.Fatal(err)
	}
	w.Close()
	p := filepath.Join(t.TempDir(), name+".asc")
	if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func keys(t *testing.T, name string) Keys {
	t.Helper()
	k, err := LoadKeys(testKey(t, name), "", "")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func write(t *testing.T, dir, name, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// provenance is what the pipeline records for a runc build.
func provenance(binSum string) *dist.Provenance {
	return &dist.Provenance{
		Schema: dist.ProvenanceSchema, Project: "runc", Version: "v1.0.0-rc9", Strategy: "tag", InputKey: strings.Repeat("ab", 32),
		Source: dist.SourceInfo{URL: "https://github.com/opencontainers/runc.git", Tag: "v1.0.0-rc9",
			Commit: "d736ef14f0288d6993a1845745d6756cfc9ddd5a", CommitDate: time.Date(2019, 10, 5, 0, 0, 0, 0, time.UTC),
			TreeCommit: "d736ef14f0288d6993a1845745d6756cfc9ddd5a", Matrix: "matrix/runc.yaml", Pinned: "pinned"},
		Patches: []dist.PatchInfo{{Name: "runc-memory-go-rc9.patch", SHA256: strings.Repeat("12", 32), Target: "libcontainer/cgroups/fs/memory.go",
			BaseSHA256: strings.Repeat("34", 32), ResultSHA256: strings.Repeat("56", 32)}},
		Build: dist.BuildInfo{Tags: []string{"seccomp", "nokmem"}, GoRequested: "1.12", GoUsed: "go1.12.17", GoSource: "era", Mode: "host",
			Args: []string{"go", "build"}, Env: map[string]string{"GO111MODULE": "off"}, Target: "el7", GOAMD64: "v1",
			Cgo: build.CgoInfo{CC: "gcc 12.2.0", Libseccomp: "2.5.4"}, Toolkit: "0123456789abcdef0123456789abcdef01234567"},
		Output:   dist.OutputInfo{File: "runc", SHA256: binSum, Size: 4},
		Checks:   map[string]any{},
		Verified: dist.VerifiedInfo{Passed: true, Verdict: "nokmem", Dynamic: "pass"},
	}
}

// artifact publishes a runc artifact directory the way the pipeline does:
// binary, verify.json, provenance.json, the statement (signed with k),
// SHA256SUMS.
func artifact(t *testing.T, root string, k Keys) string {
	t.Helper()
	return artifactWith(t, root, k, func(*dist.Provenance) {})
}

func artifactWith(t *testing.T, root string, k Keys, edit func(*dist.Provenance)) string {
	t.Helper()
	dir := dist.Dir(root, "runc", "v1.0.0-rc9")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, dir, "runc", "ELF!", 0o755)
	sum := dist.SHA256Hex([]byte("ELF!"))
	prov := provenance(sum)
	edit(prov)
	rep, _ := json.Marshal(map[string]any{"schema": "nokmem.verify/v1", "project": "runc", "binary": "runc", "sha256": sum,
		"verdict": prov.Verified.Verdict, "passed": prov.Verified.Passed})
	write(t, dir, dist.ReportFile, string(rep)+"\n", 0o644)
	b, _ := json.MarshalIndent(prov, "", "  ")
	write(t, dir, dist.ProvenanceFile, string(b)+"\n", 0o644)
	st, err := renderFacts(dir, prov, facts{finished: finished, goDigest: goDigest})
	if err != nil {
		t.Fatal(err)
	}
	write(t, dir, dist.StatementFile, string(st), 0o644)
	if k.Sign != nil {
		sig, err := k.Sign(st)
		if err != nil {
			t.Fatal(err)
		}
		write(t, dir, dist.SignatureFile, string(sig), 0o644)
	}
	if err := dist.WriteSums(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The statement is what the in-toto Go types parse and validate, with the
// fields the issue asks for; the golden file shows the whole of it.
func TestStatementIsInTotoSLSAProvenance(t *testing.T) {
	dir := artifact(t, t.TempDir(), Keys{})
	b, err := os.ReadFile(filepath.Join(dir, dist.StatementFile))
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "runc.intoto.json")
	if *update {
		os.MkdirAll("testdata", 0o755)
		os.WriteFile(golden, b, 0o644)
	}
	if want, err := os.ReadFile(golden); err != nil || !bytes.Equal(b, want) {
		t.Errorf("statement differs from %s (go test -update to refresh): %v\n%s", golden, err, b)
	}

	var st ita.Statement
	if err := protojson.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if err := st.Validate(); err != nil {
		t.Fatal(err)
	}
	pj, _ := protojson.Marshal(st.GetPredicate())
	var pred slsa.Provenance
	if err := protojson.Unmarshal(pj, &pred); err != nil {
		t.Fatal(err)
	}
	if err := pred.Validate(); err != nil {
		t.Fatal(err)
	}
	if st.GetType() != "https://in-toto.io/Statement/v1" || st.GetPredicateType() != "https://slsa.dev/provenance/v1" {
		t.Errorf("types %q %q", st.GetType(), st.GetPredicateType())
	}
	if s := st.GetSubject(); len(s) != 1 || s[0].GetName() != "runc" || s[0].GetDigest()["sha256"] != dist.SHA256Hex([]byte("ELF!")) {
		t.Errorf("subject %v", s)
	}
	bd := pred.GetBuildDefinition()
	ext := bd.GetExternalParameters().GetFields()
	if bd.GetBuildType() != BuildType || ext["version"].GetStringValue() != "v1.0.0-rc9" || ext["target"].GetStringValue() != "el7" ||
		ext["strategy"].GetStringValue() != "tag" {
		t.Errorf("build definition %v", bd)
	}
	if k := bd.GetInternalParameters().GetFields()["inputKey"].GetStringValue(); k != strings.Repeat("ab", 32) {
		t.Errorf("input key %q", k)
	}
	deps := map[string]*ita.ResourceDescriptor{}
	for _, d := range bd.GetResolvedDependencies() {
		deps[d.GetName()] = d
	}
	if d := deps["source"]; d.GetUri() != "git+https://github.com/opencontainers/runc.git@refs/tags/v1.0.0-rc9" ||
		d.GetDigest()["gitCommit"] != "d736ef14f0288d6993a1845745d6756cfc9ddd5a" {
		t.Errorf("source %v", d)
	}
	if d := deps["patch:runc-memory-go-rc9.patch"]; d.GetDigest()["sha256"] != strings.Repeat("12", 32) {
		t.Errorf("patch %v", d)
	}
	if d := deps["toolchain:go"]; d.GetAnnotations().GetFields()["version"].GetStringValue() != "go1.12.17" {
		t.Errorf("toolchain %v", d)
	}
	if d := deps["toolchain:cgo"]; d.GetAnnotations().GetFields()["libseccomp"].GetStringValue() != "2.5.4" {
		t.Errorf("cgo %v", d)
	}
	rd := pred.GetRunDetails()
	if rd.GetBuilder().GetId() != BuilderID || rd.GetBuilder().GetVersion()["nokmem"] == "" || !rd.GetMetadata().GetFinishedOn().AsTime().Equal(finished) {
		t.Errorf("run details %v", rd)
	}
	var report *ita.ResourceDescriptor
	for _, b := range rd.GetByproducts() {
		if b.GetName() == dist.ReportFile {
			report = b
		}
	}
	if f := report.GetAnnotations().GetFields(); !f["passed"].GetBoolValue() || f["verdict"].GetStringValue() != "nokmem" || len(report.GetDigest()["sha256"]) != 64 {
		t.Errorf("verification byproduct %v", report)
	}
	// Statement refuses a failed verification outright.
	prov := provenance(dist.SHA256Hex([]byte("ELF!")))
	prov.Verified.Passed = false
	if _, err := Statement(dir, prov, finished); err == nil {
		t.Error("a statement was made for a failed verification")
	}
}

func TestCheckDirAcceptsWhatWasPublished(t *testing.T) {
	for _, signed := range []bool{false, true} {
		k := Keys{}
		if signed {
			k = keys(t, "builder")
		}
		dir := artifact(t, t.TempDir(), k)
		art, err := CheckDir(dir, Expect{Project: "runc", Version: "v1.0.0-rc9", InputKey: strings.Repeat("ab", 32), PublicKey: k.PublicKey})
		if err != nil {
			t.Fatalf("signed=%v: %v", signed, err)
		}
		if art.SHA256 != dist.SHA256Hex([]byte("ELF!")) || art.Binary != filepath.Join(dir, "runc") || art.Verdict != "nokmem" ||
			art.Provenance.Source.Commit == "" || art.Signed != signed || (art.Signer != "") != signed {
			t.Errorf("signed=%v: %+v", signed, art)
		}
	}
}

// Each way of changing a published directory, followed by a regenerated
// SHA256SUMS, is found, named, and not replaceable.
func TestTamperAndResum(t *testing.T) {
	other := keys(t, "mallory")
	cases := []struct {
		name     string
		signed   bool
		tamper   func(t *testing.T, dir string)
		modified string // the file reported as modified, if any
		want     string
		unsummed bool // WriteSums cannot list what the tamper left
	}{
		{name: "artifact modified", tamper: func(t *testing.T, dir string) { write(t, dir, "runc", "ELF?", 0o755) },
			modified: "runc", want: "was modified after it was verified"},
		{name: "provenance edited", tamper: func(t *testing.T, dir string) {
			edit(t, dir, dist.ProvenanceFile, `"passed": true`, `"passed": true `)
		}, modified: dist.ProvenanceFile, want: "was modified after it was verified"},
		{name: "verification report edited", tamper: func(t *testing.T, dir string) {
			edit(t, dir, dist.ReportFile, `"verdict":"nokmem"`, `"verdict":"nokmem" `)
		}, modified: dist.ReportFile, want: "was modified"},
		{name: "statement edited to the modified artifact", tamper: func(t *testing.T, dir string) {
			write(t, dir, "runc", "ELF?", 0o755)
			edit(t, dir, dist.StatementFile, dist.SHA256Hex([]byte("ELF!")), dist.SHA256Hex([]byte("ELF?")))
		}, want: "disagrees with the statement"},
		{name: "file added", tamper: func(t *testing.T, dir string) { write(t, dir, "runc.orig", "x", 0o644) },
			want: "is not recorded in the statement"},
		{name: "artifact replaced by a link to the same bytes", tamper: func(t *testing.T, dir string) {
			elsewhere := filepath.Join(t.TempDir(), "runc")
			os.WriteFile(elsewhere, []byte("ELF!"), 0o755)
			os.Remove(filepath.Join(dir, "runc"))
			if err := os.Symlink(elsewhere, filepath.Join(dir, "runc")); err != nil {
				t.Fatal(err)
			}
		}, want: "is not a regular file", unsummed: true},
		{name: "statement replaced by a non-statement", tamper: func(t *testing.T, dir string) {
			write(t, dir, dist.StatementFile, `{"_type": "https://in-toto.io/Statement/v1", "subject": []}`, 0o644)
		}, want: "invalid in-toto statement"},
		{name: "statement with a field the spec does not have", tamper: func(t *testing.T, dir string) {
			edit(t, dir, dist.StatementFile, `"_type"`, `"passed": true, "_type"`)
		}, want: "not an in-toto statement"},
		{name: "forged statement, old signature", signed: true, tamper: func(t *testing.T, dir string) {
			write(t, dir, "runc", "ELF?", 0o755)
			prov := provenance(dist.SHA256Hex([]byte("ELF?")))
			b, _ := json.MarshalIndent(prov, "", "  ")
			write(t, dir, dist.ProvenanceFile, string(b), 0o644)
			st, err := Statement(dir, prov, finished)
			if err != nil {
				t.Fatal(err)
			}
			write(t, dir, dist.StatementFile, string(st), 0o644)
		}, want: "does not verify with the configured public key"},
		{name: "re-signed by another key", signed: true, tamper: func(t *testing.T, dir string) {
			st, _ := os.ReadFile(filepath.Join(dir, dist.StatementFile))
			sig, _ := other.Sign(st)
			write(t, dir, dist.SignatureFile, string(sig), 0o644)
		}, want: "does not verify with the configured public key"},
		{name: "signature removed", signed: true, tamper: func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, dist.SignatureFile))
		}, want: "is not signed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := Keys{}
			if tc.signed {
				k = keys(t, "builder")
			}
			dir := artifact(t, t.TempDir(), k)
			tc.tamper(t, dir)
			if err := dist.WriteSums(dir); err != nil {
				t.Fatal(err)
			}
			if _, err := dist.CheckSums(dir); err != nil && !tc.unsummed {
				t.Fatalf("SHA256SUMS was not regenerated: %v", err)
			}
			_, err := CheckDir(dir, Expect{Project: "runc", Version: "v1.0.0-rc9", InputKey: strings.Repeat("ab", 32), PublicKey: k.PublicKey})
			t.Log(err)
			var ni *NotIntactError
			if !errors.As(err, &ni) {
				t.Fatalf("not reported as not intact: %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), dir+" ") {
				t.Errorf("error does not name %s and say %q:\n%v", dir, tc.want, err)
			}
			if Replaceable(err) {
				t.Error("a tampered directory may be replaced")
			}
			var m *ModifiedError
			if got := errors.As(err, &m); got != (tc.modified != "") {
				t.Fatalf("modified=%v, want %q: %v", got, tc.modified, err)
			}
			if m != nil {
				actual, _ := dist.FileSHA256(filepath.Join(dir, tc.modified))
				if m.File != filepath.Join(dir, tc.modified) || m.Actual != actual || m.Recorded == actual || !strings.Contains(err.Error(), m.Recorded) {
					t.Errorf("modified file %+v, want %s with sha256 %s", m, tc.modified, actual)
				}
			}
		})
	}
}

func edit(t *testing.T, dir, name, old, new string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil || !bytes.Contains(b, []byte(old)) {
		t.Fatalf("%s lacks %q: %v", name, old, err)
	}
	write(t, dir, name, strings.Replace(string(b), old, new, 1), 0o644)
}

// An intact, consistent, even signed statement of a failed verification
// is not an artifact to use or replace: nokmem never publishes one.
func TestRecordedFailedVerificationIsNeverAccepted(t *testing.T) {
	k := keys(t, "builder")
	dir := artifactWith(t, t.TempDir(), k, func(p *dist.Provenance) {
		p.Verified = dist.VerifiedInfo{Passed: false, Verdict: "kmem-enabled", Dynamic: "fail"}
	})
	_, err := CheckDir(dir, Expect{Project: "runc", Version: "v1.0.0-rc9", InputKey: strings.Repeat("ab", 32), PublicKey: k.PublicKey})
	if err == nil || !strings.Contains(err.Error(), "records a failed verification") || Replaceable(err) {
		t.Fatalf("failed verification: %v (replaceable %v)", err, Replaceable(err))
	}
}

// Each of the three records of the verification (the statement's
// annotation, verify.json, provenance.json) is enough to refuse, even when
// the other two say it passed and every digest matches.
func TestEachRecordOfAFailedVerificationIsEnough(t *testing.T) {
	for _, tc := range []struct {
		name                          string
		statement, report, provenance bool
		want                          string
	}{
		{"all passed", true, true, true, ""},
		{"statement", false, true, true, "the statement records a failed verification"},
		{"verify.json", true, false, true, "verify.json records a failed verification"},
		{"provenance.json", true, true, false, "provenance.json records a failed verification"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, dir, "runc", "ELF!", 0o755)
			sum := dist.SHA256Hex([]byte("ELF!"))
			rep, _ := json.Marshal(map[string]any{"passed": tc.report, "verdict": "nokmem", "sha256": sum})
			write(t, dir, dist.ReportFile, string(rep), 0o644)
			prov := provenance(sum)
			prov.Verified.Passed = tc.provenance
			b, _ := json.Marshal(prov)
			write(t, dir, dist.ProvenanceFile, string(b), 0o644)
			prov.Verified.Passed = tc.statement
			st, err := render(dir, prov, finished)
			if err != nil {
				t.Fatal(err)
			}
			write(t, dir, dist.StatementFile, string(st), 0o644)
			dist.WriteSums(dir)
			_, err = CheckDir(dir, Expect{})
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || Replaceable(err) {
				t.Fatalf("want %q: %v", tc.want, err)
			}
		})
	}
}

func TestWhatABuildMayReplace(t *testing.T) {
	root := t.TempDir()
	// Absent.
	_, err := CheckDir(dist.Dir(root, "runc", "v1.0.0-rc9"), Expect{})
	if !errors.Is(err, ErrAbsent) || !Replaceable(err) {
		t.Errorf("absent: %v", err)
	}
	// Intact, other inputs.
	dir := artifact(t, root, Keys{})
	_, err = CheckDir(dir, Expect{Project: "runc", Version: "v1.0.0-rc9", InputKey: strings.Repeat("cd", 32)})
	var stale *StaleError
	if !errors.As(err, &stale) || !Replaceable(err) {
		t.Errorf("stale: %v", err)
	}
	// Copied to another version's place.
	moved := dist.Dir(root, "runc", "v1.0.0-rc8")
	os.Rename(dir, moved)
	if _, err = CheckDir(moved, Expect{Project: "runc", Version: "v1.0.0-rc8"}); err == nil || !strings.Contains(err.Error(), "not runc v1.0.0-rc8") || Replaceable(err) {
		t.Errorf("renamed: %v", err)
	}
	// No statement (an older nokmem, or its statement was removed): kept
	// as evidence, never replaced, and modified when its binary
	// contradicts its provenance.json.
	os.Remove(filepath.Join(moved, dist.StatementFile))
	dist.WriteSums(moved)
	if _, err = CheckDir(moved, Expect{}); !errors.Is(err, ErrNoStatement) || Replaceable(err) ||
		!strings.Contains(err.Error(), "made by an older nokmem, or tampered") {
		t.Errorf("no statement: %v (replaceable %v)", err, Replaceable(err))
	}
	write(t, moved, "runc", "ELF?", 0o755)
	dist.WriteSums(moved)
	var m *ModifiedError
	if _, err = CheckDir(moved, Expect{}); !errors.As(err, &m) || Replaceable(err) || m.Record != dist.ProvenanceFile {
		t.Errorf("legacy, modified: %v", err)
	}
}

// gpg itself accepts the statement's signature: consumers need no nokmem.
func TestGPGVerifiesTheStatement(t *testing.T) {
	if _, err := exec.LookPath("gpg"); err != nil {
		if testenv.InCI() {
			t.Fatal("CI=true but gpg is missing (.ci/run installs it)")
		}
		t.Skip("needs gpg")
	}
	k := keys(t, "builder")
	dir := artifact(t, t.TempDir(), k)
	home := filepath.Join(t.TempDir(), "gnupg")
	os.Mkdir(home, 0o700)
	pub := filepath.Join(t.TempDir(), "pub.asc")
	os.WriteFile(pub, k.PublicKey, 0o644)
	gpg := func(args ...string) error {
		out, err := exec.Command("gpg", append([]string{"--batch", "--homedir", home}, args...)...).CombinedOutput()
		if err != nil {
			t.Logf("gpg %v: %s", args, out)
		}
		return err
	}
	if err := gpg("--import", pub); err != nil {
		t.Fatal(err)
	}
	st, sig := filepath.Join(dir, dist.StatementFile), filepath.Join(dir, dist.SignatureFile)
	if err := gpg("--verify", sig, st); err != nil {
		t.Fatal("gpg rejected the statement's signature")
	}
	edit(t, dir, dist.StatementFile, "nokmem", "nokmen")
	if err := gpg("--verify", sig, st); err == nil {
		t.Fatal("gpg accepted a changed statement")
	}
}

func TestLoadKeys(t *testing.T) {
	priv := testKey(t, "builder")
	k, err := LoadKeys(priv, "", "")
	if err != nil || k.Sign == nil || k.PublicKey == nil {
		t.Fatalf("%+v %v", k, err)
	}
	pub := filepath.Join(t.TempDir(), "pub.asc")
	os.WriteFile(pub, k.PublicKey, 0o644)
	if k2, err := LoadKeys(priv, "", pub); err != nil || !bytes.Equal(k2.PublicKey, k.PublicKey) {
		t.Errorf("matching pair: %v", err)
	}
	if k3, err := LoadKeys("", "", pub); err != nil || k3.Sign != nil || k3.PublicKey == nil {
		t.Errorf("public key alone: %+v %v", k3, err)
	}
	if _, err := LoadKeys(testKey(t, "other"), "", pub); err == nil || !strings.Contains(err.Error(), "does not belong to NOKMEM_VERIFY_PUBKEY") {
		t.Errorf("mismatched pair: %v", err)
	}
	if _, err := LoadKeys("", "", filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "NOKMEM_VERIFY_PUBKEY") {
		t.Errorf("missing public key: %v", err)
	}
}

// verify:dist's check over a dist/ tree and over a downloaded release.
func TestCheckTree(t *testing.T) {
	k := keys(t, "builder")
	root := t.TempDir()
	good := artifact(t, root, k)
	tree, err := CheckTree(context.Background(), root, k.PublicKey)
	if err != nil || len(tree.Entries) != 1 || len(tree.Problems) != 0 || tree.Release || tree.Entries[0].Artifact == nil {
		t.Fatalf("good dist: %+v %v", tree, err)
	}

	// The same artifact as release assets.
	rel := t.TempDir()
	var sums []string
	for _, name := range []string{"runc", dist.ProvenanceFile, dist.ReportFile, dist.StatementFile, dist.SignatureFile} {
		b, _ := os.ReadFile(filepath.Join(good, name))
		asset := ReleaseAsset("runc", "v1.0.0-rc9", name)
		write(t, rel, asset, string(b), 0o644)
		sums = append(sums, dist.SHA256Hex(b)+"  "+asset)
	}
	sumData := strings.Join(sums, "\n") + "\n"
	write(t, rel, dist.SumsFile, sumData, 0o644)
	sig, _ := k.Sign([]byte(sumData))
	write(t, rel, dist.SumsFile+".asc", string(sig), 0o644)
	tree, err = CheckTree(context.Background(), rel, k.PublicKey)
	if err != nil || !tree.Release || len(tree.Entries) != 1 || len(tree.Problems) != 0 {
		t.Fatalf("good release: %+v %v", tree, err)
	}
	// Tampered and re-summed: the statement still catches it.
	bin := filepath.Join(rel, ReleaseAsset("runc", "v1.0.0-rc9", "runc"))
	os.WriteFile(bin, []byte("ELF?"), 0o755)
	edit(t, rel, dist.SumsFile, dist.SHA256Hex([]byte("ELF!")), dist.SHA256Hex([]byte("ELF?")))
	tree, _ = CheckTree(context.Background(), rel, k.PublicKey)
	if got := strings.Join(tree.Problems, "\n"); !strings.Contains(got, bin+": sha256 "+dist.SHA256Hex([]byte("ELF?"))) ||
		!strings.Contains(got, "SHA256SUMS.asc does not verify") {
		t.Errorf("tampered release:\n%s", got)
	}

	// In the dist tree, one bad artifact among good ones is named.
	kube := dist.Dir(root, "kubelet", "v1.13.12")
	os.MkdirAll(kube, 0o755)
	write(t, kube, "kubelet", "ELF", 0o755)
	tree, _ = CheckTree(context.Background(), root, k.PublicKey)
	if len(tree.Entries) != 2 || len(tree.Problems) != 1 || !strings.Contains(tree.Problems[0], kube) {
		t.Errorf("mixed dist: %+v", tree.Problems)
	}
	if _, err := CheckTree(context.Background(), t.TempDir(), nil); err == nil || !strings.Contains(err.Error(), "holds no artifact") {
		t.Errorf("empty: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if tree, err := CheckTree(ctx, root, k.PublicKey); err == nil {
		t.Errorf("a cancelled check passed: %+v", tree)
	}
}

// editStatement rewrites dir's statement through edit (on its JSON) and
// regenerates SHA256SUMS, as a hostile editor would.
func editStatement(t *testing.T, dir string, edit func(st map[string]any)) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, dist.StatementFile))
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	edit(st)
	out, _ := json.MarshalIndent(st, "", "  ")
	write(t, dir, dist.StatementFile, string(out)+"\n", 0o644)
	if err := dist.WriteSums(dir); err != nil {
		t.Fatal(err)
	}
}

// m walks a decoded JSON document: m(st, "predicate", "buildDefinition").
func m(v any, path ...any) map[string]any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			v = v.(map[string]any)[k]
		case int:
			v = v.([]any)[k]
		}
	}
	return v.(map[string]any)
}

// Without a key, the statement must be exactly what provenance.json (which
// it pins by digest) gives: an edit of any field of one without the other
// is found, named, and not replaceable.
func TestStatementEditedWithoutItsProvenanceIsFound(t *testing.T) {
	for _, tc := range []struct {
		name, field string
		edit        func(st map[string]any)
	}{
		{"repository", "externalParameters.repository", func(st map[string]any) {
			m(st, "predicate", "buildDefinition", "externalParameters")["repository"] = "https://evil.example/runc.git"
		}},
		{"source commit", "resolvedDependencies[0].digest.gitCommit", func(st map[string]any) {
			m(st, "predicate", "buildDefinition", "resolvedDependencies", 0, "digest")["gitCommit"] = strings.Repeat("e", 40)
		}},
		{"target", "externalParameters.target", func(st map[string]any) {
			m(st, "predicate", "buildDefinition", "externalParameters")["target"] = "el9"
		}},
		{"build tags", "internalParameters.build.tags", func(st map[string]any) {
			m(st, "predicate", "buildDefinition", "internalParameters", "build")["tags"] = []any{"seccomp"}
		}},
		{"builder id", "builder.id", func(st map[string]any) {
			m(st, "predicate", "runDetails", "builder")["id"] = "https://evil.example/builder"
		}},
		{"verification annotation", "byproducts[1].annotations.notes", func(st map[string]any) {
			m(st, "predicate", "runDetails", "byproducts", 1, "annotations")["notes"] = []any{"all good"}
		}},
		{"added field", "internalParameters.extra", func(st map[string]any) {
			m(st, "predicate", "buildDefinition", "internalParameters")["extra"] = "x"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := artifact(t, t.TempDir(), Keys{})
			editStatement(t, dir, tc.edit)
			_, err := CheckDir(dir, Expect{Project: "runc", Version: "v1.0.0-rc9", InputKey: strings.Repeat("ab", 32)})
			var ni *NotIntactError
			if !errors.As(err, &ni) || Replaceable(err) || !strings.Contains(err.Error(), "is not what provenance.json gives") ||
				!strings.Contains(err.Error(), tc.field) {
				t.Fatalf("edit of %s: %v", tc.field, err)
			}
		})
	}
	// What provenance.json cannot hold is the statement's own: when it was
	// written. And a statement an earlier nokmem wrote (toolchains without
	// uri) is still exact.
	dir := artifact(t, t.TempDir(), Keys{})
	editStatement(t, dir, func(st map[string]any) {
		m(st, "predicate", "runDetails", "metadata")["finishedOn"] = "2027-01-01T00:00:00Z"
		for _, d := range m(st, "predicate", "buildDefinition")["resolvedDependencies"].([]any) {
			if name := d.(map[string]any)["name"].(string); strings.HasPrefix(name, "toolchain:") {
				delete(d.(map[string]any), "uri")
				delete(d.(map[string]any), "digest")
			}
		}
	})
	if _, err := CheckDir(dir, Expect{Project: "runc", Version: "v1.0.0-rc9"}); err != nil {
		t.Errorf("finishedOn, earlier format: %v", err)
	}
}

// Every resolved dependency has a uri or a digest, as the in-toto
// ResourceDescriptor spec requires; the go binary is pinned by sha256.
func TestToolchainDescriptorsNameWhatTheyAre(t *testing.T) {
	dir := artifact(t, t.TempDir(), Keys{})
	b, _ := os.ReadFile(filepath.Join(dir, dist.StatementFile))
	_, pred, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	deps := map[string]*ita.ResourceDescriptor{}
	for _, d := range pred.GetBuildDefinition().GetResolvedDependencies() {
		if d.GetUri() == "" && len(d.GetDigest()) == 0 && len(d.GetContent()) == 0 {
			t.Errorf("%s has no uri, digest or content", d.GetName())
		}
		deps[d.GetName()] = d
	}
	if d := deps["toolchain:go"]; d.GetUri() != "pkg:golang/golang.org/toolchain@v0.0.1-go1.12.17.linux-amd64" || d.GetDigest()["sha256"] != goDigest["sha256"] {
		t.Errorf("toolchain:go %v", d)
	}
	if d := deps["toolchain:cgo"]; d.GetUri() != "pkg:generic/gcc@12.2.0" {
		t.Errorf("toolchain:cgo %v", d)
	}
	for _, tc := range []struct {
		b    dist.BuildInfo
		want string
	}{
		{dist.BuildInfo{GoUsed: "go1.22.2", GoSource: "host"}, "pkg:generic/go@1.22.2"},
		{dist.BuildInfo{GoUsed: "go1.15.15", GoSource: "go1.15.15"}, "pkg:golang/golang.org/toolchain@v0.0.1-go1.15.15.linux-amd64"},
		{dist.BuildInfo{GoUsed: "go1.12", Image: "golang:1.12"}, "pkg:docker/golang@1.12"},
		{dist.BuildInfo{GoUsed: "go1.12", Image: "k8s.gcr.io/kube-cross:v1.12.17-1"}, "pkg:docker/kube-cross@v1.12.17-1?repository_url=k8s.gcr.io"},
	} {
		if got := GoURI(tc.b); got != tc.want {
			t.Errorf("GoURI(%+v) = %s, want %s", tc.b, got, tc.want)
		}
	}
	if got := CgoURI(build.CgoInfo{CC: "gcc (Debian 12.2.0-14) 12.2.0"}); got != "pkg:generic/gcc@12.2.0" {
		t.Errorf("CgoURI = %s", got)
	}

	// A host build's go binary is read where the statement is written.
	gobin := filepath.Join(t.TempDir(), "go")
	write(t, filepath.Dir(gobin), "go", "go binary", 0o755)
	prov := provenance(dist.SHA256Hex([]byte("ELF!")))
	prov.Build.Args = []string{gobin, "build"}
	if d := goBinaryDigest(prov); d["sha256"] != dist.SHA256Hex([]byte("go binary")) {
		t.Errorf("go binary digest %v", d)
	}
	prov.Build.Mode = "container"
	if d := goBinaryDigest(prov); d != nil {
		t.Errorf("container build: go binary digest %v", d)
	}
}
