package vm

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

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

// snapshot is a cached snapshot: <key>.<sha256>.snapshot.
type snapshot struct {
	path, sum string
}

// findSnapshot returns the snapshot saved for key, if any (the most
// recently used, should two runs have saved one each).
func findSnapshot(dir, key string) (snapshot, bool) {
	paths, _ := filepath.Glob(filepath.Join(dir, key+".*"+snapshotSuffix))
	var best snapshot
	var bestMod time.Time
	for _, p := range paths {
		sum := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), key+"."), snapshotSuffix)
		st, err := os.Stat(p)
		if err != nil || len(sum) != 64 {
			continue
		}
		if best.path == "" || st.ModTime().After(bestMod) {
			best, bestMod = snapshot{p, sum}, st.ModTime()
		}
	}
	return best, best.path != ""
}

// open opens the snapshot for QEMU, and hashes it beside from a second
// descriptor on the same file (snapshots are never written once in place):
// the channel gives the digest, which is checked before the restored guest
// runs.
func (s snapshot) open() (*os.File, <-chan digestResult, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return nil, nil, err
	}
	g, err := os.Open(s.path)
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
		h := sha256.New()
		_, err := io.Copy(h, g)
		c <- digestResult{hex.EncodeToString(h.Sum(nil)), err}
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

// pruneSnapshots keeps the keep most recently used snapshots in dir and
// removes the others.
func pruneSnapshots(dir string, keep int) {
	paths, _ := filepath.Glob(filepath.Join(dir, "*"+snapshotSuffix))
	type snap struct {
		path string
		mod  time.Time
	}
	var snaps []snap
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil {
			snaps = append(snaps, snap{p, st.ModTime()})
		}
	}
	sort.Slice(snaps, func(i, j int) bool { return snaps[i].mod.After(snaps[j].mod) })
	for i := keep; i < len(snaps); i++ {
		os.Remove(snaps[i].path)
	}
}

// templateJob is the job a template boots with: always the same bytes, so
// that its initramfs can be rebuilt to restore a snapshot.
func templateJob() []byte {
	b, _ := json.Marshal(guest.Job{Nonce: guest.TemplateNonce, Items: []guest.Item{}, Await: true})
	return b
}
