package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// signalModule is a module whose magefile carries this project's
// magefiles/signals.go and a target that runs until it is cancelled, then
// records that its cleanup ran.
func signalModule(t *testing.T) (root, marker string) {
	t.Helper()
	root = t.TempDir()
	bridge, err := os.ReadFile(filepath.Join("..", "..", "magefiles", "signals.go"))
	if err != nil {
		t.Fatal(err)
	}
	marker = filepath.Join(root, "cleaned")
	writeFile(t, filepath.Join(root, "go.mod"), "module example.com/sig\n\ngo 1.22\n")
	writeFile(t, filepath.Join(root, "magefiles", "signals.go"), string(bridge))
	writeFile(t, filepath.Join(root, "magefiles", "magefile.go"), `//go:build mage

package main

import (
	"context"
	"fmt"
	"os"
)

// Wait runs until it is cancelled, then cleans up.
func Wait(ctx context.Context) error {
	fmt.Println("running")
	<-ctx.Done()
	os.WriteFile(`+"`"+marker+"`"+`, []byte("cleaned up"), 0o644)
	return ctx.Err()
}
`)
	return root, marker
}

// startWait runs `mage wait` in its own process group and returns once the
// target is running.
func startWait(t *testing.T, bin, root string) (*exec.Cmd, *output) {
	t.Helper()
	// Compile first, so that the signal lands on a running target.
	if r := runIn(t, bin, root, nil, "-l"); r.err != nil {
		t.Fatalf("mage -l: %v\n%s", r.err, r.stderr)
	}
	// A file, not a pipe: an orphaned magefile must not keep Wait waiting.
	out := &output{path: filepath.Join(root, "out.log")}
	f, err := os.Create(out.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(bin, "wait")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The magefile stays in the group even if a regression orphans it.
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(out.String(), "running") {
		if time.Now().After(deadline) {
			t.Fatalf("the target never started:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return cmd, out
}

type output struct{ path string }

func (o *output) String() string { b, _ := os.ReadFile(o.path); return string(b) }

// A terminated build is a failed build, and its cleanup runs: whether the
// signal reaches only the wrapper, or the whole process group.
func TestTerminationCancelsTheTargetAndFails(t *testing.T) {
	bin := wrapper(t)
	for _, tc := range []struct {
		name string
		send func(pid int)
	}{
		{"SIGTERM to the wrapper", func(pid int) { syscall.Kill(pid, syscall.SIGTERM) }},
		{"SIGTERM to the process group", func(pid int) { syscall.Kill(-pid, syscall.SIGTERM) }},
		{"SIGHUP to the wrapper", func(pid int) { syscall.Kill(pid, syscall.SIGHUP) }},
		{"SIGINT to the process group", func(pid int) { syscall.Kill(-pid, syscall.SIGINT) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, marker := signalModule(t)
			cmd, out := startWait(t, bin, root)
			tc.send(cmd.Process.Pid)
			err := cmd.Wait()
			if err == nil {
				t.Fatalf("exit status 0 after %s:\n%s", tc.name, out.String())
			}
			if b, _ := os.ReadFile(marker); string(b) != "cleaned up" {
				t.Fatalf("the target's cleanup did not run (%v):\n%s", err, out.String())
			}
		})
	}
}

// A killed wrapper does not leave the magefile running as an orphan.
func TestKilledWrapperCancelsTheTarget(t *testing.T) {
	root, marker := signalModule(t)
	cmd, out := startWait(t, wrapper(t), root)
	syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, _ := os.ReadFile(marker); string(b) == "cleaned up" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the magefile ran on after its wrapper was killed:\n%s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
