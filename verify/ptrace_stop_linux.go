package verify

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// What the ptrace detector does at each stop of a traced task (ptraceRun
// waits for the stops and hands them here).

// tracer is ptraceRun's state: the traced tasks and what they did.
type tracer struct {
	out          *traceOutcome
	root         int
	program      string
	beforeRemove func()
	live         map[int]*tracee
	launched     bool // the launcher has installed the filter and run the program
	rootEnded    bool
	seen         map[string]bool // events and untraced syscalls already recorded
	cutAt        time.Time
	killedAt     time.Time
}

// report handles what wait reported of traced task tid: an exit, or a stop
// after which it resumes the task. err ends the trace.
func (tr *tracer) report(tid int, t *tracee, ws unix.WaitStatus) error {
	switch {
	case ws.Exited() || ws.Signaled():
		delete(tr.live, tid)
		if tid == tr.root {
			c := tr.out.end.cut
			tr.out.end, tr.rootEnded = endOf(ws), true
			tr.out.end.cut = c
			if !tr.launched && c == "" {
				return launcherFailure(tr.program, tr.out.end)
			}
		}
		return nil
	case !ws.Stopped():
		return nil
	}
	tr.out.stops++
	sig := ws.StopSignal()
	switch {
	case sig == unix.SIGTRAP|0x80: // syscall stop, after an open's seccomp stop
		if t.open == nil {
			break
		}
		t.stops++
		var regs unix.PtraceRegs
		if err := unix.PtraceGetRegs(tid, &regs); err != nil || regs.Orig_rax != uint64(t.open.nr) {
			// Gone, or the entry of the next syscall: the open ended with
			// ENOSYS (below), and opened nothing.
			t.open = nil
			break
		}
		// Since Linux 4.8 the stop after the seccomp stop is the open's
		// exit; before, it was its entry, and the exit came next. An entry
		// shows -ENOSYS in rax; so does the exit of an open the kernel does
		// not have (openat2 before 5.6), which opened nothing.
		if int64(regs.Rax) == -int64(unix.ENOSYS) && t.stops == 1 {
			unix.PtraceSyscall(tid, 0)
			return nil
		}
		if fd := int(regs.Rax); int64(regs.Rax) >= 0 {
			if p := fdPath(tid, fd); isKmem(p) && fdWritable(tid, fd) {
				tr.record(tid, t.open.name+"(write)", p)
			}
		}
		t.open = nil
	case sig == unix.SIGTRAP && ws.TrapCause() == unix.PTRACE_EVENT_SECCOMP:
		c, regs, ok := tr.seccompStop(tid)
		switch {
		case !ok:
		case c.kind == callOpen:
			// Its descriptor is known at the exit.
			t.open, t.stops = &c, 0
			unix.PtraceSyscall(tid, 0)
			return nil
		case c.kind == callWrite:
			fd := []uint64{regs.Rdi, regs.Rsi, regs.Rdx}[c.fdArg]
			if p := fdPath(tid, int(int32(fd))); isKmem(p) {
				tr.record(tid, c.name, p)
			}
		case c.kind == callRemove && tr.beforeRemove != nil:
			// rmdir, or unlinkat(dirfd, path, AT_REMOVEDIR)
			if c.nr == unix.SYS_RMDIR || regs.Rdx&unix.AT_REMOVEDIR != 0 {
				tr.beforeRemove()
			}
		}
	case sig == unix.SIGTRAP: // fork, clone, exec events
		switch ws.TrapCause() {
		case unix.PTRACE_EVENT_FORK, unix.PTRACE_EVENT_VFORK, unix.PTRACE_EVENT_CLONE:
			if msg, err := unix.PtraceGetEventMsg(tid); err == nil {
				tr.live[int(msg)] = &tracee{}
				if tr.out.end.cut != "" {
					unix.Kill(int(msg), unix.SIGKILL)
				}
			}
		case unix.PTRACE_EVENT_EXEC:
			// A thread other than the leader called execve and took over
			// the leader's id; its former id is gone.
			if msg, err := unix.PtraceGetEventMsg(tid); err == nil && int(msg) != tid {
				delete(tr.live, int(msg))
			}
			if tid == tr.root && !tr.launched {
				// The launcher ran the program; its filter must be in place.
				tr.launched = true
				if !seccompFilterActive(tr.root) {
					tr.killAll()
					var ws unix.WaitStatus
					unix.Wait4(tr.root, &ws, unix.WALL, nil)
					return errors.New("ptrace: the seccomp launcher ran the program without its filter in place")
				}
			}
		}
	case sig == unix.SIGSTOP && !t.attached:
		t.attached = true
	default:
		unix.PtraceCont(tid, int(sig))
		return nil
	}
	unix.PtraceCont(tid, 0)
	return nil
}

