package vm

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nokmem/nokmem/verify"
	"github.com/nokmem/nokmem/verify/guest"
)

// A kernel without a cgroup v1 memory controller is refused with what it
// lacks. cgroup_no_v1=memory on the command line takes it away from v1, as
// a kernel built without it (or a cgroup v2-only one) would.
func TestVMRefusesKernelWithoutCgroupV1Memory(t *testing.T) {
	requireVM(t)
	tmp := t.TempDir()
	v := testVerifier(t, tmp)
	v.Append = []string{"cgroup_no_v1=memory"}
	boot, err := v.Check(context.Background(), []Binary{{Name: "runc", Path: routeWriters(t)[0], Kind: guest.KindRunc}})
	if err == nil {
		t.Fatalf("accepted: %+v", boot.Result)
	}
	for _, want := range []string{"cannot run the dynamic check", "no cgroup v1 memory hierarchy", "cgroup_no_v1=memory", "linux-image-cloud-amd64"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	t.Logf("refused: %v", err)
	if boot == nil || boot.Result == nil || len(boot.Result.Items) != 0 || boot.Result.Caps.MemoryMount != "" {
		t.Errorf("the guest ran a check on an unfit kernel: %+v", boot)
	}
	assertEmpty(t, tmp)
}

// A guest that never powers off is killed at the time limit and the check
// fails: here the kernel panics (no /init) and, told panic=0, waits forever.
func TestVMHungGuestIsKilledAtTheTimeLimit(t *testing.T) {
	requireVM(t)
	tmp := t.TempDir()
	v := testVerifier(t, tmp)
	v.Timeout = 8 * time.Second
	v.Append = []string{"rdinit=/nonexistent", "panic=0"}
	start := time.Now()
	boot, err := v.Check(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "did not power off within the time limit of 8s") || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("err = %v", err)
	}
	t.Logf("%v", err)
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("the kill took %s", d)
	}
	if pids := qemuProcesses(t, boot.Args); len(pids) > 0 {
		t.Errorf("QEMU still runs: %v", pids)
	}
	assertEmpty(t, tmp)
}

// The detectors' self-test runs in the guest (verify:host's VM check).
func TestVMSelfTest(t *testing.T) {
	requireVM(t)
	boot, err := testVerifier(t, t.TempDir()).SelfTest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range boot.Result.SelfTest {
		if !c.Caught || len(c.Events) == 0 || !strings.HasPrefix(c.Events[0].Path, "/sys/fs/cgroup/memory/nokmem-selftest-") {
			t.Errorf("self-test %+v", c)
		}
	}
	if boot.Result.Caps.Kernel == "" || !boot.Result.Caps.KmemFile || boot.Result.Caps.Fanotify != "" {
		t.Errorf("caps %+v", boot.Result.Caps)
	}
}

// Root is not needed: the whole verification of a nokmem build passes and
// that of a default build fails with the write as evidence, as user nobody
// (setpriv), the first booting and saving a snapshot in the user's cache,
// the second restoring it. Run as root, the test runs itself as nobody.
func TestVMVerifyAsNonRoot(t *testing.T) {
	requireVM(t)
	if bin := os.Getenv("NOKMEM_TEST_VM_NONROOT_BINARY"); bin != "" {
		if os.Geteuid() == 0 {
			t.Fatal("the non-root run runs as root")
		}
		v := warmVerifier(t, t.TempDir(), filepath.Join(os.Getenv("HOME"), "snapshots"))
		rep, err := v.Verify(context.Background(), bin, verify.Options{Project: "runc"})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Passed || rep.Dynamic.Status != verify.DynPass || !strings.Contains(rep.Dynamic.Reason, "booted and saved as a snapshot") {
			t.Fatalf("as uid %d:\n%s", os.Geteuid(), rep.Summary())
		}
		t.Logf("as uid %d: %s: %s", os.Geteuid(), filepath.Base(bin), rep.Dynamic.Reason)
		writer := os.Getenv("NOKMEM_TEST_VM_NONROOT_WRITER")
		rep, err = v.Verify(context.Background(), writer, verify.Options{Project: "runc"})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Passed || rep.Dynamic.Status != verify.DynFail || !strings.Contains(rep.Dynamic.Reason, verify.KmemFile) || !strings.Contains(rep.Dynamic.Reason, "restored from a snapshot") {
			t.Fatalf("as uid %d, a default build:\n%s", os.Geteuid(), rep.Summary())
		}
		t.Logf("as uid %d: %s: %s", os.Geteuid(), filepath.Base(writer), rep.Dynamic.Reason)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("runs as root, to run itself as nobody")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("no setpriv")
	}
	bin := fixtureRepo(t).BuildRuncLinked(t, "v1.0.0-rc9", []string{"seccomp", "nokmem"}, false, "")
	shared := filepath.Join(sharedDir, "nonroot-runc")
	if err := copyTo(bin, shared); err != nil {
		t.Fatal(err)
	}
	writer := filepath.Join(sharedDir, "nonroot-runc-default")
	if err := copyTo(fixtureRepo(t).BuildRuncLinked(t, "v1.0.0-rc9", []string{"seccomp"}, false, ""), writer); err != nil {
		t.Fatal(err)
	}
	testVerifier(t, t.TempDir()) // builds /init into sharedDir
	tmp, err := os.MkdirTemp("", "nokmem-vm-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	os.Chmod(tmp, 0o777)
	// go test's own build directory is private to root.
	self := filepath.Join(sharedDir, "vm.test")
	if err := copyTo(os.Args[0], self); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", self, "-test.run=^TestVMVerifyAsNonRoot$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "NOKMEM_TEST_VM_NONROOT_BINARY="+shared, "NOKMEM_TEST_VM_NONROOT_WRITER="+writer, "NOKMEM_TEST_VM_INIT="+initPath, "TMPDIR="+tmp, "HOME="+tmp)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Count(string(out), "as uid 65534") != 2 {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
	t.Logf("%s", lastLines(string(out), 5))
}

// kill -9 of the process that runs a check leaves nothing: QEMU dies with
// it (parent-death signal), the initramfs and the report were memory files,
// and no file is left in its temp dir.
func TestVMNothingLeftAfterKill9(t *testing.T) {
	requireVM(t)
	if os.Getenv("NOKMEM_TEST_VM_HELPER") == "1" {
		v := testVerifier(t, os.TempDir())
		// A guest that waits forever, so that it runs when it is killed.
		v.Append = []string{"rdinit=/nonexistent", "panic=0"}
		v.Check(context.Background(), []Binary{{Name: "runc", Path: os.Getenv("NOKMEM_TEST_VM_HELPER_BIN"), Kind: guest.KindRunc}})
		return
	}
	testVerifier(t, t.TempDir())
	tmp := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestVMNothingLeftAfterKill9$", "-test.count=1")
	cmd.Env = append(os.Environ(), "NOKMEM_TEST_VM_HELPER=1", "NOKMEM_TEST_VM_INIT="+initPath, "NOKMEM_TEST_VM_HELPER_BIN="+routeWriters(t)[0], "TMPDIR="+tmp)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var qemu []int
	deadline := time.Now().Add(60 * time.Second)
	for len(qemu) == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		qemu = childrenNamed(cmd.Process.Pid, "qemu-system-x86")
	}
	if len(qemu) == 0 {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("the helper started no QEMU")
	}
	time.Sleep(time.Second) // QEMU has opened the initramfs and is booting
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	for _, pid := range qemu {
		gone := false
		for i := 0; i < 100 && !gone; i++ {
			_, err := os.Stat("/proc/" + strconv.Itoa(pid))
			gone = os.IsNotExist(err) || isZombie(pid)
			time.Sleep(50 * time.Millisecond)
		}
		if !gone {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("QEMU (pid %d) outlived the killed check", pid)
		}
	}
	assertEmpty(t, tmp)
}

