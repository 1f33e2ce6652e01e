package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Event is one observed open-for-write of, or write to, the kmem file.
type Event struct {
	Detector string `json:"detector"`
	Pid      int    `json:"pid"`
	Comm     string `json:"comm,omitempty"`
	Syscall  string `json:"syscall"`
	Path     string `json:"path"`
}

// traceOutcome is what the ptrace detector saw of one traced command.
type traceOutcome struct {
	events []Event
	// untraced lists syscalls whose file I/O the detector cannot attribute
	// (io_uring, Linux AIO, a 32-bit or x32 syscall): a run that made any
	// is not a pass.
	untraced []string
	stops    int // how often the tracer stopped the traced tree
	end      runEnd
}

// tracee is the tracer's state of one traced task.
type tracee struct {
	attached bool // its first stop (the attach SIGSTOP) was seen
	// open is an open-family syscall whose exit the tracer waits for, to
	// read the descriptor it returned; stops counts the syscall stops seen
	// since its seccomp stop.
	open  *tracedCall
	stops int
}

// ptraceRun starts cmd under ptrace and follows it and every process and
// thread it creates, until cmd's own process has exited and no traced task
// is left. The command runs through the seccomp launcher (launcher, see
// launcherCode), so the tree stops only at the syscalls that can open a
// file for writing or write to one (tracedCalls) and runs at full speed
// otherwise. Descriptors are resolved through /proc/<tid>/fd, so the kmem
// file is seen however its path was given (absolute, relative, relative to
// a directory fd, through a symlink). ready is closed once the command has
// started (or failed to). beforeRemove, if set, runs before a traced task
// removes a directory (the fanotify detector's flush).
//
// When ctx is cancelled or the deadline passes, every traced task is
// killed and end.cut says why: such a run did not finish. err is a failure
// of the tracer itself.
//
// ptraceRun reaps cmd's process itself, so exec.Cmd must have nothing to
// wait for: its stdin, stdout and stderr must be files (otherwise exec
// copies them in goroutines that would still be writing while the caller
// reads the output) and it must not be an exec.CommandContext (whose
// watcher could signal a pid reused after ptraceRun reaped it). It waits
// for each traced task by its own id, never for "any child", so children
// that other goroutines of this process started are left to them; SIGCHLD
// wakes it when one of its tasks stops.
func ptraceRun(ctx context.Context, cmd *exec.Cmd, launcher string, deadline time.Time, ready chan<- struct{}, beforeRemove func()) (out traceOutcome, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := checkTraceable(cmd); err != nil {
		close(ready)
		return out, err
	}
	// launcher PATH ARGV0 ARGS...: the filter first, then the program.
	program := cmd.Path
	cmd.Args = append([]string{launcher, program}, cmd.Args...)
	cmd.Path = launcher
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Ptrace = true
	cmd.SysProcAttr.Setpgid = true
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, unix.SIGCHLD)
	defer signal.Stop(sigc)
	if err := cmd.Start(); err != nil {
		close(ready)
		return out, err
	}
	close(ready)
	// Drops exec's handle only: the process is reaped below.
	defer cmd.Process.Release()
	root := cmd.Process.Pid
	// The launcher stops with SIGTRAP at its exec.
	var ws unix.WaitStatus
	if _, err := unix.Wait4(root, &ws, unix.WALL, nil); err != nil {
		return out, fmt.Errorf("wait: %w", err)
	}
	if !ws.Stopped() {
		out.end = endOf(ws)
		return out, errors.New("ptrace: the traced process ended before its first exec")
	}
	opts := unix.PTRACE_O_TRACESYSGOOD | unix.PTRACE_O_TRACEFORK | unix.PTRACE_O_TRACEVFORK |
		unix.PTRACE_O_TRACECLONE | unix.PTRACE_O_TRACEEXEC | unix.PTRACE_O_EXITKILL | unix.PTRACE_O_TRACESECCOMP
	if err := unix.PtraceSetOptions(root, opts); err == nil {
		err = unix.PtraceCont(root, 0)
	}
	if err != nil {
		unix.Kill(root, unix.SIGKILL)
		unix.Wait4(root, &ws, unix.WALL, nil)
		return out, fmt.Errorf("ptrace: %w", err)
	}
	tr := &tracer{out: &out, root: root, program: program, beforeRemove: beforeRemove,
		live: map[int]*tracee{root: {attached: true}}, seen: map[string]bool{}}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for len(tr.live) > 0 {
		if out.end.cut == "" {
			select {
			case <-ctx.Done():
				out.end.cut = "cancelled (" + context.Cause(ctx).Error() + ")"
			default:
				if time.Now().After(deadline) {
					out.end.cut = "timed out"
				}
			}
			if out.end.cut != "" {
				tr.cutAt = time.Now()
				tr.killAll()
			}
		} else {
			// Tasks born while the kill went out are traced all the same.
			tr.adoptUnseen()
			if time.Since(tr.killedAt) > time.Second {
				if time.Since(tr.cutAt) > 30*time.Second {
					return out, fmt.Errorf("ptrace: %d traced task(s) did not die after SIGKILL", len(tr.live))
				}
				tr.killAll()
			}
		}
		// A SIGCHLD that arrives from here on wakes the wait below.
		select {
		case <-sigc:
		default:
		}
		progress := false
		for tid, t := range tr.live {
			got, err := unix.Wait4(tid, &ws, unix.WALL|unix.WNOHANG, nil)
			if err == unix.ECHILD {
				// Gone without a report: a thread whose id vanished when
				// another thread of its process called execve.
				delete(tr.live, tid)
				continue
			}
			if err == unix.EINTR || (err == nil && got <= 0) {
				continue
			}
			if err != nil {
				return out, fmt.Errorf("wait: %w", err)
			}
			progress = true
			if err := tr.report(tid, t, ws); err != nil {
				return out, err
			}
		}
		if progress {
			continue
		}
		var done <-chan struct{}
		wait := 20 * time.Millisecond
		if out.end.cut == "" {
			done = ctx.Done()
			wait = min(wait, max(time.Until(deadline), 0))
		}
		timer.Reset(wait)
		select {
		case <-sigc:
		case <-done:
		case <-timer.C:
		}
		timer.Stop()
	}
	if !tr.rootEnded {
		return out, errors.New("ptrace: lost track of the traced process before it exited")
	}
	return out, nil
}

