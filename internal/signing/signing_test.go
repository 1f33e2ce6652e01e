package signing

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"

	"github.com/nokmem/nokmem/internal/signing/signingtest"
	"github.com/nokmem/nokmem/internal/testenv"
)

// NewTestKey writes an armored private key for tests and returns its path.
func newTestKey(t *testing.T) string {
	e, err := openpgp.NewEntity("nokmem test", "", "test@example.com", nil)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	w, _ := armor.Encode(&b, openpgp.PrivateKeyType, nil)
	if err := e.SerializePrivate(w, nil); err != nil {
		t.Fatal(err)
	}
	w.Close()
	p := filepath.Join(t.TempDir(), "key.asc")
	os.WriteFile(p, b.Bytes(), 0o600)
	return p
}

func TestSignAndVerify(t *testing.T) {
	s, err := Load(newTestKey(t), "")
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("abc  runc\n")
	sig, err := s.Sign(data)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := s.PublicKey()
	if err := Verify(pub, data, sig); err != nil {
		t.Fatalf("good signature rejected: %v", err)
	}
	if err := Verify(pub, []byte("abd  runc\n"), sig); err == nil {
		t.Fatal("signature over other data accepted")
	}
}

func TestLoadErrors(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "missing"), ""); err == nil {
		t.Error("missing key accepted")
	}
	p := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(p, []byte("not a key"), 0o600)
	if _, err := Load(p, ""); err == nil {
		t.Error("junk key accepted")
	}
}

// The signature is what gpg itself accepts, and gpg rejects it for other data.
func TestGPGVerifies(t *testing.T) {
	if _, err := exec.LookPath("gpg"); err != nil {
		if testenv.InCI() {
			t.Fatal("CI=true but gpg is missing (.ci/run installs gnupg)")
		}
		t.Skip("needs gpg")
	}
	s, err := Load(newTestKey(t), "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	data := []byte("0123  runc-nokmem-1.0.0~rc9-1.nokmem.x86_64.rpm\n")
	sig, _ := s.Sign(data)
	pub, _ := s.PublicKey()
	os.WriteFile(filepath.Join(dir, "SHA256SUMS"), data, 0o644)
	os.WriteFile(filepath.Join(dir, "SHA256SUMS.asc"), sig, 0o644)
	os.WriteFile(filepath.Join(dir, "key.asc"), pub, 0o644)
	home := filepath.Join(dir, "gnupg")
	os.Mkdir(home, 0o700)
	gpg := func(args ...string) error {
		cmd := exec.Command("gpg", append([]string{"--batch", "--homedir", home}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Logf("gpg %v: %s", args, out)
		}
		return err
	}
	if err := gpg("--import", filepath.Join(dir, "key.asc")); err != nil {
		t.Fatal(err)
	}
	if err := gpg("--verify", filepath.Join(dir, "SHA256SUMS.asc"), filepath.Join(dir, "SHA256SUMS")); err != nil {
		t.Fatal("gpg rejected the signature")
	}
	os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte("tampered\n"), 0o644)
	if err := gpg("--verify", filepath.Join(dir, "SHA256SUMS.asc"), filepath.Join(dir, "SHA256SUMS")); err == nil {
		t.Fatal("gpg accepted a signature over other data")
	}
}

// InRelease (clearsigned), a binary detached signature and the binary
// keyring are what gpg itself reads and checks.
func TestClearSignBinaryAndKeyringWithGPG(t *testing.T) {
	if _, err := exec.LookPath("gpg"); err != nil {
		if testenv.InCI() {
			t.Fatal("CI=true but gpg is missing (.ci/run installs gnupg)")
		}
		t.Skip("needs gpg")
	}
	s, err := Load(signingtest.KeyFile(t, "repo"), "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	home := filepath.Join(dir, "gnupg")
	os.Mkdir(home, 0o700)
	gpg := func(args ...string) (string, error) {
		out, err := exec.Command("gpg", append([]string{"--batch", "--homedir", home}, args...)...).CombinedOutput()
		return string(out), err
	}
	ring, err := s.PublicKeyring()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "key.gpg"), ring, 0o644)
	if out, err := gpg("--import", filepath.Join(dir, "key.gpg")); err != nil {
		t.Fatalf("binary keyring: %v\n%s", err, out)
	}
	if out, _ := gpg("--with-colons", "--fingerprint"); !strings.Contains(out, "fpr:::::::::"+s.Fingerprint()+":") {
		t.Errorf("fingerprint %s not in\n%s", s.Fingerprint(), out)
	}
	release := []byte("Origin: nokmem\nSHA256:\n 0123 10 Packages\n-- a dash line\n")
	in, err := s.ClearSign(release)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "InRelease"), in, 0o644)
	if out, err := gpg("--verify", filepath.Join(dir, "InRelease")); err != nil || !strings.Contains(out, "Good signature") {
		t.Fatalf("clearsigned text rejected: %v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(dir, "InRelease"), bytes.Replace(in, []byte("0123"), []byte("0124"), 1), 0o644)
	if _, err := gpg("--verify", filepath.Join(dir, "InRelease")); err == nil {
		t.Fatal("altered clearsigned text accepted")
	}
	sig, err := s.SignBinary(bytes.NewReader(release))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.HasPrefix(sig, []byte("-----")) {
		t.Fatal("binary signature is armored")
	}
	os.WriteFile(filepath.Join(dir, "data"), release, 0o644)
	os.WriteFile(filepath.Join(dir, "data.sig"), sig, 0o644)
	out, err := gpg("--list-packets", filepath.Join(dir, "data.sig"))
	if err != nil || !strings.Contains(out, "digest algo 8") || strings.Contains(out, "notation") {
		t.Errorf("signature packet (want SHA-256, no notation): %v\n%s", err, out)
	}
	if out, err := gpg("--verify", filepath.Join(dir, "data.sig"), filepath.Join(dir, "data")); err != nil {
		t.Fatalf("binary signature rejected: %v\n%s", err, out)
	}
}

// Key rotation: `cat old.pub.asc new.pub.asc` is one public key file, and a
// signature by either key verifies with it (and with the armored key
// LoadPublicKey returns); a third key's does not.
func TestPublicKeyFileWithSeveralArmoredBlocks(t *testing.T) {
	var signers []*Signer
	var pubs [][]byte
	for range 3 {
		s, err := Load(newTestKey(t), "")
		if err != nil {
			t.Fatal(err)
		}
		pub, err := s.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		signers, pubs = append(signers, s), append(pubs, pub)
	}
	both := append(append(append([]byte{}, pubs[0]...), '\n'), pubs[1]...)
	file := filepath.Join(t.TempDir(), "keys.asc")
	os.WriteFile(file, both, 0o644)
	loaded, err := LoadPublicKey(file)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("statement\n")
	for i, s := range signers {
		sig, err := s.Sign(data)
		if err != nil {
			t.Fatal(err)
		}
		for _, ring := range [][]byte{both, loaded} {
			fpr, err := Check(ring, data, sig)
			if ok := err == nil && fpr == s.Fingerprint(); ok != (i < 2) {
				t.Errorf("key %d: fingerprint %q, %v", i, fpr, err)
			}
		}
	}
}
