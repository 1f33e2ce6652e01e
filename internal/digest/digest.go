// Package digest is the one place that hashes files: every artifact,
// report, statement and package in nokmem is named by its sha256.
package digest

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
)

// File returns the hex sha256 of the file at path.
func File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return Reader(f)
}

// Reader returns the hex sha256 of what r holds up to its end.
func Reader(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Bytes returns the hex sha256 of data.
func Bytes(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}
