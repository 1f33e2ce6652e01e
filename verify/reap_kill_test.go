package verify_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nokmem/nokmem/internal/owner"
	"github.com/nokmem/nokmem/internal/testenv"
	"github.com/nokmem/nokmem/verify"
)

// A verifier killed with SIGKILL in the middle of a run cannot clean up;
// the next check (here ReapLeftovers, which every check calls first)
// removes what it left: the container's cgroup and the bundle directory.
func TestLeftoversOfAKilledCheckAreReaped(t *testing.T) {
	testenv.RequireDynamic(t)
	mount, err := verify.MemoryMount()
	if err != nil {
		t.Fatal(err)
	}
	verifier := filepath.Join(t.TempDir(), "nokmem-verify")
	build := exec.Command("go", "build", "-o", verifier, "./cmd/nokmem-verify")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build nokmem-verify: %v\n%s", err, out)
	}
	runc := fakeRuncBinary(t, "hang") // a run that lasts until someone kills it
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // the verifier's bundles, and what ReapLeftovers scans
	cmd := exec.Command(verifier, "-dynamic", "require", "runc", runc)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The child's identity but for its pid and start time.
	me := owner.Self()
	prefix := fmt.Sprintf("nokmem-verify-%s-%s-%d-%d-", me.Host, me.Boot, me.NS, cmd.Process.Pid)
	pattern := filepath.Join(mount, prefix+"*")
	var cgroups []string
	for deadline := time.Now().Add(30 * time.Second); len(cgroups) == 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		cgroups, _ = filepath.Glob(pattern)
	}
	if len(cgroups) == 0 {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the verifier never created a cgroup %s", pattern)
	}
	t.Cleanup(func() {
		for _, cg := range cgroups {
			syscall.Rmdir(cg)
		}
	})
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait() // a zombie still holds its pid: the owner is gone once reaped
	bundles, _ := filepath.Glob(filepath.Join(tmp, "nokmem-bundle-*"))
	if len(bundles) == 0 {
		t.Fatal("the killed verifier left no bundle directory; the test proves nothing")
	}
	for _, p := range cgroups {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("the killed verifier's cgroup is already gone (%v); the test proves nothing", err)
		}
	}
	if left := verify.Leftovers(); !containsAll(left, append(cgroups, bundles...)) {
		t.Errorf("Leftovers() = %q, want it to list %q and %q", left, cgroups, bundles)
	}
	reaped, err := verify.ReapLeftovers()
	if err != nil {
		t.Errorf("reap: %v", err)
	}
	for _, p := range append(cgroups, bundles...) {
		if !contains(reaped, p) {
			t.Errorf("not reaped: %s (reaped %q)", p, reaped)
		}
		if _, err := os.Stat(p); err == nil {
			t.Errorf("still there: %s", p)
		}
	}
}

func containsAll(list, want []string) bool {
	for _, w := range want {
		if !contains(list, w) {
			return false
		}
	}
	return true
}