func (tr *tracer) record(tid int, call, path string) {
	key := fmt.Sprintf("%d/%s/%s", tid, call, path)
	if tr.seen[key] {
		return
	}
	tr.seen[key] = true
	tr.out.events = append(tr.out.events, Event{Detector: "ptrace", Pid: tid, Comm: comm(tid), Syscall: call, Path: path})
}

func (tr *tracer) untraced(tid int, what string) {
	key := "untraced/" + what
	if tr.seen[key] || len(tr.out.untraced) >= 20 {
		return
	}
	tr.seen[key] = true
	tr.out.untraced = append(tr.out.untraced, fmt.Sprintf("%s (pid %d, %s)", what, tid, comm(tid)))
}

func (tr *tracer) killAll() {
	for tid := range tr.live {
		unix.Kill(tid, unix.SIGKILL)
	}
	// Also the process group (Setpgid), for a child whose fork event was
	// not seen yet; only while the root is not reaped, so that its pid
	// cannot have been reused as another group's id.
	if !tr.rootEnded {
		unix.Kill(-tr.root, unix.SIGKILL)
	}
	tr.killedAt = time.Now()
}

// adoptUnseen adds the threads and children of the traced tasks that the
// tracer never heard of: a task killed in the stop of its clone or fork
// event no longer answers PTRACE_GETEVENTMSG, but the new task it made is
// traced all the same (auto-attached) and must be reaped here; an unreaped
// thread keeps its leader from ever being reported dead.
func (tr *tracer) adoptUnseen() {
	for tid := range tr.live {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", tid))
		for _, task := range tasks {
			tr.adopt(task.Name())
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", tid, task.Name()))
			for _, child := range strings.Fields(string(b)) {
				tr.adopt(child)
			}
		}
	}
}

func (tr *tracer) adopt(id string) {
	if tid, err := strconv.Atoi(id); err == nil && tr.live[tid] == nil {
		tr.live[tid] = &tracee{}
		unix.Kill(tid, unix.SIGKILL) // only called once the run is cut short
	}
}

// seccompStop reads what the filter reported for tid's syscall. ok is
// false when the tracer has nothing to check for it: a syscall it cannot
// see through, which it records as untraced.
func (tr *tracer) seccompStop(tid int) (c tracedCall, regs unix.PtraceRegs, ok bool) {
	data, err := unix.PtraceGetEventMsg(tid)
	if err == nil {
		err = unix.PtraceGetRegs(tid, &regs)
	}
	if err != nil {
		// The task is gone (killed); it did not run the syscall.
		return c, regs, false
	}
	nr := regs.Orig_rax
	switch data {
	case seccompNative:
		if c, ok := lookupCall(nr); ok {
			if c.kind == callOpaque {
				tr.untraced(tid, c.name)
				return c, regs, false
			}
			return c, regs, true
		}
		tr.untraced(tid, fmt.Sprintf("x86-64 syscall %d the filter should not have stopped", nr))
	case seccompCompat:
		tr.untraced(tid, fmt.Sprintf("32-bit syscall %d (int 0x80)", uint32(nr)))
	case seccompX32:
		tr.untraced(tid, fmt.Sprintf("x32 syscall %d", uint32(nr)&^x32SyscallBit))
	default:
		tr.untraced(tid, fmt.Sprintf("syscall %d stopped by another seccomp filter (data %#x)", nr, data))
	}
	return c, regs, false
}
