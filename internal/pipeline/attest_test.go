package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"

	"github.com/nokmem/nokmem/internal/attest"
	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/verify"
)

// signingKeys makes an OpenPGP key pair as NOKMEM_SIGNING_KEY would name it.
func signingKeys(t *testing.T, name string) attest.Keys {
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
	k, err := attest.LoadKeys(p, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func flip(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// A signed build, then every way of changing what it published (each
// followed by a regenerated SHA256SUMS): none is a cache hit, none may be
// replaced by a build, and the message names the file.
func TestTamperedArtifactIsNeverACacheHit(t *testing.T) {
	r := repo(t)
	c := newConfig(t, r)
	c.Signing = signingKeys(t, "builder")
	ctx := context.Background()
	first, err := BuildRunc(ctx, c, "v1.0.0-rc9")
	if err != nil {
		t.Fatal(err)
	}
	var prov dist.Provenance
	if err := dist.ReadJSON(first.Dir, dist.ProvenanceFile, &prov); err != nil {
		t.Fatal(err)
	}
	key := prov.InputKey
	if got := dirNames(t, first.Dir); got != "SHA256SUMS provenance.intoto.json provenance.intoto.json.asc provenance.json runc verify.json" {
		t.Fatalf("dist files: %s", got)
	}
	hit, err := c.checkCache("runc", "v1.0.0-rc9", key)
	if err != nil || hit == nil || hit.SHA256 != first.SHA256 || hit.Binary != first.Binary {
		t.Fatalf("untouched artifact: %+v %v", hit, err)
	}
	pristine := filepath.Join(t.TempDir(), "pristine")
	if out, err := exec.Command("cp", "-a", first.Dir, pristine).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	other := signingKeys(t, "mallory")

	cases := []struct {
		name     string
		tamper   func(t *testing.T, dir string)
		modified string // the file named as modified
		want     string
	}{
		{name: "artifact modified", tamper: func(t *testing.T, dir string) { flip(t, filepath.Join(dir, "runc")) },
			modified: "runc", want: "was modified after it was verified"},
		{name: "provenance edited", tamper: func(t *testing.T, dir string) {
			var p dist.Provenance
			dist.ReadJSON(dir, dist.ProvenanceFile, &p)
			p.Verified.Notes = append(p.Verified.Notes, "reviewed")
			b, _ := json.MarshalIndent(p, "", "  ")
			os.WriteFile(filepath.Join(dir, dist.ProvenanceFile), b, 0o644)
		}, modified: dist.ProvenanceFile, want: "was modified after it was verified"},
		{name: "statement forged for a modified artifact", tamper: func(t *testing.T, dir string) {
			flip(t, filepath.Join(dir, "runc"))
			var p dist.Provenance
			dist.ReadJSON(dir, dist.ProvenanceFile, &p)
			p.Output.SHA256, _ = dist.FileSHA256(filepath.Join(dir, "runc"))
			b, _ := json.MarshalIndent(p, "", "  ")
			os.WriteFile(filepath.Join(dir, dist.ProvenanceFile), b, 0o644)
			// Unsigned: the old signature stays beside it.
			if err := attest.Write(dir, &p, nil, time.Now()); err != nil {
				t.Fatal(err)
			}
		}, want: "does not verify with the configured public key"},
		{name: "statement re-signed by another key", tamper: func(t *testing.T, dir string) {
			var p dist.Provenance
			dist.ReadJSON(dir, dist.ProvenanceFile, &p)
			if err := attest.Write(dir, &p, other.Sign, time.Now()); err != nil {
				t.Fatal(err)
			}
		}, want: "does not verify with the configured public key"},
		{name: "signature removed", tamper: func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, dist.SignatureFile))
		}, want: "is not signed"},
		// Even a statement signed with the right key cannot make a failed
		// verification count.
		{name: "provenance of a failed verification, signed", tamper: func(t *testing.T, dir string) {
			var p dist.Provenance
			dist.ReadJSON(dir, dist.ProvenanceFile, &p)
			failed := p
			failed.Verified = dist.VerifiedInfo{Passed: false, Verdict: "kmem-enabled", Dynamic: "fail"}
			b, _ := json.MarshalIndent(failed, "", "  ")
			os.WriteFile(filepath.Join(dir, dist.ProvenanceFile), b, 0o644)
			if err := attest.Write(dir, &p, c.Signing.Sign, time.Now()); err != nil {
				t.Fatal(err)
			}
		}, want: "records a failed verification"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			os.RemoveAll(first.Dir)
			if out, err := exec.Command("cp", "-a", pristine, first.Dir).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v %s", err, out)
			}
			tc.tamper(t, first.Dir)
			if err := dist.WriteSums(first.Dir); err != nil {
				t.Fatal(err)
			}
			res, err := c.checkCache("runc", "v1.0.0-rc9", key)
			var refused *RefusedError
			if res != nil || !errors.As(err, &refused) {
				t.Fatalf("cache: %+v %v", res, err)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.want) || !strings.Contains(msg, "rm -r "+first.Dir) {
				t.Errorf("message does not say %q and what to do:\n%s", tc.want, msg)
			}
			var m *attest.ModifiedError
			if errors.As(err, &m) != (tc.modified != "") || (m != nil && m.File != filepath.Join(first.Dir, tc.modified)) {
				t.Errorf("modified file: %+v, want %q", m, tc.modified)
			}
			if err := c.mayReplace("runc", "v1.0.0-rc9"); !errors.As(err, &refused) {
				t.Errorf("a build may publish over it: %v", err)
			}
		})
	}

	// A build does not replace a modified artifact: it reports it and
	// leaves it as it is.
	os.RemoveAll(first.Dir)
	exec.Command("cp", "-a", pristine, first.Dir).Run()
	flip(t, filepath.Join(first.Dir, "runc"))
	if err := dist.WriteSums(first.Dir); err != nil {
		t.Fatal(err)
	}
	before := tree(t, c.DistDir)
	_, err = BuildRunc(ctx, c, "v1.0.0-rc9")
	var refused *RefusedError
	if !errors.As(err, &refused) || !strings.Contains(err.Error(), filepath.Join(first.Dir, "runc")+": sha256 ") {
		t.Fatalf("build over a modified artifact: %v", err)
	}
	if after := tree(t, c.DistDir); after != before {
		t.Errorf("dist changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// What a build may make anew: an artifact built from other inputs, and
// nothing else (a directory without a statement is refused). Without a key
// configured, a signed artifact is still a hit (the signature is not
// required).
func TestCacheRebuildsOnlyWhatItMay(t *testing.T) {
	r := repo(t)
	c := newConfig(t, r)
	c.Signing = signingKeys(t, "builder")
	first, err := BuildRunc(context.Background(), c, "v1.0.0-rc9")
	if err != nil {
		t.Fatal(err)
	}
	var prov dist.Provenance
	dist.ReadJSON(first.Dir, dist.ProvenanceFile, &prov)
	if res, err := c.checkCache("runc", "v1.0.0-rc9", strings.Repeat("0", 64)); res != nil || err != nil {
		t.Errorf("other inputs: %+v %v", res, err)
	}
	// workTree asks before and after the lock: the reason is said once.
	var log bytes.Buffer
	logged := *c
	logged.Log = &log
	hit := logged.cacheCheck("runc", "v1.0.0-rc9", strings.Repeat("0", 64))
	for range 2 {
		if res, err := hit(); res != nil || err != nil {
			t.Errorf("other inputs: %+v %v", res, err)
		}
	}
	if n := strings.Count(log.String(), "it will be rebuilt"); n != 1 {
		t.Errorf("said %d times:\n%s", n, log.String())
	}
	unsigned := *c
	unsigned.Signing = attest.Keys{}
	if res, err := unsigned.checkCache("runc", "v1.0.0-rc9", prov.InputKey); err != nil || res == nil {
		t.Errorf("no key configured: %+v %v", res, err)
	}
	other := *c
	other.Signing = signingKeys(t, "other")
	if res, err := other.checkCache("runc", "v1.0.0-rc9", prov.InputKey); res != nil || !errors.As(err, new(*RefusedError)) {
		t.Errorf("signed by another key than the configured one: %+v %v", res, err)
	}
	os.Remove(filepath.Join(first.Dir, dist.StatementFile))
	os.Remove(filepath.Join(first.Dir, dist.SignatureFile))
	dist.WriteSums(first.Dir)
	// Without its statement (an older nokmem, or removed to have a
	// tampered directory replaced): refused like any other, kept.
	res, err := c.checkCache("runc", "v1.0.0-rc9", prov.InputKey)
	if res != nil || !errors.As(err, new(*RefusedError)) || !strings.Contains(err.Error(), "made by an older nokmem, or tampered") ||
		!strings.Contains(err.Error(), "look at it, then remove it") {
		t.Errorf("no statement: %+v %v", res, err)
	}
	if err := c.mayReplace("runc", "v1.0.0-rc9"); !errors.As(err, new(*RefusedError)) {
		t.Errorf("no statement may be replaced: %v", err)
	}
}

// tamperDuring modifies a published file while the new build verifies.
type tamperDuring struct {
	Verifier
	path string
}

func (v tamperDuring) Verify(ctx context.Context, bin string, opt verify.Options) (*verify.Report, error) {
	b, err := os.ReadFile(v.path)
	if err != nil {
		return nil, err
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(v.path, b, 0o755); err != nil {
		return nil, err
	}
	return v.Verifier.Verify(ctx, bin, opt)
}

// The check right before publishing: an artifact that was replaceable
// when the build started (built from other inputs) but modified while it
// ran is not published over.
func TestPublishDoesNotReplaceAnArtifactModifiedDuringTheBuild(t *testing.T) {
	r := repo(t)
	c := newConfig(t, r)
	first, err := BuildRunc(context.Background(), c, "v1.0.0-rc9")
	if err != nil {
		t.Fatal(err)
	}
	c.ToolkitRevision = "a newer toolkit" // other inputs: a rebuild may replace it
	c.Verifier = tamperDuring{Verifier: c.Verifier, path: first.Binary}
	_, err = BuildRunc(context.Background(), c, "v1.0.0-rc9")
	if !errors.As(err, new(*RefusedError)) || !strings.Contains(err.Error(), "was modified after it was verified") {
		t.Fatalf("publish over a modified artifact: %v", err)
	}
	var prov dist.Provenance
	if dist.ReadJSON(first.Dir, dist.ProvenanceFile, &prov); prov.Build.Toolkit == "a newer toolkit" {
		t.Error("the modified artifact was replaced")
	}
}
