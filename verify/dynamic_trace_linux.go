package verify

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// How the dynamic check runs a command under its detectors: the ptrace
// detector (ptrace_linux.go, through the seccomp launcher of
// seccomp_linux.go) and the fanotify detector (fanotify_linux.go).

// runEnd says how a command the verifier ran came to an end.
type runEnd struct {
	exited bool           // it exited by itself, with status code
	code   int            // when exited
	signal syscall.Signal // when a signal killed it
	cut    string         // set when the verifier ended it: "cancelled (…)", "timed out"
}

func endOf(ws unix.WaitStatus) runEnd {
	if ws.Exited() {
		return runEnd{exited: true, code: ws.ExitStatus()}
	}
	if ws.Signaled() {
		return runEnd{signal: ws.Signal()}
	}
	return runEnd{}
}

// finished: the process exited by itself and nothing cut the run short.
func (e runEnd) finished() bool { return e.exited && e.cut == "" }

func (e runEnd) String() string {
	var s string
	switch {
	case e.exited:
		s = "exit status " + strconv.Itoa(e.code)
	case e.signal != 0:
		s = "killed by signal " + strconv.Itoa(int(e.signal)) + " (" + e.signal.String() + ")"
	default:
		s = "did not exit"
	}
	if e.cut != "" {
		s = e.cut + ": " + s
	}
	return s
}

// record copies how the run ended into rr.
func (e runEnd) record(rr *RunResult) {
	rr.Finished, rr.ExitCode = e.finished(), -1
	if e.exited {
		rr.ExitCode = e.code
	}
	if e.signal != 0 {
		rr.Signal = e.signal.String()
	}
	if !e.finished() || e.code != 0 {
		rr.ExitError = e.String()
	}
}

func disabled(opt DynamicOptions, d string) bool {
	for _, x := range opt.Disable {
		if x == d {
			return true
		}
	}
	return false
}

func startFan(mount string, opt DynamicOptions) (*fanWatch, error) {
	if disabled(opt, "fanotify") {
		return nil, nil
	}
	return newFanWatch(mount)
}

// traceIfEnabled runs cmd under ptrace, or plainly when ptrace is disabled;
// either way a cancelled ctx or the deadline kills it, and a ctx cancelled
// already starts nothing. The seccomp launcher is written into dir (the
// run's own scratch directory). ready is closed once the command has
// started. beforeRemove: see ptraceRun.
func traceIfEnabled(ctx context.Context, cmd *exec.Cmd, opt DynamicOptions, dir string, deadline time.Time, ready chan<- struct{}, beforeRemove func()) (traceOutcome, error) {
	if ready == nil {
		ready = make(chan struct{})
	}
	// A run begun beside another phase (the self-test) starts no process
	// once the check is cancelled.
	if ctx.Err() != nil {
		close(ready)
		return traceOutcome{end: runEnd{cut: "cancelled (" + context.Cause(ctx).Error() + ")"}}, nil
	}
	if !disabled(opt, "ptrace") {
		launcher, err := writeLauncher(dir)
		if err != nil {
			close(ready)
			return traceOutcome{}, err
		}
		// ptraceRun locks its goroutine to its thread (ptrace requests must
		// come from the tracer thread): give it a goroutine of its own.
		type res struct {
			out traceOutcome
			err error
		}
		ch := make(chan res, 1)
		go func() {
			out, err := ptraceRun(ctx, cmd, launcher, deadline, ready, beforeRemove)
			ch <- res{out, err}
		}()
		r := <-ch
		return r.out, r.err
	}
	err := cmd.Start()
	close(ready)
	if err != nil {
		return traceOutcome{}, err
	}
	waitc := make(chan error, 1)
	go func() { waitc <- cmd.Wait() }()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	var cut string
	select {
	case err = <-waitc:
	case <-ctx.Done():
		cut = "cancelled (" + context.Cause(ctx).Error() + ")"
	case <-timer.C:
		cut = "timed out"
	}
	if cut != "" {
		cmd.Process.Kill()
		err = <-waitc
	}
	if cmd.ProcessState == nil {
		return traceOutcome{end: runEnd{cut: cut}}, err
	}
	end := endOf(unix.WaitStatus(cmd.ProcessState.Sys().(syscall.WaitStatus)))
	end.cut = cut
	return traceOutcome{end: end}, nil
}

// writeLauncher writes the seccomp launcher into dir and returns its
// absolute path (the command may run in another working directory).
func writeLauncher(dir string) (string, error) {
	elf, err := launcherELF()
	if err != nil {
		return "", err
	}
	p, err := filepath.Abs(filepath.Join(dir, "nokmem-seccomp-launcher"))
	if err != nil {
		return "", err
	}
	if err := writeFileNoFork(p, elf); err != nil {
		return "", fmt.Errorf("write the seccomp launcher: %w", err)
	}
	return p, nil
}
