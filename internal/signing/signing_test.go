package signing

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
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
