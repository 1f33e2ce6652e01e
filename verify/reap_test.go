package verify

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nokmem/nokmem/internal/owner"
)

// deadPid returns the pid of a process that has exited and been reaped.
func deadPid(t *testing.T) int {
	t.Helper()
	for i := 0; i < 10; i++ {
		cmd := exec.Command("/bin/true")
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		pid := cmd.Process.Pid
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); os.IsNotExist(err) {
			return pid
		}
	}
	t.Fatal("no dead pid found")
	return 0
}

// mkCgroup creates a cgroup of the test's own under mount and removes it
// (and anything the test left in it) when the test ends.
func mkCgroup(t *testing.T, mount, name string) string {
	t.Helper()
	p := filepath.Join(mount, name)
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if exists(p) {
			killCgroupProcs(p)
			removeCgroup(p)
		}
	})
	return p
}

// Leftovers whose owner is gone are reaped, with any process still in them;
// those of a live owner are kept, and a pid alone does not make an owner
// alive: its start time must match too.
func TestReapLeftoversRemovesOnlyWhatDeadOwnersLeft(t *testing.T) {
	if p := HostProblem(); p != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but this host cannot run the dynamic check: %s", p)
		}
		t.Skipf("needs root and a cgroup v1 memory hierarchy: %s", p)
	}
	mount, err := MemoryMount()
	if err != nil {
		t.Fatal(err)
	}
	me := owner.Self()
	dead := me
	dead.PID = deadPid(t)
	reused := me
	reused.Start++ // our pid, another process's start
	goneNS := me
	goneNS.NS = 1 // a pid namespace no process is in, on this boot (the verifier container's, once it ended)

	deadCg := mkCgroup(t, mount, "nokmem-verify-"+dead.String()+"-test0dead")
	deadCpu := ""
	if m := filepath.Join(filepath.Dir(mount), "cpu"); exists(filepath.Join(m, "cgroup.procs")) {
		deadCpu = mkCgroup(t, m, "nokmem-verify-"+dead.String()+"-test0dead")
	}
	reusedCg := mkCgroup(t, mount, "nokmem-selftest-"+reused.String()+"-test0reuse")
	goneNSCg := mkCgroup(t, mount, "nokmem-verify-"+goneNS.String()+"-test0ns")
	liveCg := mkCgroup(t, mount, "nokmem-verify-"+me.String()+"-test0live")
	legacyCg := mkCgroup(t, mount, "nokmem-verify-0123456789ab") // named before owners: young, kept

	// A process a dead run left in its container's cgroup.
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer sleeper.Process.Kill()
	if err := os.WriteFile(filepath.Join(deadCg, "cgroup.procs"), []byte(strconv.Itoa(sleeper.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}

	tmp := t.TempDir()
	mkdir := func(name string, age time.Duration) string {
		p := filepath.Join(tmp, name)
		if err := os.MkdirAll(filepath.Join(p, "state"), 0o755); err != nil {
			t.Fatal(err)
		}
		if age > 0 {
			old := time.Now().Add(-age)
			if err := os.Chtimes(p, old, old); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	deadDir := mkdir("nokmem-bundle-"+dead.String()+"-123", 0)
	deadCanary := mkdir("nokmem-canary-"+reused.String()+"-456", 0)
	liveDir := mkdir("nokmem-bundle-"+me.String()+"-789", 0)
	oldLegacy := mkdir("nokmem-bundle-101943321", 2*time.Hour)
	youngLegacy := mkdir("nokmem-canary-202943321", 0)
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "keep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(tmp, "nokmem-bundle-"+dead.String()+"-999")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}

	want := []string{deadCg, reusedCg, deadDir, deadCanary, oldLegacy}
	if deadCpu != "" {
		want = append(want, deadCpu)
	}
	keep := []string{liveCg, legacyCg, liveDir, youngLegacy, link}
	if me.NS == initPidNS {
		want = append(want, goneNSCg) // seen from the initial namespace: certainly gone
	} else {
		keep = append(keep, goneNSCg) // another namespace we cannot see into: kept
	}

	cg, dirs := findLeftovers(tmp)
	listed := append(cg, dirs...)
	for _, w := range want {
		if !contains(listed, w) {
			t.Errorf("not listed as a leftover: %s", w)
		}
	}
	for _, k := range keep {
		if contains(listed, k) {
			t.Errorf("listed as a leftover although its owner lives (or it is not ours): %s", k)
		}
	}

	reaped, err := reapLeftovers(tmp)
	if err != nil {
		t.Errorf("reap: %v", err)
	}
	for _, w := range want {
		if !contains(reaped, w) {
			t.Errorf("not reported as reaped: %s", w)
		}
		if _, err := os.Lstat(w); err == nil {
			t.Errorf("not removed: %s", w)
		}
	}
	for _, k := range keep {
		if contains(reaped, k) {
			t.Errorf("reaped: %s", k)
		}
		if _, err := os.Lstat(k); err != nil {
			t.Errorf("removed: %s", k)
		}
	}
	if _, err := os.Stat(filepath.Join(outside, "keep")); err != nil {
		t.Errorf("the reaper followed a symlink: %v", err)
	}
	// The process left in the dead run's cgroup was killed.
	errc := make(chan error, 1)
	go func() { errc <- sleeper.Wait() }()
	select {
	case err := <-errc:
		if ws, ok := sleeper.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Errorf("the process in the reaped cgroup ended with %v, not by SIGKILL", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the process in the reaped cgroup is still running")
	}
}

func TestOwnedNamesCarryTheOwner(t *testing.T) {
	n := ownedName("nokmem-verify-")
	got, ok := parseOwner(strings.TrimPrefix(n, "nokmem-verify-"))
	if !ok || got != owner.Self() {
		t.Fatalf("ownedName = %q: parsed %+v, %v; want %s", n, got, ok, owner.Self())
	}
	for _, bad := range []string{"0123456789ab", "101943321", owner.Self().String(), owner.Self().String() + "-"} {
		if _, ok := parseOwner(bad); ok {
			t.Errorf("parseOwner(%q) accepted", bad)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