func copyTo(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// qemuProcesses lists the processes whose command line is args.
func qemuProcesses(t *testing.T, args []string) []int {
	t.Helper()
	if len(args) == 0 {
		t.Fatal("no QEMU command line")
	}
	want := strings.Join(args, "\x00")
	var out []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err == nil && strings.TrimRight(string(b), "\x00") == want {
			pid, _ := strconv.Atoi(filepath.Base(d))
			out = append(out, pid)
		}
	}
	return out
}

// childrenNamed lists the children of ppid whose comm starts with prefix.
func childrenNamed(ppid int, prefix string) []int {
	var out []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		f, err := os.Open(filepath.Join(d, "status"))
		if err != nil {
			continue
		}
		var name string
		parent := -1
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "Name:"); ok {
				name = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(sc.Text(), "PPid:"); ok {
				parent, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		f.Close()
		if parent == ppid && strings.HasPrefix(name, prefix) {
			pid, _ := strconv.Atoi(filepath.Base(d))
			out = append(out, pid)
		}
	}
	return out
}

func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && len(b) > i+2 && b[i+2] == 'Z'
}

// The leak reproducer runs untraced lifecycles and counts the memory
// cgroups. Linux 6.1 frees every removed memory cgroup whatever runc wrote
// (kmem.limit_in_bytes has no effect there), so neither build leaks on it;
// on EL7's 3.10 the default build's count grows by one per lifecycle.
func TestVMLeakReproducer(t *testing.T) {
	requireVM(t)
	r := fixtureRepo(t)
	bins := []Binary{
		{Name: "runc-nokmem", Path: r.BuildRunc(t, "v1.0.0-rc9", []string{"seccomp", "nokmem"}, false)},
		{Name: "runc-default", Path: r.BuildRunc(t, "v1.0.0-rc9", []string{"seccomp"}, false)},
	}
	tmp := t.TempDir()
	const n = 5
	boot, err := testVerifier(t, tmp).Leak(context.Background(), bins, n)
	if err != nil {
		t.Fatal(err)
	}
	for i, ir := range boot.Result.Items {
		l := ir.Leak
		t.Logf("%s on %s: memory cgroups counted/existing %d/%d before, %d/%d after, %d/%d after drop_caches: leaked %d",
			ir.Name, boot.Result.Caps.Kernel, l.Before.Kernel, l.Before.Dirs, l.After.Kernel, l.After.Dirs, l.AfterDropCaches.Kernel, l.AfterDropCaches.Dirs, l.Leaked())
		if ir.Name != bins[i].Name || l.Lifecycles != n || l.Failed != 0 || l.Before.Kernel < 1 || l.Before.Dirs < 1 {
			t.Errorf("%+v", l)
		}
		if l.AfterDropCaches.Dirs != l.Before.Dirs {
			t.Errorf("%s: the lifecycles left cgroup directories: %+v", ir.Name, l)
		}
		if strings.HasPrefix(boot.Result.Caps.Kernel, "6.") && l.Leaked() != 0 {
			t.Errorf("%s leaked %d memory cgroups on %s", ir.Name, l.Leaked(), boot.Result.Caps.Kernel)
		}
	}
	assertEmpty(t, tmp)
}
