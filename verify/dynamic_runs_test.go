package verify_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nokmem/nokmem/internal/owner"
	"github.com/nokmem/nokmem/internal/testenv"
	"github.com/nokmem/nokmem/verify"
)

// Every run the verdict relies on must have finished by itself and shown
// what it is there to show; a runc-shaped binary (fakeRunc) misbehaving in
// one way per case must give an error, never a pass.
func TestDynamicIncompleteRunIsNeverAPass(t *testing.T) {
	testenv.RequireDynamic(t)
	cases := []struct {
		mode    string
		timeout time.Duration
		status  string
		reason  string
	}{
		{"ok", 0, verify.DynPass, "no write"},
		{"late-limit", 0, verify.DynPass, "no write"},
		{"kernel-accepted", 0, verify.DynPass, "no write"},
		{"no-cgroup", 0, verify.DynError, "never created its memory cgroup"},
		{"no-limit", 10 * time.Second, verify.DynError, "never showed the bundle's limit"},
		{"killed", 0, verify.DynError, "did not finish"},
		{"hang", 3 * time.Second, verify.DynError, "did not finish"},
		{"kernel-killed", 0, verify.DynError, "did not finish"},
		{"kernel-failed", 0, verify.DynError, "other than refusing"},
		{"io_uring", 0, verify.DynError, "cannot see through (io_uring_setup"},
	}
	for _, c := range cases {
		t.Run(c.mode, func(t *testing.T) {
			bin := fakeRuncBinary(t, c.mode)
			tmp := t.TempDir()
			d := verify.DynamicRunc(context.Background(), bin, verify.DynamicOptions{TempDir: tmp, Timeout: c.timeout})
			if d.Status != c.status || !strings.Contains(d.Reason, c.reason) {
				t.Fatalf("status %s (%s), want %s (… %s …)\n%+v", d.Status, d.Reason, c.status, c.reason, d.Runs)
			}
			assertNoOwnLeftovers(t, tmp)
			switch c.mode {
			case "ok", "late-limit":
				// Read once runc applied it, not when the container joined
				// the cgroup (the unlimited default then).
				if len(d.Runs) != 2 || d.Runs[0].MemoryLimit != "67108864" || !d.Runs[0].Finished || d.Runs[0].ExitCode != 0 {
					t.Fatalf("memory-limit run: %+v", d.Runs)
				}
				if !strings.HasPrefix(d.Runs[1].Reaction, "refused") || !d.Runs[1].Finished {
					t.Errorf("kernel-memory-limit run: %+v", d.Runs[1])
				}
			case "kernel-accepted":
				if !strings.HasPrefix(d.Runs[1].Reaction, "accepted") || !d.Runs[1].CgroupCreated {
					t.Errorf("kernel-memory-limit run: %+v", d.Runs[1])
				}
			case "killed":
				if d.Runs[0].Signal != "killed" || d.Runs[0].ExitCode != -1 {
					t.Errorf("the SIGKILL is not recorded: %+v", d.Runs[0])
				}
			case "hang":
				if !strings.Contains(d.Runs[0].ExitError, "timed out") {
					t.Errorf("the timeout is not recorded: %+v", d.Runs[0])
				}
			case "kernel-killed":
				if len(d.Runs) != 2 || d.Runs[1].Finished || !strings.HasPrefix(d.Runs[1].Reaction, "none") {
					t.Errorf("kernel-memory-limit run: %+v", d.Runs)
				}
			}
		})
	}
}

func TestDynamicProbeMustFinishAndCreateItsCgroup(t *testing.T) {
	testenv.RequireDynamic(t)
	cases := []struct {
		mode   string
		status string
		reason string
	}{
		{"ok", verify.DynPass, "created a memory cgroup"},
		{"no-cgroup", verify.DynError, "did not create its memory cgroup"},
		{"killed", verify.DynError, "did not finish"},
	}
	for _, c := range cases {
		t.Run(c.mode, func(t *testing.T) {
			probe := fakeRuncBinary(t, c.mode)
			tmp := t.TempDir()
			d := verify.DynamicProbe(context.Background(), probe, verify.DynamicOptions{TempDir: tmp})
			if d.Status != c.status || !strings.Contains(d.Reason, c.reason) {
				t.Fatalf("status %s (%s), want %s (… %s …)\n%+v", d.Status, d.Reason, c.status, c.reason, d.Runs)
			}
			assertNoOwnLeftovers(t, tmp)
		})
	}
}

// Every dynamic check first removes what dead checks left: here a cgroup
// and a bundle directory named after a process that has exited.
func TestDynamicCheckReapsWhatDeadChecksLeftFirst(t *testing.T) {
	testenv.RequireDynamic(t)
	mount, err := verify.MemoryMount()
	if err != nil {
		t.Fatal(err)
	}
	deadPid := 0
	for i := 0; i < 10 && deadPid == 0; i++ {
		c := exec.Command("/bin/true")
		if err := c.Run(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", c.Process.Pid)); os.IsNotExist(err) {
			deadPid = c.Process.Pid
		}
	}
	if deadPid == 0 {
		t.Fatal("no dead pid found")
	}
	id := owner.Self()
	id.PID = deadPid
	dead := id.String()
	cg := filepath.Join(mount, "nokmem-verify-"+dead+"-test0reap")
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	defer syscall.Rmdir(cg)
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "nokmem-bundle-"+dead+"-42")
	if err := os.MkdirAll(filepath.Join(dir, "bundle", "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	d := verify.DynamicProbe(context.Background(), fakeRuncBinary(t, "ok"), verify.DynamicOptions{TempDir: tmp})
	if d.Status != verify.DynPass {
		t.Fatalf("status %s: %s", d.Status, d.Reason)
	}
	for _, p := range []string{cg, dir} {
		if !contains(d.Reaped, p) {
			t.Errorf("%s not reported as reaped: %q", p, d.Reaped)
		}
		if _, err := os.Stat(p); err == nil {
			t.Errorf("left in place: %s", p)
		}
	}
}
