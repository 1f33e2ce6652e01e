package verify_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nokmem/nokmem/internal/owner"
	"github.com/nokmem/nokmem/internal/testenv"
	"github.com/nokmem/nokmem/verify"
)

// A check cancelled at any phase (Ctrl-C in Mage cancels the context) is
// an error, never a pass, and leaves no cgroup or directory behind. The
// binary is a real nokmem fixture runc that passes when left alone.
func TestDynamicCancelledAtEachPhaseIsAnError(t *testing.T) {
	testenv.RequireDynamic(t)
	bin := fixtureRepo(t).BuildRunc(t, "v1.0.0-rc9", []string{"seccomp", "nokmem"}, false)
	phases := []struct {
		phase string // where the hook cancels
		when  string // what the reason must say
		runs  int    // how many runs were begun (the first begins with the self-test)
	}{
		{"", "", 2}, // not cancelled: the control
		{"self-test", "the self-test beside it", 1},                              // the canary about to run, the first run beside it
		{"self-test-done", "the self-test beside it", 1},                         // the canary done, the first run beside it
		{"run-started:memory-limit", "during the memory-limit run", 1},           // during the first run
		{"run-done:memory-limit", "before the kernel-memory-limit run", 1},       // between the runs
		{"run-started:kernel-memory-limit", "during the kernel-memory-limit", 2}, // during the second run
		{"run-done:kernel-memory-limit", "after the runs", 2},                    // after the second run
		{"verdict", "after the runs", 2},                                         // after both runs, before the verdict
	}
	for _, c := range phases {
		phase := c.phase
		name := phase
		if name == "" {
			name = "not cancelled"
		}
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var seen []string
			tmp := t.TempDir()
			opt := verify.WithPhaseHook(verify.DynamicOptions{TempDir: tmp}, func(p string) {
				seen = append(seen, p)
				if p == phase {
					cancel()
				}
			})
			start := time.Now()
			rep, err := verify.Verify(ctx, bin, verify.Options{Project: "runc", DynamicOptions: opt})
			if err != nil {
				t.Fatal(err)
			}
			d := rep.Dynamic
			if phase == "" {
				if !rep.Passed || d.Status != verify.DynPass {
					t.Fatalf("the control did not pass:\n%s", rep.Summary())
				}
				assertNoOwnLeftovers(t, tmp)
				return
			}
			if !contains(seen, phase) {
				t.Fatalf("phase %q never reached; phases seen: %q", phase, seen)
			}
			if rep.Passed || d.Status != verify.DynError || !isCancelled(d.Reason) || !strings.Contains(d.Reason, c.when) {
				t.Fatalf("cancelled at %q: passed=%v status=%s reason=%q\n%s", phase, rep.Passed, d.Status, d.Reason, rep.Summary())
			}
			if len(d.Runs) != c.runs {
				t.Errorf("cancelled at %q: %d run(s) started, want %d", phase, len(d.Runs), c.runs)
			}
			if el := time.Since(start); el > 30*time.Second {
				t.Errorf("the cancelled check took %s", el)
			}
			assertNoOwnLeftovers(t, tmp)
		})
	}
}

// A run that does not end by itself is cut by the cancellation at once,
// not when the run's timeout expires.
func TestDynamicCancelCutsAHangingRun(t *testing.T) {
	testenv.RequireDynamic(t)
	bin := fakeRuncBinary(t, "hang")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tmp := t.TempDir()
	opt := verify.WithPhaseHook(verify.DynamicOptions{TempDir: tmp}, func(p string) {
		if p == "run-started:memory-limit" {
			time.AfterFunc(500*time.Millisecond, cancel)
		}
	})
	start := time.Now()
	d := verify.DynamicRunc(ctx, bin, opt)
	if d.Status != verify.DynError || !isCancelled(d.Reason) {
		t.Fatalf("status %s: %s", d.Status, d.Reason)
	}
	if len(d.Runs) != 1 || d.Runs[0].Finished || !strings.Contains(d.Runs[0].ExitError, "cancelled") {
		t.Fatalf("the hanging run was not recorded as cut by the cancellation: %+v", d.Runs)
	}
	if el := time.Since(start); el > 20*time.Second {
		t.Errorf("cancelling a hanging run took %s (the run timeout is 60s)", el)
	}
	assertNoOwnLeftovers(t, tmp)
}

