package vm

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/cavaliergopher/cpio"

	"github.com/nokmem/nokmem/verify/container"
)

// A file of the initramfs: its bytes come from Data or, when Data is nil,
// from the host file Source.
type file struct {
	Name   string // absolute path in the guest
	Mode   int64  // permission bits
	Data   []byte
	Source string
}

// writeInitramfs writes a gzip-compressed newc cpio archive, as the kernel
// unpacks into its rootfs: the mount points /init needs, every parent
// directory before its files, each file with one link and an inode number
// of its own (the kernel links entries that share an inode and have more
// than one link).
//
// The archive holds no device nodes: the kernel's own built-in initramfs
// (usr/default_cpio_list, in every kernel built without
// CONFIG_INITRAMFS_SOURCE) already has /dev/console, which /init's standard
// descriptors are opened on, and /init mounts devtmpfs for the rest.
func writeInitramfs(w io.Writer, files []file) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	if err := archive(zw, files, []string{"/dev", "/proc", "/sys", "/tmp", "/run"}); err != nil {
		return err
	}
	return zw.Close()
}

// writeArchive writes files as an uncompressed newc cpio archive: a job's
// payload for the job channel, which the guest unpacks into its root.
func writeArchive(w io.Writer, files []file) error {
	return archive(w, files, nil)
}

func archive(w io.Writer, files []file, mountPoints []string) error {
	cw := cpio.NewWriter(w)
	ino := int64(1)
	dirs := map[string]bool{"/": true}
	var mkdir func(dir string) error
	mkdir = func(dir string) error {
		if dirs[dir] {
			return nil
		}
		if err := mkdir(path.Dir(dir)); err != nil {
			return err
		}
		dirs[dir] = true
		ino++
		return cw.WriteHeader(&cpio.Header{Name: strings.TrimPrefix(dir, "/"), Mode: cpio.TypeDir | 0o755, Links: 2, Inode: ino})
	}
	sorted := append([]file(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	for _, d := range mountPoints {
		if err := mkdir(d); err != nil {
			return err
		}
	}
	for _, f := range sorted {
		if !path.IsAbs(f.Name) || path.Clean(f.Name) != f.Name {
			return fmt.Errorf("initramfs: bad path %q", f.Name)
		}
		if err := mkdir(path.Dir(f.Name)); err != nil {
			return err
		}
		data := f.Data
		if data == nil {
			var err error
			if data, err = os.ReadFile(f.Source); err != nil {
				return fmt.Errorf("initramfs: %w", err)
			}
		}
		ino++
		hdr := &cpio.Header{Name: strings.TrimPrefix(f.Name, "/"), Mode: cpio.TypeReg | cpio.FileMode(f.Mode&0o7777), Size: int64(len(data)), Links: 1, Inode: ino}
		if err := cw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := cw.Write(data); err != nil {
			return err
		}
	}
	return cw.Close()
}

// binaryFiles returns the files that let binary run in the guest as name:
// the binary itself under dir and, for a dynamically linked one, its
// interpreter and every shared library its ELF headers need (resolved on
// this host, placed at the same paths, where the guest's loader looks).
func binaryFiles(binary, dir, name string) ([]file, error) {
	files := []file{{Name: path.Join(dir, name), Mode: 0o755, Source: binary}}
	libs, err := container.SharedLibraries(binary)
	if err != nil {
		return nil, err
	}
	for _, l := range libs {
		files = append(files, file{Name: l, Mode: 0o755, Source: l})
	}
	return files, nil
}
