// Package signing makes and checks OpenPGP signatures with one key, the
// armored private key file named by NOKMEM_SIGNING_KEY (signing is skipped
// when it is unset): armored detached signatures (as `gpg --armor
// --detach-sign` makes and `gpg --verify` checks) over the SHA256SUMS of a
// mirror or a release, each artifact's in-toto statement (internal/attest),
// a yum repository's repomd.xml and an apt repository's Release; the
// clearsigned InRelease; and the binary header signatures of RPM packages.
// It also exports the public key, armored and as a binary keyring.
package signing

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// Signer signs data with one private key.
type Signer struct{ entity *openpgp.Entity }

// Load reads an armored private key; passphrase decrypts it if needed.
func Load(path, passphrase string) (*Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	defer f.Close()
	ring, err := openpgp.ReadArmoredKeyRing(f)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	for _, e := range ring {
		if e.PrivateKey == nil {
			continue
		}
		if e.PrivateKey.Encrypted {
			if passphrase == "" {
				return nil, errors.New("signing key is encrypted: set NOKMEM_SIGNING_PASSPHRASE")
			}
			if err := e.PrivateKey.Decrypt([]byte(passphrase)); err != nil {
				return nil, fmt.Errorf("signing key: %w", err)
			}
		}
		return &Signer{entity: e}, nil
	}
	return nil, fmt.Errorf("signing key %s holds no private key", path)
}

// config pins SHA-256 (apt refuses SHA-1 signatures; rpm 4.11 of EL7
// checks SHA-256 ones) and leaves out go-crypto's random salt notation, a
// subpacket older verifiers have never seen and that RSA signatures do not
// need.
var config = &packet.Config{DefaultHash: crypto.SHA256, NonDeterministicSignaturesViaNotation: new(bool)}

// Sign returns an armored detached signature of data (repomd.xml.asc,
// Release.gpg, SHA256SUMS.asc).
func (s *Signer) Sign(data []byte) ([]byte, error) {
	var out bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&out, s.entity, bytes.NewReader(data), config); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// SignBinary returns a binary (unarmored) detached signature of what r
// yields: the form an RPM header signature takes (nfpm's SignFn).
func (s *Signer) SignBinary(r io.Reader) ([]byte, error) {
	var out bytes.Buffer
	if err := openpgp.DetachSign(&out, s.entity, r, config); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// ClearSign returns data clearsigned (an apt repository's InRelease).
func (s *Signer) ClearSign(data []byte) ([]byte, error) {
	key, ok := s.entity.SigningKey(time.Now())
	if !ok || key.PrivateKey == nil {
		return nil, errors.New("signing key: no usable signing key (expired or revoked?)")
	}
	var out bytes.Buffer
	w, err := clearsign.Encode(&out, key.PrivateKey, config)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(data); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// Fingerprint is the primary key's fingerprint, as `gpg --fingerprint`
// prints it without spaces.
func (s *Signer) Fingerprint() string {
	return strings.ToUpper(hex.EncodeToString(s.entity.PrimaryKey.Fingerprint))
}

// PublicKeyring returns the public key unarmored, as `gpg --export` writes
// it: the keyring file apt's signed-by option reads (*.gpg).
func (s *Signer) PublicKeyring() ([]byte, error) {
	var out bytes.Buffer
	if err := s.entity.Serialize(&out); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// PublicKey returns the armored public key, for the mirror's users.
func (s *Signer) PublicKey() ([]byte, error) {
	var out bytes.Buffer
	w, err := armor.Encode(&out, openpgp.PublicKeyType, nil)
	if err != nil {
		return nil, err
	}
	if err := s.entity.Serialize(w); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// Verify checks an armored detached signature against an armored public key.
func Verify(publicKey, data, sig []byte) error {
	_, err := Check(publicKey, data, sig)
	return err
}

// Check checks an armored detached signature against an armored public key
// (ring) and returns the fingerprint of the primary key that made it, as
// `gpg --fingerprint` prints it without spaces.
func Check(publicKey, data, sig []byte) (string, error) {
	ring, err := ReadArmoredKeyRings(publicKey)
	if err != nil {
		return "", fmt.Errorf("public key: %w", err)
	}
	signer, err := openpgp.CheckArmoredDetachedSignature(ring, bytes.NewReader(data), bytes.NewReader(sig), nil)
	if err != nil {
		return "", err
	}
	return strings.ToUpper(hex.EncodeToString(signer.PrimaryKey.Fingerprint)), nil
}

// LoadPublicKey reads an armored public key file (a private key file works
// too: only its public part is used) and returns it armored, as one block
// holding every key of the file (`cat old.pub.asc new.pub.asc` during a
// key rotation: a signature by either verifies).
func LoadPublicKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	ring, err := ReadArmoredKeyRings(b)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	var out bytes.Buffer
	w, err := armor.Encode(&out, openpgp.PublicKeyType, nil)
	if err != nil {
		return nil, err
	}
	for _, e := range ring {
		if err := e.Serialize(w); err != nil {
			return nil, fmt.Errorf("public key %s: %w", path, err)
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// ReadArmoredKeyRings reads every armored key block of b, not only the
// first as openpgp.ReadArmoredKeyRing does: a file made by concatenating
// armored keys (key rotation) holds several.
func ReadArmoredKeyRings(b []byte) (openpgp.EntityList, error) {
	var ring openpgp.EntityList
	for _, block := range armoredBlocks(b) {
		keys, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(block))
		if err != nil {
			return nil, err
		}
		ring = append(ring, keys...)
	}
	if len(ring) == 0 {
		return nil, errors.New("no armored OpenPGP key found")
	}
	return ring, nil
}

// armoredBlocks splits b into its "-----BEGIN …-----" to "-----END …-----"
// blocks. (armor.Decode reads through a buffer of its own, so it cannot
// be called again on the rest of a reader.)
func armoredBlocks(b []byte) [][]byte {
	var blocks [][]byte
	start := -1
	off := 0
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		t := bytes.TrimSpace(line)
		switch {
		case start < 0 && bytes.HasPrefix(t, []byte("-----BEGIN ")):
			start = off
		case start >= 0 && bytes.HasPrefix(t, []byte("-----END ")):
			blocks = append(blocks, b[start:off+len(line)])
			start = -1
		}
		off += len(line)
	}
	return blocks
}
