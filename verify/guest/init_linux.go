package guest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nokmem/nokmem/internal/fileutil"
	"github.com/nokmem/nokmem/verify"
)

// stageEnv marks the second start of /init, after switchRoot.
const stageEnv = "NOKMEM_VM_INIT_STAGE"

// Main is the guest's /init. It never returns: it powers the VM off (or,
// should that fail, exits, and the kernel's panic reboots a VM that QEMU
// runs with -no-reboot, which ends it just the same).
func Main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "nokmem-vm-init: not PID 1: this program is the /init of the verifier's VM (verify/vm), not a command")
		os.Exit(2)
	}
	if os.Getenv(stageEnv) == "" {
		fmt.Println(StartedLine)
		// Only returns on failure: runc cannot pivot_root out of the
		// initramfs (rootfs), so the files move to a tmpfs that becomes /.
		if err := switchRoot(); err != nil {
			logf("cannot leave the initramfs: %v", err)
			powerOff()
		}
	}
	res, nonce := run()
	if err := report(res, nonce); err != nil {
		logf("cannot write the report: %v", err)
	}
	powerOff()
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stdout, "nokmem-vm-init: "+format+"\n", args...)
}

// run sets the guest up, reads the job and checks its binaries.
func run() (*Result, string) {
	res := &Result{Items: []ItemResult{}}
	res.Caps = setup()
	job, err := readJob()
	if err != nil {
		res.Error = err.Error()
		return res, ""
	}
	if job.Await {
		// A template: the host saves the VM once this waits, and gives the
		// job to each VM restored from it.
		if job, err = awaitJob(); err != nil {
			res.Error = err.Error()
			return res, TemplateNonce
		}
	}
	applyHost(job)
	logf("guest clock %s", time.Now().UTC().Format(time.RFC3339Nano))
	// The host kills the VM at its own limit; stop a little earlier, so that
	// a report (with the runs cancelled) still gets out.
	deadline := job.Deadline
	if deadline <= 0 {
		deadline = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeoutCause(context.Background(), deadline,
		fmt.Errorf("the guest reached its deadline (%s) before the host's time limit", deadline))
	defer cancel()
	// Should a check not return once cancelled, power off regardless.
	time.AfterFunc(deadline+10*time.Second, func() {
		logf("deadline passed and the check did not stop: powering off without a report")
		powerOff()
	})
	logf("uptime %.2fs; kernel %s; cgroup v1 controllers %s; memory hierarchy %q; kmem file %v; openat2 %v; seccomp %v",
		uptime(), res.Caps.Kernel, strings.Join(res.Caps.Controllers, ","), res.Caps.MemoryMount, res.Caps.KmemFile, res.Caps.Openat2, res.Caps.Seccomp)
	if p := res.Caps.Problems(); len(p) > 0 {
		logf("this kernel cannot run the check: %s", strings.Join(p, "; "))
		return res, job.Nonce
	}
	if job.SelfTest {
		st, err := verify.SelfTest(ctx, res.Caps.MemoryMount, verify.DynamicOptions{TempDir: TempDir})
		if err != nil {
			res.Error = "self-test: " + err.Error()
			return res, job.Nonce
		}
		res.SelfTest = st
	}
	for _, it := range job.Items {
		ir, err := check(ctx, it, job.RunTimeout)
		if err != nil {
			res.Error = err.Error()
			break
		}
		if ir.Dynamic != nil {
			logf("%s: dynamic %s: %s", it.Name, ir.Dynamic.Status, ir.Dynamic.Reason)
		}
		if l := ir.Leak; l != nil {
			logf("%s: %d lifecycles (%d failed); memory cgroups counted/existing %d/%d before, %d/%d after, %d/%d after drop_caches",
				it.Name, l.Lifecycles, l.Failed, l.Before.Kernel, l.Before.Dirs, l.After.Kernel, l.After.Dirs, l.AfterDropCaches.Kernel, l.AfterDropCaches.Dirs)
		}
		res.Items = append(res.Items, *ir)
	}
	return res, job.Nonce
}

func readJob() (*Job, error) {
	b, err := os.ReadFile(JobFile)
	if err != nil {
		return nil, fmt.Errorf("no job: %w", err)
	}
	var job Job
	if err := json.Unmarshal(b, &job); err != nil {
		return nil, fmt.Errorf("job: %w", err)
	}
	return &job, nil
}

// check runs the dynamic check of one item.
func check(ctx context.Context, it Item, timeout time.Duration) (*ItemResult, error) {
	if it.Name == "" || strings.ContainsRune(it.Name, '/') {
		return nil, fmt.Errorf("bad item name %q", it.Name)
	}
	path := filepath.Join(BinDir, it.Name)
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	opt := verify.DynamicOptions{TempDir: TempDir, Timeout: timeout, Disable: it.Disable}
	if it.Kind == KindRunc {
		if m, runFrom, err := sealed(path); err == nil {
			defer m.Close()
			f, opt.RunFrom = m, runFrom
		} else {
			logf("%s runs from its file (no sealed memfd: %v)", it.Name, err)
		}
	}
	digest := digestOf(f)
	logf("checking %s (%s)", it.Name, it.Kind)
	ir := &ItemResult{Name: it.Name}
	switch it.Kind {
	case KindRunc:
		ir.Dynamic = verify.DynamicRunc(ctx, path, opt)
	case KindProbe:
		ir.Dynamic = verify.DynamicProbe(ctx, path, opt)
	case KindLeak:
		ir.Leak = leak(ctx, path, it.Lifecycles, timeout)
	default:
		return nil, fmt.Errorf("item %s: unknown kind %q", it.Name, it.Kind)
	}
	d := <-digest
	if d.err != nil {
		return nil, fmt.Errorf("item %s: sha256: %w", it.Name, d.err)
	}
	ir.SHA256 = d.sum
	return ir, nil
}

// setup mounts what the check needs and reports what the kernel offers.
func setup() Caps {
	var c Caps
	basic := []struct {
		src, dst, fstype, data string
		flags                  uintptr
	}{
		{"proc", "/proc", "proc", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"sysfs", "/sys", "sysfs", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"devtmpfs", "/dev", "devtmpfs", "mode=0755", unix.MS_NOSUID},
		// The bundles live in /tmp: runc creates the container's device
		// nodes there, which a nodev mount would refuse to open.
		{"tmpfs", "/tmp", "tmpfs", "mode=1777", 0},
		{"tmpfs", "/run", "tmpfs", "mode=0755", unix.MS_NOSUID},
		{"tmpfs", "/sys/fs/cgroup", "tmpfs", "mode=0755", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
	}
	for _, m := range basic {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			c.SetupErrors = append(c.SetupErrors, "mkdir "+m.dst+": "+err.Error())
			continue
		}
		if err := unix.Mount(m.src, m.dst, m.fstype, m.flags, m.data); err != nil {
			c.SetupErrors = append(c.SetupErrors, fmt.Sprintf("mount -t %s %s: %v", m.fstype, m.dst, err))
		}
	}
	c.Kernel = verify.KernelRelease()
	c.Controllers, c.MountErrors = mountControllers()
	if m, err := verify.MemoryMount(); err == nil {
		c.MemoryMount = m
		_, err := os.Stat(filepath.Join(m, verify.KmemFile))
		c.KmemFile = err == nil
		c.Fanotify = verify.FanotifyProblem(m)
	}
	fd, err := unix.Openat2(unix.AT_FDCWD, "/", &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC})
	if err == nil {
		unix.Close(fd)
	}
	c.Openat2 = !errors.Is(err, unix.ENOSYS)
	// PR_GET_SECCOMP answers EINVAL on a kernel without CONFIG_SECCOMP.
	_, err = unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0)
	c.Seccomp = err == nil
	return c
}

