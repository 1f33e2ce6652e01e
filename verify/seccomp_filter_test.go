package verify

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// runFilter runs the seccomp filter on one syscall in x/net/bpf's
// interpreter. Its loads are big-endian where the kernel's are native
// (little-endian here), so struct seccomp_data is laid out big-endian, each
// argument's low half where the kernel's little-endian u64 has it.
func runFilter(t *testing.T, vm *bpf.VM, arch, nr uint32, args ...uint32) uint32 {
	t.Helper()
	data := make([]byte, 64) // struct seccomp_data
	binary.BigEndian.PutUint32(data[seccompDataNr:], nr)
	binary.BigEndian.PutUint32(data[seccompDataArc:], arch)
	for i, a := range args {
		binary.BigEndian.PutUint32(data[seccompDataArgs+8*i:], a)
	}
	ret, err := vm.Run(data)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(ret)
}

// The filter stops on exactly the listed x86-64 syscalls, and on every
// syscall of another ABI (i386 through int 0x80, x32), so that no open or
// write slips past the x86-64 numbers.
func TestSeccompFilterStopsOnTheListedCallsAndOtherABIs(t *testing.T) {
	vm, err := bpf.NewVM(seccompFilter())
	if err != nil {
		t.Fatal(err)
	}
	listed := map[uint32]bool{}
	for _, c := range tracedCalls {
		listed[c.nr] = true
	}
	// Every argument asks for write access, as an open's flags may.
	writing := []uint32{unix.O_RDWR, unix.O_RDWR, unix.O_RDWR, unix.O_RDWR, unix.O_RDWR, unix.O_RDWR}
	traced := 0
	for nr := uint32(0); nr < 1024; nr++ {
		want := uint32(unix.SECCOMP_RET_ALLOW)
		if listed[nr] {
			want = unix.SECCOMP_RET_TRACE | seccompNative
			traced++
		}
		if got := runFilter(t, vm, unix.AUDIT_ARCH_X86_64, nr, writing...); got != want {
			t.Errorf("x86-64 syscall %d: %#x, want %#x", nr, got, want)
		}
		if got := runFilter(t, vm, unix.AUDIT_ARCH_X86_64, x32SyscallBit|nr); got != unix.SECCOMP_RET_TRACE|seccompX32 {
			t.Errorf("x32 syscall %d: %#x", nr, got)
		}
		for _, arch := range []uint32{unix.AUDIT_ARCH_I386, 0} {
			if got := runFilter(t, vm, arch, nr); got != unix.SECCOMP_RET_TRACE|seccompCompat {
				t.Errorf("arch %#x syscall %d: %#x", arch, nr, got)
			}
		}
	}
	if traced != len(tracedCalls) {
		t.Errorf("%d x86-64 syscalls traced, %d listed (a number listed twice?)", traced, len(tracedCalls))
	}
	// The opens with a flags argument: only those that ask for write access.
	for _, c := range tracedCalls {
		if c.flagsArg == 0 {
			continue
		}
		for flags, traced := range map[uint32]bool{
			unix.O_RDONLY: false, unix.O_RDONLY | unix.O_CLOEXEC | unix.O_DIRECTORY: false, unix.O_PATH: false,
			unix.O_WRONLY: true, unix.O_RDWR: true, unix.O_WRONLY | unix.O_RDWR: true, unix.O_WRONLY | unix.O_TRUNC | unix.O_CLOEXEC: true,
		} {
			args := make([]uint32, 6)
			for i := range args {
				args[i] = unix.O_RDWR // every other argument says "write": only flagsArg may count
			}
			args[c.flagsArg] = flags
			want := uint32(unix.SECCOMP_RET_ALLOW)
			if traced {
				want = unix.SECCOMP_RET_TRACE | seccompNative
			}
			if got := runFilter(t, vm, unix.AUDIT_ARCH_X86_64, c.nr, args...); got != want {
				t.Errorf("%s with flags %#x: %#x, want %#x", c.name, flags, got, want)
			}
		}
	}
	for _, nr := range []uint32{unix.SYS_READ, unix.SYS_MMAP, unix.SYS_FUTEX, unix.SYS_CLONE, unix.SYS_EXECVE, unix.SYS_TRUNCATE, unix.SYS_TEE, unix.SYS_VMSPLICE, unix.SYS_NAME_TO_HANDLE_AT} {
		if runFilter(t, vm, unix.AUDIT_ARCH_X86_64, nr) != unix.SECCOMP_RET_ALLOW {
			t.Errorf("syscall %d is traced; the filter lets it run (docs/verifier.md says why)", nr)
		}
	}
}

