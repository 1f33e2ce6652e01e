package verify

import (
	"fmt"
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
// is left or the deadline passes. On each syscall it resolves file
// descriptors through /proc/<tid>/fd, so it sees the kmem file however its
// path was given (absolute, relative, or relative to a directory fd).
// ready is closed once the command has started.
func ptraceRun(cmd *exec.Cmd, deadline time.Time, ready chan<- struct{}) (events []Event, exitErr error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Ptrace = true
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		close(ready)
		return nil, err
	}
	close(ready)
	root := cmd.Process.Pid
	// The child stops with SIGTRAP at its first exec.
	var ws unix.WaitStatus
	if _, err := unix.Wait4(root, &ws, unix.WALL, nil); err != nil {
		return nil, err
	}
	opts := unix.PTRACE_O_TRACESYSGOOD | unix.PTRACE_O_TRACEFORK | unix.PTRACE_O_TRACEVFORK |
		unix.PTRACE_O_TRACECLONE | unix.PTRACE_O_TRACEEXEC | unix.PTRACE_O_EXITKILL
	if err := unix.PtraceSetOptions(root, opts); err != nil {
		return nil, fmt.Errorf("ptrace: %w", err)
	}
	if err := unix.PtraceSyscall(root, 0); err != nil {
		return nil, fmt.Errorf("ptrace: %w", err)
	}
	live := map[int]bool{root: true}
	rootStatus := -1
	var seen sync.Map
	record := func(tid int, call, path string) {
		key := fmt.Sprintf("%d/%s/%s", tid, call, path)
		if _, dup := seen.LoadOrStore(key, true); dup {
			return
		}
		events = append(events, Event{Detector: "ptrace", Pid: tid, Comm: comm(tid), Syscall: call, Path: path})
	}
	for len(live) > 0 {
		if time.Now().After(deadline) {
			for tid := range live {
				unix.Kill(tid, unix.SIGKILL)
			}
			exitErr = fmt.Errorf("timed out; the traced processes were killed")
			deadline = time.Now().Add(10 * time.Second)
		}
		tid, err := unix.Wait4(-1, &ws, unix.WALL|unix.WNOHANG, nil)
		if err == unix.ECHILD {
			break
		}
		if err != nil && err != unix.EINTR {
			return events, fmt.Errorf("wait: %w", err)
		}
		if tid <= 0 {
			time.Sleep(200 * time.Microsecond)
			continue
		}
		switch {
		case ws.Exited() || ws.Signaled():
			delete(live, tid)
			if tid == root {
				if ws.Exited() {
					rootStatus = ws.ExitStatus()
				} else {
					rootStatus = 128 + int(ws.Signal())
				}
			}
			continue
		case !ws.Stopped():
			continue
		}
		live[tid] = true
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
			if ev := ws.TrapCause(); ev == unix.PTRACE_EVENT_FORK || ev == unix.PTRACE_EVENT_VFORK || ev == unix.PTRACE_EVENT_CLONE {
				if msg, err := unix.PtraceGetEventMsg(tid); err == nil {
					live[int(msg)] = true
				}
			}
			unix.PtraceSyscall(tid, 0)
		case sig == unix.SIGSTOP && isNewTask(tid, &seen):
			unix.PtraceSyscall(tid, 0)
		default:
			unix.PtraceSyscall(tid, int(sig))
		}
	}
	if rootStatus != 0 && exitErr == nil {
		exitErr = fmt.Errorf("exit status %d", rootStatus)
	}
	// Reap the exec.Cmd bookkeeping without waiting again on the pid.
	cmd.Process.Release()
	return events, exitErr
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
