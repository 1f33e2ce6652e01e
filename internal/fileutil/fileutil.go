// Package fileutil writes files from readers and copies files: the one
// place for the open, copy, close sequence the verifier, the VM's guest and
// the node tools each need.
package fileutil

import (
	"io"
	"os"
)

// Write creates dst (os.O_CREATE|os.O_WRONLY|flag, with mode before the
// umask) and copies r into it; a failed copy or close is the error.
func Write(dst string, r io.Reader, mode os.FileMode, flag int) error {
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|flag, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Copy writes the contents of src to dst as Write does.
func Copy(src, dst string, mode os.FileMode, flag int) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return Write(dst, in, mode, flag)
}