// mountControllers mounts every cgroup v1 controller that /proc/cgroups
// lists as enabled at /sys/fs/cgroup/<name>, each on its own, as runc's
// cgroupfs driver finds them (in /proc/self/mountinfo).
func mountControllers() ([]string, map[string]string) {
	f, err := os.Open("/proc/cgroups")
	if err != nil {
		return nil, map[string]string{"memory": "no /proc/cgroups: " + err.Error()}
	}
	defer f.Close()
	var ok []string
	errs := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		name := fields[0]
		if fields[3] != "1" {
			errs[name] = "disabled (/proc/cgroups)"
			continue
		}
		dir := "/sys/fs/cgroup/" + name
		if err := os.MkdirAll(dir, 0o755); err != nil {
			errs[name] = err.Error()
			continue
		}
		if err := unix.Mount("cgroup", dir, "cgroup", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, name); err != nil {
			errs[name] = err.Error()
			os.Remove(dir)
			continue
		}
		ok = append(ok, name)
	}
	if _, listed := errs["memory"]; !listed && !contains(ok, "memory") {
		errs["memory"] = "not listed in /proc/cgroups"
	}
	sort.Strings(ok)
	return ok, errs
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// report writes the result to the report port (or, on a kernel without a
// second serial port, to the console) and waits until it has left.
func report(res *Result, nonce string) error {
	res.Uptime = uptime()
	f, err := os.OpenFile(ReportDevice, os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		logf("no %s (%v): the report goes to the console", ReportDevice, err)
		return WriteReport(os.Stdout, nonce, res)
	}
	defer f.Close()
	if err := WriteReport(f, nonce, res); err != nil {
		// A device node without a UART behind it (EIO).
		logf("cannot write to %s (%v): the report goes to the console", ReportDevice, err)
		return WriteReport(os.Stdout, nonce, res)
	}
	// tcdrain: the bytes must have left the UART before the power goes.
	if err := unix.IoctlSetInt(int(f.Fd()), unix.TCSBRK, 1); err != nil {
		return fmt.Errorf("tcdrain %s: %w", ReportDevice, err)
	}
	logf("report written to %s", ReportDevice)
	return nil
}

