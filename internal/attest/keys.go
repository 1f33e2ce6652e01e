package attest

import (
	"fmt"

	"github.com/nokmem/nokmem/internal/signing"
)

// Keys sign statements and check their signatures. The zero value signs
// nothing and checks no signature.
type Keys struct {
	// Sign makes an armored detached OpenPGP signature; nil: statements
	// are not signed.
	Sign func([]byte) ([]byte, error)
	// PublicKey (armored OpenPGP) is required to have signed every
	// statement that is checked; nil: signatures are not checked.
	PublicKey []byte
}

// LoadKeys reads NOKMEM_SIGNING_KEY (signingKey, decrypted with passphrase)
// and NOKMEM_VERIFY_PUBKEY (publicKey); either may be empty. With a signing
// key alone, its public part checks signatures, so a build checks what it
// signs. With both, they must be one key pair: a build would otherwise
// publish statements that fail its own check.
func LoadKeys(signingKey, passphrase, publicKey string) (Keys, error) {
	var k Keys
	if publicKey != "" {
		pub, err := signing.LoadPublicKey(publicKey)
		if err != nil {
			return Keys{}, fmt.Errorf("NOKMEM_VERIFY_PUBKEY: %w", err)
		}
		k.PublicKey = pub
	}
	if signingKey == "" {
		return k, nil
	}
	s, err := signing.Load(signingKey, passphrase)
	if err != nil {
		return Keys{}, fmt.Errorf("NOKMEM_SIGNING_KEY: %w", err)
	}
	k.Sign = s.Sign
	if k.PublicKey == nil {
		if k.PublicKey, err = s.PublicKey(); err != nil {
			return Keys{}, fmt.Errorf("NOKMEM_SIGNING_KEY: %w", err)
		}
		return k, nil
	}
	probe := []byte("nokmem key pair check\n")
	sig, err := s.Sign(probe)
	if err != nil {
		return Keys{}, fmt.Errorf("NOKMEM_SIGNING_KEY: %w", err)
	}
	if _, err := signing.Check(k.PublicKey, probe, sig); err != nil {
		return Keys{}, fmt.Errorf("NOKMEM_SIGNING_KEY %s does not belong to NOKMEM_VERIFY_PUBKEY %s (%v): set the matching public key, or unset NOKMEM_VERIFY_PUBKEY to check with the signing key's own", signingKey, publicKey, err)
	}
	return k, nil
}
