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
	p, err := startVM(argv, extra, console)
	if err != nil {
		return exit{}, err
	}
	return p.wait(ctx, time.Now().Add(limit))
}

// vmProc is a running QEMU.
type vmProc struct {
	pid   int
	done  chan struct{} // closed once QEMU is reaped
	err   error         // of cmd.Wait, once done
	state string        // "exit status 0", "signal: killed", …, once done
}

// startVM starts argv with extra as descriptors 3, 4, … and its output
// going to console, in a process group of its own, with SIGKILL as its
// parent-death signal.
func startVM(argv []string, extra []*os.File, console io.Writer) (*vmProc, error) {
	p := &vmProc{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// The parent-death signal follows the thread that started the
		// child, not the process: keep this goroutine on its thread until
		// the child is reaped (the thread ends with the goroutine).
		runtime.LockOSThread()
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.ExtraFiles = extra
		cmd.Stdout, cmd.Stderr = console, console
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.pid = cmd.Process.Pid
		started <- nil
		p.err = cmd.Wait()
		p.state = cmd.ProcessState.String()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	return p, nil
}

// kill kills QEMU's whole process group and waits until it is reaped.
func (p *vmProc) kill() {
	unix.Kill(-p.pid, unix.SIGKILL)
	<-p.done
}

// exited says whether QEMU has ended.
func (p *vmProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits until QEMU ends, ctx is done or deadline passes; then it kills
// the group (QEMU and anything it may have started).
func (p *vmProc) wait(ctx context.Context, deadline time.Time) (exit, error) {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	var ex exit
	select {
	case <-p.done:
	case <-timer.C:
		ex.TimedOut = true
	case <-ctx.Done():
		ex.Cancelled = true
	}
	if ex.TimedOut || ex.Cancelled {
		p.kill()
	}
	ex.State = p.state
	var ee *exec.ExitError
	if p.err != nil && !errors.As(p.err, &ee) {
		return ex, p.err
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
