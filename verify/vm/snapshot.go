package vm

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nokmem/nokmem/internal/digest"
	"github.com/nokmem/nokmem/verify/guest"
)

// Snapshots (docs/vm.md): a guest booted once with a template job
// (guest.Job.Await) sets itself up, prints guest.ReadyLine and waits on the
// job channel; QEMU saves it (a migration into a file) to the cache, and
// every later check restores it and hands it its job, instead of booting.
const (
	// ChannelMiB sizes the job channel, through which the job goes in
	// chunks. A snapshot holds it as zero pages, which a restore reads, and
	// so allocates, page by page: 512 MiB cost half a second, 16 MiB 10 ms.
	ChannelMiB = 16
	// snapshotFormat changes whenever what a snapshot holds or how it is
	// made changes in a way its key does not show.
	snapshotFormat = "nokmem-vm-snapshot-1"
	snapshotSuffix = ".snapshot"
	// snapshotTempPrefix names a snapshot being written:
	// .snapshot-<owner>-<random>, renamed into place once QEMU is done.
	snapshotTempPrefix = ".snapshot-"
	// keepSnapshots is how many snapshots (the most recently used) stay in
	// the cache: one per kernel, accelerator and /init, each 50–100 MB.
	keepSnapshots = 3
)

// channelArgs add the job channel (an ivshmem device whose memory is the
// file at descriptor 5; master=on lets QEMU migrate it) and QMP on the
// socket at descriptor 6.
func channelArgs() []string {
	return []string{
		"-object", "memory-backend-file,id=nokmem-job,mem-path=/dev/fd/5,size=" + strconv.Itoa(ChannelMiB) + "M,share=on",
		"-device", "ivshmem-plain,memdev=nokmem-job,master=on",
		"-chardev", "socket,id=nokmem-qmp,fd=6",
		"-mon", "chardev=nokmem-qmp,mode=control",
	}
}

// snapshotKey names the snapshot of a template: QEMU and the kernel (by
// path and file identity: a package update changes them), the template's
// initramfs (the guest's /init) and the whole command line but the VM's
// name. A snapshot restores only into the same machine it was saved from.
func snapshotKey(args []string, initramfs []byte, files ...string) (string, error) {
	h := sha256.New()
	fmt.Fprintln(h, snapshotFormat)
	for _, f := range files {
		var st syscall.Stat_t
		if err := syscall.Stat(f, &st); err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d %d %d %d\n", f, st.Dev, st.Ino, st.Size, st.Mtim.Nano())
	}
	fmt.Fprintf(h, "initramfs %x\n", sha256.Sum256(initramfs))
	for i := 0; i < len(args); i++ {
		if args[i] == "-name" {
			i++
			continue
		}
		fmt.Fprintf(h, "%q\n", args[i])
	}
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}

// snapshot is a cached snapshot: <key>.<digest>.snapshot, where digest is
// the sha256 of the key and the file's bytes (snapshotDigest): a snapshot
// renamed to another key does not check out.
type snapshot struct {
	path, sum string
}

// snapshotDigest is the sha256 of key, a newline and what r holds.
func snapshotDigest(key string, r io.Reader) (string, error) {
	return digest.Reader(io.MultiReader(strings.NewReader(key+"\n"), r))
}

// parseSnapshotName splits <key>.<digest>.snapshot; ok is false for any
// other name (nokmem's names only: 32 and 64 hex digits).
func parseSnapshotName(name string) (key, sum string, ok bool) {
	rest, ok := strings.CutSuffix(name, snapshotSuffix)
	if !ok {
		return "", "", false
	}
	key, sum, ok = strings.Cut(rest, ".")
	if !ok || len(key) != 32 || len(sum) != 64 || !isHex(key) || !isHex(sum) {
		return "", "", false
	}
	return key, sum, true
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// trusted says why the file or directory at p must not be used ("" when
// it may): it must be of this user, not writable by group or others, and
// (a snapshot) a regular file, not a link, a FIFO or a device. Whoever can
// write a snapshot decides what the restored guest reports.
func trusted(p string, dir bool) string {
	st, err := os.Lstat(p)
	if err != nil {
		return err.Error()
	}
	sys, _ := st.Sys().(*syscall.Stat_t)
	switch {
	case dir && !st.IsDir():
		return p + " is not a directory"
	case !dir && !st.Mode().IsRegular():
		return p + " is not a regular file"
	case sys == nil || int(sys.Uid) != os.Geteuid():
		return p + " belongs to another user"
	case st.Mode().Perm()&0o022 != 0:
		return fmt.Sprintf("%s is writable by others (mode %v)", p, st.Mode().Perm())
	}
	return ""
}

// cacheDir makes dir (0700) if need be and checks that it is this user's
// alone; an existing directory of this user's is narrowed to 0700.
func cacheDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if why := trusted(dir, true); why != "" {
		if st, err := os.Lstat(dir); err == nil && st.IsDir() {
			if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) == os.Geteuid() && os.Chmod(dir, 0o700) == nil {
				return nil
			}
		}
		return fmt.Errorf("the snapshot cache is not this user's alone: %s", why)
	}
	return nil
}