// launcherCode is what launcherSource assembles to (GNU as, the binutils
// that cgo builds need anyway).
func TestLauncherCodeIsItsSource(t *testing.T) {
	as, err1 := exec.LookPath("as")
	objcopy, err2 := exec.LookPath("objcopy")
	if err1 != nil || err2 != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true but as or objcopy (binutils) is missing")
		}
		t.Skip("needs as and objcopy (binutils)")
	}
	dir := t.TempDir()
	src, obj, bin := filepath.Join(dir, "l.s"), filepath.Join(dir, "l.o"), filepath.Join(dir, "l.bin")
	if err := os.WriteFile(src, []byte(launcherSource), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{as, "-o", obj, src}, {objcopy, "-O", "binary", "-j", ".text", obj, bin}} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	got, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, launcherCode) {
		t.Errorf("launcherSource assembles to\n% x\nlauncherCode is\n% x", got, launcherCode)
	}
}

// The launcher's struct sock_fprog names its filter where tinyELF loads it.
func TestLauncherELFPointsAtItsFilter(t *testing.T) {
	elf, err := launcherELF()
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	if entry := le.Uint64(tinyELF(nil)[24:]); entry != tinyELFCode {
		t.Fatalf("tinyELF loads code at %#x, tinyELFCode says %#x", entry, tinyELFCode)
	}
	code := elf[tinyELFCode-0x400000:]
	if !bytes.Equal(code[:len(launcherCode)], launcherCode) {
		t.Fatal("the launcher's code is not where tinyELF puts code")
	}
	fprog := code[len(launcherCode):]
	raw, err := bpf.Assemble(seccompFilter())
	if err != nil {
		t.Fatal(err)
	}
	if n := le.Uint16(fprog); int(n) != len(raw) {
		t.Errorf("sock_fprog.len %d, the filter has %d instructions", n, len(raw))
	}
	at := le.Uint64(fprog[8:])
	off := at - tinyELFCode
	if at != tinyELFCode+uint64(len(launcherCode))+16 || uint64(len(code)) != off+8*uint64(len(raw)) {
		t.Fatalf("sock_fprog.filter %#x does not name the %d instructions that follow it", at, len(raw))
	}
	for i, in := range raw {
		f := code[off+8*uint64(i):]
		if le.Uint16(f) != in.Op || f[2] != in.Jt || f[3] != in.Jf || le.Uint32(f[4:]) != in.K {
			t.Errorf("filter instruction %d differs from the assembled %+v", i, in)
		}
	}
}

// A program the launcher cannot start is a failure of the run, as a
// failed exec.Cmd.Start was before the launcher.
func TestPtraceRunReportsAProgramItCannotStart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	cmd := exec.Command(filepath.Join(t.TempDir(), "missing"))
	_, err := ptraceRun(context.Background(), cmd, testLauncher(t), time.Now().Add(10*time.Second), make(chan struct{}), nil)
	if err == nil || !strings.Contains(err.Error(), "cannot execute") {
		t.Fatalf("err = %v", err)
	}
}

// Where the kernel refuses the filter (here: a process without
// CAP_SYS_ADMIN and without no_new_privs), the tracer fails; it never runs
// the program untraced.
func TestPtraceRunFailsWithoutItsFilter(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir, err := os.MkdirTemp("", "nokmem-test-launcher-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	launcher, err := writeLauncher(dir)
	if err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "ran")
	cmd := exec.Command("/bin/sh", "-c", "echo > "+marker)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	_, err = ptraceRun(context.Background(), cmd, launcher, time.Now().Add(10*time.Second), make(chan struct{}), nil)
	if err == nil || !strings.Contains(err.Error(), "refused the seccomp filter") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the program ran without the filter")
	}
}

// Before a traced process removes a directory (a cgroup), the tracer lets
// the fanotify detector read its queue: the directory is still there then.
// Removing a file does not call it.
func TestPtraceRunFlushesBeforeADirectoryIsRemoved(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := t.TempDir()
	sub, file := filepath.Join(dir, "sub"), filepath.Join(dir, "file")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var calls []bool
	cmd := exec.Command("/bin/sh", "-c", `rm "$0" && rmdir "$1"`, file, sub)
	got, err := ptraceRun(context.Background(), cmd, testLauncher(t), time.Now().Add(10*time.Second), make(chan struct{}), func() {
		_, err := os.Stat(sub)
		calls = append(calls, err == nil)
	})
	if err != nil || !got.end.finished() || got.end.code != 0 {
		t.Fatalf("traced run: end=%s err=%v", got.end, err)
	}
	if len(calls) != 1 || !calls[0] {
		t.Fatalf("calls before a removal (true: the directory was still there): %v, want [true]", calls)
	}
	if _, err := os.Stat(sub); err == nil {
		t.Fatal("the directory was not removed")
	}
}