// SelfTest on its own (verify:host calls it): cancelled before or after
// its canary wrote, it returns an error, not a result.
func TestSelfTestCancelledIsAnError(t *testing.T) {
	testenv.RequireDynamic(t)
	mount, err := verify.MemoryMount()
	if err != nil {
		t.Fatal(err)
	}
	for _, phase := range []string{"self-test", "self-test-done"} {
		t.Run(phase, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			tmp := t.TempDir()
			reached := false
			opt := verify.WithPhaseHook(verify.DynamicOptions{TempDir: tmp}, func(p string) {
				if p == phase {
					reached = true
					cancel()
				}
			})
			checks, err := verify.SelfTest(ctx, mount, opt)
			if !reached {
				t.Fatalf("the self-test never reached %q", phase)
			}
			if err == nil || !strings.HasPrefix(err.Error(), "self-test cancelled") {
				t.Fatalf("a cancelled self-test returned %v, %v", checks, err)
			}
			assertNoOwnLeftovers(t, tmp)
		})
	}
}

func TestDynamicProbeCancelledIsAnError(t *testing.T) {
	testenv.RequireDynamic(t)
	cases := []struct {
		mode, phase, when string
		delay             time.Duration
	}{
		{"hang", "run-started:kubelet-probe", "during the kubelet-probe run", 300 * time.Millisecond},
		{"ok", "verdict", "after the kubelet-probe run", 0},
	}
	for _, c := range cases {
		t.Run(c.phase, func(t *testing.T) {
			probe := fakeRuncBinary(t, c.mode)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			tmp := t.TempDir()
			reached := false
			opt := verify.WithPhaseHook(verify.DynamicOptions{TempDir: tmp}, func(p string) {
				if p == c.phase {
					reached = true
					if c.delay == 0 {
						cancel()
					} else {
						time.AfterFunc(c.delay, cancel)
					}
				}
			})
			start := time.Now()
			d := verify.DynamicProbe(ctx, probe, opt)
			if !reached {
				t.Fatalf("phase %q never reached: %s", c.phase, d.Reason)
			}
			if d.Status != verify.DynError || !isCancelled(d.Reason) || !strings.Contains(d.Reason, c.when) {
				t.Fatalf("status %s: %s", d.Status, d.Reason)
			}
			if el := time.Since(start); el > 20*time.Second {
				t.Errorf("cancelling the probe took %s", el)
			}
			assertNoOwnLeftovers(t, tmp)
		})
	}
}

// assertNoOwnLeftovers checks that no cgroup in any hierarchy and no
// directory in tempDir carries this test process's owner tag. Other
// processes' checks may be running meanwhile; their names differ.
func assertNoOwnLeftovers(t *testing.T, tempDir string) {
	t.Helper()
	tag := owner.Self().String()
	mounts, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, m := range mounts {
		for _, p := range []string{"nokmem-verify-", "nokmem-selftest-"} {
			left, _ := filepath.Glob(filepath.Join(m, p+tag+"-*"))
			for _, l := range left {
				t.Errorf("left behind: %s", l)
			}
		}
	}
	entries, _ := os.ReadDir(tempDir)
	for _, e := range entries {
		t.Errorf("left behind in the temp dir: %s", e.Name())
	}
}

// isCancelled recognises the reason of a check ended by its cancellation
// (not merely a run that a cancellation cut).
func isCancelled(reason string) bool {
	return strings.HasPrefix(reason, "cancelled ") && strings.Contains(reason, "an interrupted check is never a pass")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
