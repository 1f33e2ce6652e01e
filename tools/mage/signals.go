package main

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/magefile/mage/mage"
	"golang.org/x/sys/unix"
)

// runCompiled is mage.RunCompiled with termination handled, because a
// build that was told to stop must never look like a success:
//
//   - Mage's wrapper catches only SIGINT (which the compiled magefile gets
//     from the terminal's process group by itself); a SIGTERM killed the
//     wrapper, the magefile ran on as an orphan and could still publish,
//     and `go tool` reports a tool killed by a signal as exit status 0
//     (golang/go#79540). Here SIGTERM and SIGHUP are passed on to the
//     magefile (whose init turns the first one into Mage's own SIGINT
//     cancellation, magefiles/signals.go) and the wrapper waits for it.
//   - The wrapper asks to be told when `go tool` dies (PR_SET_PDEATHSIG),
//     and the magefile when the wrapper dies, so a killed parent cancels
//     the build instead of orphaning it.
//   - A magefile killed by a signal exits 128+signal, never 0.
func runCompiled(inv mage.Invocation, exe string, stderr io.Writer) int {
	errlog := log.New(stderr, "", 0)
	parent := os.Getppid()
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0, 0, 0); err == nil && os.Getppid() != parent {
		// The parent died before the request took effect.
		return 128 + int(syscall.SIGTERM)
	}
	c := exec.Command(exe, inv.Args...)
	c.Stdin, c.Stdout, c.Stderr = inv.Stdin, inv.Stdout, inv.Stderr
	c.Dir = inv.Dir
	if inv.WorkDir != inv.Dir {
		c.Dir = inv.WorkDir
	}
	c.Env = append(os.Environ(), mageEnv(inv)...)
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}

	// SIGINT reaches the magefile from the process group; passing it on as
	// well would be Mage's "second SIGINT", which exits without cleanup. It
	// is caught and dropped, not ignored: an ignored signal would stay
	// ignored in the magefile and everything it starts.
	intr := make(chan os.Signal, 1)
	signal.Notify(intr, syscall.SIGINT)
	defer signal.Stop(intr)
	term := make(chan os.Signal, 2)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(term)
	if err := c.Start(); err != nil {
		errlog.Printf("failed to run compiled magefile: %v", err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	for {
		select {
		case <-intr:
		case s := <-term:
			c.Process.Signal(s)
		case err := <-done:
			return exitStatus(err)
		}
	}
}

// exitStatus is the magefile's exit status, 128+signal if a signal ended it.
func exitStatus(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return 1
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	if code := ee.ExitCode(); code > 0 {
		return code
	}
	return 1
}

// mageEnv is what mage.RunCompiled tells the compiled magefile.
func mageEnv(inv mage.Invocation) []string {
	var env []string
	add := func(on bool, kv string) {
		if on {
			env = append(env, kv)
		}
	}
	add(inv.Verbose, "MAGEFILE_VERBOSE=1")
	add(inv.List, "MAGEFILE_LIST=1")
	add(inv.Help, "MAGEFILE_HELP=1")
	add(inv.Debug, "MAGEFILE_DEBUG=1")
	add(inv.GoCmd != "", "MAGEFILE_GOCMD="+inv.GoCmd)
	add(inv.Timeout > 0, fmt.Sprintf("MAGEFILE_TIMEOUT=%s", inv.Timeout))
	return env
}
