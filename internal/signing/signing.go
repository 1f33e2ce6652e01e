// Package signing makes and checks OpenPGP armored detached signatures (as
// `gpg --armor --detach-sign` makes and `gpg --verify` checks): over the
// SHA256SUMS of a mirror or a release, and over each artifact's in-toto
// statement (internal/attest). The key is an armored private key file named
// by NOKMEM_SIGNING_KEY; signing is skipped when it is unset.
package signing

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
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

// Sign returns an armored detached signature of data.
func (s *Signer) Sign(data []byte) ([]byte, error) {
	var out bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&out, s.entity, bytes.NewReader(data), nil); err != nil {
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
	ring, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(publicKey))
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
// too: only its public part is used) and returns it armored.
func LoadPublicKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	ring, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(b))
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