// launcherFailure explains a traced process that ended before the
// launcher ran the program.
func launcherFailure(program string, end runEnd) error {
	switch {
	case end.exited && end.code == launcherRefused:
		return errors.New("ptrace: the kernel refused the seccomp filter (prctl PR_SET_SECCOMP): the detector needs a kernel with CONFIG_SECCOMP_FILTER and CAP_SYS_ADMIN")
	case end.exited && end.code == launcherExecFailed:
		return fmt.Errorf("ptrace: cannot execute %s", program)
	}
	return fmt.Errorf("ptrace: the seccomp launcher ended before it ran %s (%s)", program, end)
}

// checkTraceable refuses commands that exec.Cmd would still be serving
// after ptraceRun reaped their process (see ptraceRun).
func checkTraceable(cmd *exec.Cmd) error {
	if cmd.Cancel != nil {
		return errors.New("ptrace: the command must not be an exec.CommandContext; ptraceRun follows the context itself")
	}
	if cmd.Stdin != nil {
		if _, ok := cmd.Stdin.(*os.File); !ok {
			return errors.New("ptrace: the command's stdin must be a file")
		}
	}
	for _, w := range []io.Writer{cmd.Stdout, cmd.Stderr} {
		if w == nil {
			continue
		}
		if _, ok := w.(*os.File); !ok {
			return errors.New("ptrace: the command's stdout and stderr must be files")
		}
	}
	return nil
}

func fdPath(tid, fd int) string {
	if fd < 0 {
		return ""
	}
	p, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", tid, fd))
	if err != nil {
		return ""
	}
	return p
}

// fdWritable reads the open flags of a descriptor from /proc fdinfo.
func fdWritable(tid, fd int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", tid, fd))
	if err != nil {
		return true // cannot tell: count it
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			if err != nil {
				return true
			}
			return flags&(unix.O_WRONLY|unix.O_RDWR) != 0
		}
	}
	return true
}

func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

func isKmem(p string) bool { return filepath.Base(p) == KmemFile }
