// Package fileutil writes files from readers and copies files: the one
// place for the open, copy, close sequence the verifier, the VM's guest and
// the node tools each need.
package fileutil

import (
	"io"
	"os"
	"syscall"
)

// Write creates dst (os.O_CREATE|os.O_WRONLY|flag, with mode before the
// umask) and copies r into it; a failed copy or close is the error.
//
// An executable mode holds off this process's forks while dst is open for
// writing: a child forked by another goroutine in that window inherits the
// descriptor until its own exec, and running dst then fails with ETXTBSY
// ("text file busy"). Forks take syscall.ForkLock for writing, so r must not
// wait on one.
func Write(dst string, r io.Reader, mode os.FileMode, flag int) error {
	if mode&0o111 != 0 {
		syscall.ForkLock.RLock()
		defer syscall.ForkLock.RUnlock()
	}
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
