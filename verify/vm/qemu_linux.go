package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// launcher starts QEMU and waits for it. It is the one seam for the VM
// process; tests replace it.
type launcher interface {
	// launch runs argv with extra as descriptors 3, 4, … and the console
	// (stdout and stderr) going to console, until it exits, ctx is done or
	// limit passes; then it kills it.
	launch(ctx context.Context, argv []string, extra []*os.File, console io.Writer, limit time.Duration) (exit, error)
}

// exit says how the VM process ended.
type exit struct {
	TimedOut  bool   // killed at the time limit
	Cancelled bool   // killed because ctx was done
	State     string // "exit status 0", "signal: killed", …
}

// processLauncher runs QEMU as a child of this process. It does not go
// through internal/run, which knows neither process groups nor a parent's
// death: QEMU runs in a process group of its own, which is killed whole at
// the time limit, and gets SIGKILL from the kernel if this process dies
// (killed with SIGKILL, say), so that no VM outlives the check that
// started it.
type processLauncher struct{}

func (processLauncher) launch(ctx context.Context, argv []string, extra []*os.File, console io.Writer, limit time.Duration) (exit, error) {
	type done struct {
		ex  exit
		err error
	}
	ch := make(chan done, 1)
	go func() {
		// The parent-death signal follows the thread that started the
		// child, not the process: keep this goroutine on its thread until
		// the child is reaped (the thread ends with the goroutine).
		runtime.LockOSThread()
		ex, err := runLocked(ctx, argv, extra, console, limit)
		ch <- done{ex, err}
	}()
	d := <-ch
	return d.ex, d.err
}

func runLocked(ctx context.Context, argv []string, extra []*os.File, console io.Writer, limit time.Duration) (exit, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.ExtraFiles = extra
	cmd.Stdout, cmd.Stderr = console, console
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return exit{}, fmt.Errorf("start %s: %w", argv[0], err)
	}
	waitc := make(chan error, 1)
	go func() { waitc <- cmd.Wait() }()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	var ex exit
	var err error
	select {
	case err = <-waitc:
	case <-timer.C:
		ex.TimedOut = true
	case <-ctx.Done():
		ex.Cancelled = true
	}
	if ex.TimedOut || ex.Cancelled {
		// The whole group: QEMU and anything it may have started.
		unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
		err = <-waitc
	}
	ex.State = cmd.ProcessState.String()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return ex, err
	}
	return ex, nil
}

// KVMUsable reports whether this user can run a KVM virtual machine: it
// opens /dev/kvm and creates (and drops) a VM, as QEMU would.
func KVMUsable() bool {
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	const kvmGetAPIVersion, kvmCreateVM = 0xAE00, 0xAE01
	if v, err := unix.IoctlRetInt(fd, kvmGetAPIVersion); err != nil || v != 12 {
		return false
	}
	vmfd, err := unix.IoctlRetInt(fd, kvmCreateVM)
	if err != nil {
		return false
	}
	unix.Close(vmfd)
	return true
}

// memfd returns an anonymous in-memory file: the initramfs and the report
// port live there, so nothing is left on disk, whatever happens to this
// process. QEMU opens it as /dev/fd/<n>.
func memfd(name string) (*os.File, error) {
	// Close-on-exec for every other child; exec.Cmd.ExtraFiles hands it
	// to QEMU all the same.
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	return os.NewFile(uintptr(fd), name), nil
}
