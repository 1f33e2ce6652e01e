package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
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

// x86-64 syscall numbers the tracer inspects.
var (
	openCalls = map[uint64]string{2: "open", 85: "creat", 257: "openat", 437: "openat2"}
	// The argument holding the fd that is written to.
	writeCalls = map[uint64]struct {
		name string
		arg  int
	}{
		1: {"write", 0}, 18: {"pwrite64", 0}, 20: {"writev", 0}, 296: {"pwritev", 0}, 328: {"pwritev2", 0},
		40: {"sendfile", 0}, 275: {"splice", 2}, 326: {"copy_file_range", 2}, 278: {"vmsplice", 0},
	}
)

const enosys = -int64(syscall.ENOSYS)

// ptraceRun starts cmd under ptrace and follows it and every process and
// thread it creates, until cmd's own process has exited and no traced task
// is left. On each syscall it resolves file descriptors through
// /proc/<tid>/fd, so it sees the kmem file however its path was given
// (absolute, relative, or relative to a directory fd). ready is closed once
// the command has started (or failed to).
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
// that other goroutines of this process started are left to them.
func ptraceRun(ctx context.Context, cmd *exec.Cmd, deadline time.Time, ready chan<- struct{}) (events []Event, end runEnd, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := checkTraceable(cmd); err != nil {
		close(ready)
		return nil, end, err
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Ptrace = true
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		close(ready)
		return nil, end, err
	}
	close(ready)
	// Drops exec's handle only: the process is reaped below.
	defer cmd.Process.Release()
	root := cmd.Process.Pid
	// The child stops with SIGTRAP at its first exec.
	var ws unix.WaitStatus
	if _, err := unix.Wait4(root, &ws, unix.WALL, nil); err != nil {
		return nil, end, fmt.Errorf("wait: %w", err)
	}
	if !ws.Stopped() {
		return nil, endOf(ws), errors.New("ptrace: the traced process ended before its first exec")
	}
	opts := unix.PTRACE_O_TRACESYSGOOD | unix.PTRACE_O_TRACEFORK | unix.PTRACE_O_TRACEVFORK |
		unix.PTRACE_O_TRACECLONE | unix.PTRACE_O_TRACEEXEC | unix.PTRACE_O_EXITKILL
	if err := unix.PtraceSetOptions(root, opts); err == nil {
		err = unix.PtraceSyscall(root, 0)
	}
	if err != nil {
		unix.Kill(root, unix.SIGKILL)
		unix.Wait4(root, &ws, unix.WALL, nil)
		return nil, end, fmt.Errorf("ptrace: %w", err)
	}
	live := map[int]bool{root: true}
	rootEnded := false
	var seen sync.Map
	record := func(tid int, call, path string) {
		key := fmt.Sprintf("%d/%s/%s", tid, call, path)
		if _, dup := seen.LoadOrStore(key, true); dup {
			return
		}
		events = append(events, Event{Detector: "ptrace", Pid: tid, Comm: comm(tid), Syscall: call, Path: path})
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
	for len(live) > 0 {
		if end.cut == "" {
			select {
			case <-ctx.Done():
				end.cut = "cancelled (" + context.Cause(ctx).Error() + ")"
			default:
				if time.Now().After(deadline) {
					end.cut = "timed out"
				}
			}
			if end.cut != "" {
				cutAt = time.Now()
				killAll()
			}
		} else if time.Since(killedAt) > time.Second {
			if time.Since(cutAt) > 30*time.Second {
				return events, end, fmt.Errorf("ptrace: %d traced task(s) did not die after SIGKILL", len(live))
			}
			killAll()
		}
		progress := false
		for tid := range live {
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
				return events, end, fmt.Errorf("wait: %w", err)
			}
			progress = true
			switch {
			case ws.Exited() || ws.Signaled():
				delete(live, tid)
				if tid == root {
					c := end.cut
					end, rootEnded = endOf(ws), true
					end.cut = c
				}
				continue
			case !ws.Stopped():
				continue
			}
			sig := ws.StopSignal()
			switch {
			case sig == unix.SIGTRAP|0x80: // syscall stop
				var regs unix.PtraceRegs
				if err := unix.PtraceGetRegs(tid, &regs); err == nil {
					entry := int64(regs.Rax) == enosys
					nr := regs.Orig_rax
					if w, ok := writeCalls[nr]; ok && entry {
						fd := []uint64{regs.Rdi, regs.Rsi, regs.Rdx}[w.arg]
						if p := fdPath(tid, int(int32(fd))); isKmem(p) {
							record(tid, w.name, p)
						}
					}
					if name, ok := openCalls[nr]; ok && !entry && int64(regs.Rax) >= 0 {
						fd := int(regs.Rax)
						if p := fdPath(tid, fd); isKmem(p) && fdWritable(tid, fd) {
							record(tid, name+"(write)", p)
						}
					}
				}
				unix.PtraceSyscall(tid, 0)
			case sig == unix.SIGTRAP: // fork, clone, exec events or exec SIGTRAP
				switch ws.TrapCause() {
				case unix.PTRACE_EVENT_FORK, unix.PTRACE_EVENT_VFORK, unix.PTRACE_EVENT_CLONE:
					if msg, err := unix.PtraceGetEventMsg(tid); err == nil {
						live[int(msg)] = true
						if end.cut != "" {
							unix.Kill(int(msg), unix.SIGKILL)
						}
					}
				case unix.PTRACE_EVENT_EXEC:
					// A thread other than the leader called execve and took over
					// the leader's id; its former id is gone.
					if msg, err := unix.PtraceGetEventMsg(tid); err == nil && int(msg) != tid {
						delete(live, int(msg))
					}
				}
				unix.PtraceSyscall(tid, 0)
			case sig == unix.SIGSTOP && isNewTask(tid, &seen):
				unix.PtraceSyscall(tid, 0)
			default:
				unix.PtraceSyscall(tid, int(sig))
			}
		}
		if !progress {
			time.Sleep(200 * time.Microsecond)
		}
	}
	if !rootEnded {
		return events, end, errors.New("ptrace: lost track of the traced process before it exited")
	}
	return events, end, nil
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

// isNewTask reports the first SIGSTOP of a task, which ptrace delivers to
// every auto-attached new process or thread and which must be suppressed.
func isNewTask(tid int, seen *sync.Map) bool {
	_, dup := seen.LoadOrStore("stop/"+strconv.Itoa(tid), true)
	return !dup
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