// findSnapshot returns the snapshot saved for key, if any (the most
// recently used, should two runs have saved one each). Files that are not
// this user's regular files are left out.
func findSnapshot(dir, key string) (snapshot, bool) {
	entries, _ := os.ReadDir(dir)
	var best snapshot
	var bestMod time.Time
	for _, e := range entries {
		k, sum, ok := parseSnapshotName(e.Name())
		if !ok || k != key {
			continue
		}
		p := filepath.Join(dir, e.Name())
		st, err := os.Lstat(p)
		if err != nil || trusted(p, false) != "" {
			continue
		}
		if best.path == "" || st.ModTime().After(bestMod) {
			best, bestMod = snapshot{p, sum}, st.ModTime()
		}
	}
	return best, best.path != ""
}

// open opens the snapshot for QEMU (no link, no FIFO: O_NOFOLLOW and
// O_NONBLOCK, then a regular file of this user's), and hashes it beside
// from a second descriptor on the same file (snapshots are never written
// once in place): the channel gives the digest, which is checked before the
// restored guest runs.
func (s snapshot) open(key string) (*os.File, <-chan digestResult, error) {
	openOne := func() (*os.File, error) {
		fd, err := unix.Open(s.path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		f := os.NewFile(uintptr(fd), s.path)
		st, err := f.Stat()
		if err == nil && !st.Mode().IsRegular() {
			err = fmt.Errorf("%s is not a regular file", s.path)
		}
		if err == nil {
			err = unix.SetNonblock(fd, false)
		}
		if err != nil {
			f.Close()
			return nil, err
		}
		return f, nil
	}
	if why := trusted(s.path, false); why != "" {
		return nil, nil, errors.New(why)
	}
	f, err := openOne()
	if err != nil {
		return nil, nil, err
	}
	g, err := openOne()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	fi, err1 := f.Stat()
	gi, err2 := g.Stat()
	if err1 != nil || err2 != nil || !os.SameFile(fi, gi) {
		f.Close()
		g.Close()
		return nil, nil, fmt.Errorf("%s changed while it was opened", s.path)
	}
	c := make(chan digestResult, 1)
	go func() {
		defer g.Close()
		sum, err := snapshotDigest(key, g)
		c <- digestResult{sum, err}
	}()
	return f, c, nil
}

type digestResult struct {
	sum string
	err error
}

// used marks a snapshot as just used (its mtime), for pruneSnapshots.
func used(p string) {
	now := time.Now()
	os.Chtimes(p, now, now)
}

// pruneSnapshots keeps, of nokmem's snapshots in dir, current (the one just
// saved or used), at most one per key (the most recently used) and keep in
// all; it removes the others. Files of other names are not touched.
func pruneSnapshots(dir, current string, keep int) {
	entries, _ := os.ReadDir(dir)
	type snap struct {
		path, key string
		mod       time.Time
	}
	var snaps []snap
	for _, e := range entries {
		key, _, ok := parseSnapshotName(e.Name())
		if !ok {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if st, err := os.Lstat(p); err == nil && st.Mode().IsRegular() {
			snaps = append(snaps, snap{p, key, st.ModTime()})
		}
	}
	// The current one first, whatever the clock says of the others.
	sort.SliceStable(snaps, func(i, j int) bool {
		if (snaps[i].path == current) != (snaps[j].path == current) {
			return snaps[i].path == current
		}
		return snaps[i].mod.After(snaps[j].mod)
	})
	kept := map[string]bool{}
	for _, sn := range snaps {
		if kept[sn.key] || len(kept) >= keep {
			os.Remove(sn.path)
			continue
		}
		kept[sn.key] = true
	}
}

// templateJob is the job a template boots with: always the same bytes, so
// that its initramfs can be rebuilt to restore a snapshot.
func templateJob() []byte {
	b, _ := json.Marshal(guest.Job{Nonce: guest.TemplateNonce, Items: []guest.Item{}, Await: true})
	return b
}
