package verify_test

import (
	"context"
	"strings"
	"testing"

	"github.com/nokmem/nokmem/internal/testenv"
	"github.com/nokmem/nokmem/verify"
)

// The report says where the check's time went: every phase, the self-test
// beside the first run, the whole check as "total"; the summary prints it.
func TestDynamicReportsPhaseTimings(t *testing.T) {
	testenv.RequireDynamic(t)
	bin := fakeRuncBinary(t, "ok")
	d := verify.DynamicRunc(context.Background(), bin, verify.DynamicOptions{TempDir: t.TempDir()})
	if d.Status != verify.DynPass {
		t.Fatalf("status %s: %s", d.Status, d.Reason)
	}
	at := map[string]verify.PhaseTime{}
	for _, p := range d.Timings {
		at[p.Phase] = p
	}
	for _, phase := range []string{"reap", "self-test", "self-test/setup", "self-test/traced-run", "self-test/fanotify-stop", "self-test/cleanup",
		"memory-limit", "memory-limit/bundle", "memory-limit/fanotify-start", "memory-limit/traced-run", "memory-limit/until-limit-seen",
		"memory-limit/fanotify-stop", "memory-limit/cleanup", "kernel-memory-limit", "kernel-memory-limit/traced-run", "kernel-memory-limit/cleanup", "total"} {
		if _, ok := at[phase]; !ok {
			t.Errorf("no time for phase %q in %+v", phase, d.Timings)
		}
	}
	st, run1, run2, total := at["self-test"], at["memory-limit"], at["kernel-memory-limit"], at["total"]
	if st.StartMs >= run1.StartMs+run1.Ms || run1.StartMs >= st.StartMs+st.Ms {
		t.Errorf("the self-test (%+v) did not run beside the first run (%+v)", st, run1)
	}
	// Times are rounded to 0.1 ms.
	if run2.StartMs+0.1 < run1.StartMs+run1.Ms {
		t.Errorf("the kernel-memory-limit run (%+v) began before the memory-limit run ended (%+v)", run2, run1)
	}
	for _, p := range d.Timings {
		if p.Ms < 0 || p.StartMs < 0 || (p.Phase != "total" && p.StartMs+p.Ms > total.Ms+0.1) {
			t.Errorf("phase %+v lies outside the check (total %v ms)", p, total.Ms)
		}
	}
	rep := &verify.Report{Static: &verify.StaticResult{}, Dynamic: d}
	if s := rep.Summary(); !strings.Contains(s, "timings (ms) total ") || !strings.Contains(s, "memory-limit ") {
		t.Errorf("the summary lacks the timings:\n%s", s)
	}
}

// A check that ends early (here: cancelled before it started) still says
// how long it took.
func TestDynamicTimingsOnEveryPath(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d := verify.DynamicRunc(ctx, "/nonexistent", verify.DynamicOptions{TempDir: t.TempDir()})
	if d.Status != verify.DynError || len(d.Timings) == 0 || d.Timings[len(d.Timings)-1].Phase != "total" {
		t.Fatalf("status %s, timings %+v", d.Status, d.Timings)
	}
}

func TestTimingSummaryGroupsStepsUnderTheirPhase(t *testing.T) {
	d := &verify.DynamicResult{Timings: []verify.PhaseTime{
		{Phase: "reap", StartMs: 0, Ms: 1.2},
		{Phase: "self-test", StartMs: 1.2, Ms: 20},
		{Phase: "memory-limit", StartMs: 1.2, Ms: 90},
		{Phase: "memory-limit/traced-run", StartMs: 3, Ms: 80.4},
		{Phase: "self-test/traced-run", StartMs: 2, Ms: 4},
		{Phase: "total", StartMs: 0, Ms: 181},
	}}
	want := "total 181ms: reap 1 (at 0), self-test 20 (at 1) [traced-run 4], memory-limit 90 (at 1) [traced-run 80]"
	if got := d.TimingSummary(); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if (&verify.DynamicResult{}).TimingSummary() != "" {
		t.Error("a result without timings has a timing summary")
	}
}
