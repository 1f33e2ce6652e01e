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
	// read the descriptor it returned; entries counts the syscall-entry
	// stops that come first (one before Linux 4.8, none since).
	open    *tracedCall
	entries int
}

// seccompStopFirst: before Linux 4.8 the seccomp stop came before the
// syscall-entry stop, so a tracer that resumes a seccomp stop with
// PTRACE_SYSCALL sees the entry, then the exit; since 4.8 only the exit.
var seccompStopFirst = !kernelAtLeast(kernelRelease(), 4, 8)

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
	live := map[int]*tracee{root: {attached: true}}
	launched := false // the launcher has installed the filter and run the program
	rootEnded := false
	seen := map[string]bool{}
	record := func(tid int, call, path string) {
		key := fmt.Sprintf("%d/%s/%s", tid, call, path)
		if seen[key] {
			return
		}
		seen[key] = true
		out.events = append(out.events, Event{Detector: "ptrace", Pid: tid, Comm: comm(tid), Syscall: call, Path: path})
	}
	untraced := func(tid int, what string) {
		key := "untraced/" + what
		if seen[key] || len(out.untraced) >= 20 {
			return
		}
		seen[key] = true
		out.untraced = append(out.untraced, fmt.Sprintf("%s (pid %d, %s)", what, tid, comm(tid)))
	}
	var cutAt, killedAt time.Time
	killAll := func() {
		for tid := range live {
			unix.Kill(tid, unix.SIGKILL)
		}
		// Also the process group (Setpgid above), for a child whose fork
		// event was not seen yet; only while the root is not reaped, so
		// that its pid cannot have been reused as another group's id.
		if !rootEnded {
			unix.Kill(-root, unix.SIGKILL)
		}
		killedAt = time.Now()
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for len(live) > 0 {
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
				cutAt = time.Now()
				killAll()
			}
		} else if time.Since(killedAt) > time.Second {
			if time.Since(cutAt) > 30*time.Second {
				return out, fmt.Errorf("ptrace: %d traced task(s) did not die after SIGKILL", len(live))
			}
			killAll()
		}
		// A SIGCHLD that arrives from here on wakes the wait below.
		select {
		case <-sigc:
		default:
		}
		progress := false
		for tid, t := range live {
			got, err := unix.Wait4(tid, &ws, unix.WALL|unix.WNOHANG, nil)
			if err == unix.ECHILD {
				// Gone without a report: a thread whose id vanished when
				// another thread of its process called execve.
				delete(live, tid)
				continue
			}
			if err == unix.EINTR || (err == nil && got <= 0) {
				continue
			}
			if err != nil {
				return out, fmt.Errorf("wait: %w", err)
			}
			progress = true
			switch {
			case ws.Exited() || ws.Signaled():
				delete(live, tid)
				if tid == root {
					c := out.end.cut
					out.end, rootEnded = endOf(ws), true
					out.end.cut = c
					if !launched && c == "" {
						return out, launcherFailure(program, out.end)
					}
				}
				continue
			case !ws.Stopped():
				continue
			}
			out.stops++
			sig := ws.StopSignal()
			switch {
			case sig == unix.SIGTRAP|0x80: // syscall stop: the exit of an open
				if t.open != nil && t.entries > 0 {
					t.entries--
					unix.PtraceSyscall(tid, 0)
					continue
				}
				if t.open != nil {
					var regs unix.PtraceRegs
					if err := unix.PtraceGetRegs(tid, &regs); err == nil && regs.Orig_rax == uint64(t.open.nr) && int64(regs.Rax) >= 0 {
						fd := int(regs.Rax)
						if p := fdPath(tid, fd); isKmem(p) && fdWritable(tid, fd) {
							record(tid, t.open.name+"(write)", p)
						}
					}
					t.open = nil
				}
				unix.PtraceCont(tid, 0)
			case sig == unix.SIGTRAP && ws.TrapCause() == unix.PTRACE_EVENT_SECCOMP:
				if c, ok := seccompStop(tid, untraced); ok && c.kind == callOpen {
					t.open, t.entries = &c, 0
					if seccompStopFirst {
						t.entries = 1
					}
					unix.PtraceSyscall(tid, 0)
					continue
				} else if ok && c.kind == callWrite {
					var regs unix.PtraceRegs
					if err := unix.PtraceGetRegs(tid, &regs); err == nil {
						fd := []uint64{regs.Rdi, regs.Rsi, regs.Rdx}[c.fdArg]
						if p := fdPath(tid, int(int32(fd))); isKmem(p) {
							record(tid, c.name, p)
						}
					}
				} else if ok && c.kind == callRemove && beforeRemove != nil {
					var regs unix.PtraceRegs
					// rmdir, or unlinkat(dirfd, path, AT_REMOVEDIR)
					if err := unix.PtraceGetRegs(tid, &regs); err == nil && (c.nr == unix.SYS_RMDIR || regs.Rdx&unix.AT_REMOVEDIR != 0) {
						beforeRemove()
					}
				}
				unix.PtraceCont(tid, 0)
			case sig == unix.SIGTRAP: // fork, clone, exec events
				switch ws.TrapCause() {
				case unix.PTRACE_EVENT_FORK, unix.PTRACE_EVENT_VFORK, unix.PTRACE_EVENT_CLONE:
					if msg, err := unix.PtraceGetEventMsg(tid); err == nil {
						live[int(msg)] = &tracee{}
						if out.end.cut != "" {
							unix.Kill(int(msg), unix.SIGKILL)
						}
					}
				case unix.PTRACE_EVENT_EXEC:
					// A thread other than the leader called execve and took over
					// the leader's id; its former id is gone.
					if msg, err := unix.PtraceGetEventMsg(tid); err == nil && int(msg) != tid {
						delete(live, int(msg))
					}
					if tid == root && !launched {
						// The launcher ran the program; its filter must be in place.
						launched = true
						if !seccompFilterActive(root) {
							killAll()
							return out, errors.New("ptrace: the seccomp launcher ran the program without its filter in place")
						}
					}
				}
				unix.PtraceCont(tid, 0)
			case sig == unix.SIGSTOP && !t.attached:
				t.attached = true
				unix.PtraceCont(tid, 0)
			default:
				unix.PtraceCont(tid, int(sig))
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
	if !rootEnded {
		return out, errors.New("ptrace: lost track of the traced process before it exited")
	}
	return out, nil
}

// seccompStop reads what the filter reported for tid's syscall. ok is
// false when the tracer has nothing to check for it: a syscall it cannot
// see through, which untraced records.
func seccompStop(tid int, untraced func(tid int, what string)) (c tracedCall, ok bool) {
	data, err := unix.PtraceGetEventMsg(tid)
	var regs unix.PtraceRegs
	if err == nil {
		err = unix.PtraceGetRegs(tid, &regs)
	}
	if err != nil {
		// The task is gone (killed); it did not run the syscall.
		return c, false
	}
	nr := regs.Orig_rax
	switch data {
	case seccompNative:
		if c, ok := lookupCall(nr); ok {
			if c.kind == callOpaque {
				untraced(tid, c.name)
				return c, false
			}
			return c, true
		}
		untraced(tid, fmt.Sprintf("x86-64 syscall %d the filter should not have stopped", nr))
	case seccompCompat:
		untraced(tid, fmt.Sprintf("32-bit syscall %d (int 0x80)", uint32(nr)))
	case seccompX32:
		untraced(tid, fmt.Sprintf("x32 syscall %d", uint32(nr)&^x32SyscallBit))
	default:
		untraced(tid, fmt.Sprintf("syscall %d stopped by another seccomp filter (data %#x)", nr, data))
	}
	return c, false
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