func uptime() float64 {
	b, _ := os.ReadFile("/proc/uptime")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func powerOff() {
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Only returns on failure: PID 1 exiting panics the kernel, and QEMU,
	// run with -no-reboot, ends on the reboot that panic=-1 asks for.
	logf("power off failed (%v): exiting", err)
	os.Exit(1)
}

// switchRoot moves the initramfs's files to a tmpfs, makes it the root (as
// switch_root does) and starts /init again from there. pivot_root(2) fails
// with EINVAL when the current root is the initramfs (rootfs), and runc
// pivots into every container's root.
func switchRoot() error {
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err != nil {
		return err
	}
	const ramfsMagic, tmpfsMagic = 0x858458f6, 0x01021994
	if st.Type != ramfsMagic && st.Type != tmpfsMagic {
		return fmt.Errorf("the root is not an initramfs (filesystem magic %#x)", st.Type)
	}
	const newRoot = "/.newroot"
	if err := os.Mkdir(newRoot, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", newRoot, "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("mount tmpfs: %w", err)
	}
	if err := moveTree("/", newRoot); err != nil {
		return err
	}
	if err := os.Chdir(newRoot); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("mount --move: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	return syscall.Exec("/init", os.Args, append(os.Environ(), stageEnv+"=2"))
}

// moveTree copies the directories, regular files and symlinks of the
// initramfs at src into dst, removing each file once copied (the initramfs
// lives in memory).
func moveTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if rel == "." {
			return nil
		}
		target := filepath.Join(dst, rel)
		if p == dst {
			return filepath.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, info.Mode().Perm())
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		case d.Type().IsRegular():
			if err := copyFile(p, target, info.Mode().Perm()); err != nil {
				return err
			}
			return os.Remove(p)
		}
		return nil // device nodes: devtmpfs provides them
	})
}

func copyFile(src, dst string, mode fs.FileMode) error {
	if err := fileutil.Copy(src, dst, mode, os.O_TRUNC); err != nil {
		return err
	}
	// The umask must not narrow the mode an executable needs.
	return os.Chmod(dst, mode)
}

// leak runs n untraced lifecycles of the runc at path and counts the memory
// cgroups before and after: on a kernel that never frees a memory cgroup
// once kmem accounting was turned on in it (EL7's 3.10), the kernel's count
// grows by one per lifecycle of a runc that writes the kmem file.
func leak(ctx context.Context, path string, n int, timeout time.Duration) *LeakResult {
	r := &LeakResult{Lifecycles: n}
	mount, _ := verify.MemoryMount()
	r.Before = countCgroups(mount)
	for i := 0; i < n && ctx.Err() == nil; i++ {
		if err := verify.Lifecycle(ctx, path, TempDir, timeout); err != nil {
			r.Failed++
			if r.FirstError == "" {
				r.FirstError = err.Error()
			}
		}
	}
	// Removed cgroups are freed asynchronously (RCU, offline work).
	time.Sleep(time.Second)
	r.After = countCgroups(mount)
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200)
	time.Sleep(time.Second)
	r.AfterDropCaches = countCgroups(mount)
	return r
}

func countCgroups(mount string) Count {
	var c Count
	if b, err := os.ReadFile("/proc/cgroups"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 3 && f[0] == "memory" {
				c.Kernel, _ = strconv.Atoi(f[2])
			}
		}
	}
	filepath.WalkDir(mount, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			c.Dirs++
		}
		return nil
	})
	return c
}
