package guest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cavaliergopher/cpio"
	"golang.org/x/sys/unix"

	"github.com/nokmem/nokmem/internal/digest"
	"github.com/nokmem/nokmem/internal/fileutil"
)

// awaitJob is the guest side of the job channel (see ChannelMagic): it
// finds the ivshmem device, prints ReadyLine, polls the channel until the
// host has sent a job, unpacks it into the root and reads the job from it.
func awaitJob() (*Job, error) {
	region, err := openChannel()
	if err != nil {
		return nil, fmt.Errorf("no job channel: %w", err)
	}
	defer unix.Munmap(region)
	fmt.Println(ReadyLine)
	word := func(off int) *uint64 { return (*uint64)(unsafe.Pointer(&region[off])) }
	for atomic.LoadUint64(word(0)) != ChannelMagic {
		time.Sleep(time.Millisecond)
	}
	pr, pw := io.Pipe()
	extracted := make(chan error, 1)
	go func() {
		err := extract(pr, "/")
		io.Copy(io.Discard, pr) // never leave the sender blocked
		extracted <- err
	}()
	var total uint64
	for seq := uint64(1); ; seq++ {
		for atomic.LoadUint64(word(ChannelSeq)) != seq {
			time.Sleep(time.Millisecond)
		}
		n := atomic.LoadUint64(word(ChannelLength))
		if n > uint64(len(region)-ChannelData) {
			pw.CloseWithError(errors.New("bad chunk"))
			<-extracted
			return nil, fmt.Errorf("job channel: a chunk of %d bytes does not fit the channel's %d", n, len(region)-ChannelData)
		}
		pw.Write(region[ChannelData : ChannelData+int(n)])
		total += n
		last := atomic.LoadUint64(word(ChannelLast)) != 0
		atomic.StoreUint64(word(ChannelAck), seq)
		if last {
			break
		}
	}
	pw.Close()
	if err := <-extracted; err != nil {
		return nil, fmt.Errorf("job channel: %w", err)
	}
	fmt.Printf("%s (%d bytes)\n", JobLine, total)
	return readJob()
}

// openChannel maps the memory BAR (resource2) of the ivshmem device, which
// needs no driver: sysfs maps a PCI BAR for root (Linux 2.6 on, EL7's 3.10
// too) once the device is enabled.
func openChannel() ([]byte, error) {
	devs, _ := filepath.Glob("/sys/bus/pci/devices/*")
	for _, d := range devs {
		if sysfsValue(d, "vendor") != ChannelVendor || sysfsValue(d, "device") != ChannelDevice {
			continue
		}
		if err := os.WriteFile(filepath.Join(d, "enable"), []byte("1"), 0); err != nil {
			return nil, fmt.Errorf("enable %s: %w", d, err)
		}
		f, err := os.OpenFile(filepath.Join(d, "resource2"), os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return nil, err
		}
		if st.Size() <= ChannelData {
			return nil, fmt.Errorf("%s/resource2 has %d bytes", d, st.Size())
		}
		m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return nil, fmt.Errorf("mmap %s/resource2: %w", d, err)
		}
		return m, nil
	}
	return nil, fmt.Errorf("no ivshmem PCI device (%s:%s)", ChannelVendor, ChannelDevice)
}

func sysfsValue(dir, name string) string {
	b, _ := os.ReadFile(filepath.Join(dir, name))
	return strings.TrimSpace(string(b))
}

// extract unpacks a newc cpio archive into dir: directories and regular
// files, replacing files of the same name (the template's job).
func extract(r io.Reader, dir string) error {
	cr := cpio.NewReader(r)
	for {
		h, err := cr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := path.Clean("/" + h.Name)
		if name == "/" || strings.Contains(h.Name, "..") {
			return fmt.Errorf("bad path %q in the payload", h.Name)
		}
		dst := filepath.Join(dir, name)
		switch {
		case h.Mode.IsDir():
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
		case h.Mode.IsRegular():
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			os.Remove(dst)
			if err := fileutil.Write(dst, cr, os.FileMode(h.Mode.Perm()), os.O_EXCL); err != nil {
				return err
			}
			if err := os.Chmod(dst, os.FileMode(h.Mode.Perm())); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: only directories and regular files may be in the payload", h.Name)
		}
	}
}

// applyHost sets the guest's clock to the host's and mixes the host's seed
// into the random pool (a write to /dev/urandom mixes, without crediting
// entropy).
func applyHost(job *Job) {
	if !job.Now.IsZero() {
		tv := unix.NsecToTimeval(job.Now.UnixNano())
		if err := unix.Settimeofday(&tv); err != nil {
			logf("cannot set the clock: %v", err)
		}
	}
	if len(job.Seed) > 0 {
		os.WriteFile("/dev/urandom", job.Seed, 0)
	}
}

// sealed copies the binary at p into a sealed memfd (no write, shrink or
// grow, no further seals) and returns it with the path the check starts
// the binary's processes from (/proc/<pid>/fd/<n>; argv[0] stays p). runc
// (rc7 and later) copies itself into a new memfd before every `runc init`
// unless it already runs from one sealed so (its fix of CVE-2019-5736,
// which guards the host's runc binary against a container; runc's notes
// allow for an administrator who runs it from a sealed memfd): under TCG
// each new copy is code QEMU translates afresh, about half of a real
// runc's check. The copy has nothing to do with cgroups; the name and the
// bytes are the same. memfd_create came with Linux 3.17: a kernel without
// it (EL7's 3.10) runs the binary from its file.
func sealed(p string) (f *os.File, runFrom string, err error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, "", err
	}
	fd, err := unix.MemfdCreate(filepath.Base(p), unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, "", err
	}
	f = os.NewFile(uintptr(fd), p)
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, "", err
	}
	const seals = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		f.Close()
		return nil, "", fmt.Errorf("seal: %w", err)
	}
	return f, fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), fd), nil
}

// digestOf hashes what f holds from its start, beside the check: sealed, a
// memfd cannot change, and under TCG hashing a 9 MB runc takes about half
// a second.
func digestOf(f *os.File) <-chan digestResult {
	c := make(chan digestResult, 1)
	go func() {
		sum, err := digest.Reader(io.NewSectionReader(f, 0, 1<<62))
		c <- digestResult{sum, err}
	}()
	return c
}

type digestResult struct {
	sum string
	err error
}
