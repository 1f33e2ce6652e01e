package verify

import (
	"strings"
	"testing"
)

// goodRuns are the runs of a nokmem runc that refuses a kernel-memory limit.
func goodRuns() []RunResult {
	return []RunResult{
		{Name: "memory-limit", CgroupCreated: true, MemoryLimit: "67108864", Finished: true, ExitCode: 0},
		{Name: "kernel-memory-limit", KernelLimit: runKernelLimit, Finished: true, ExitCode: 1,
			Reaction: reactionRefused, ExitError: "exit status 1", Output: "kernel memory accounting disabled in this runc build"},
	}
}

// Each case breaks one thing the verdict relies on; every guard in
// runcRunProblem and judgeRunc has a case that fails without it.
func TestJudgeRuncNeedsFinishedRunsThatCreatedTheirCgroup(t *testing.T) {
	write := []Event{{Detector: "ptrace", Pid: 1, Syscall: "write", Path: "/sys/fs/cgroup/memory/x/" + KmemFile}}
	cases := []struct {
		name   string
		edit   func(r []RunResult) []RunResult
		status string
		reason string
	}{
		{"nokmem runc refusing the kernel limit", func(r []RunResult) []RunResult { return r }, DynPass, "no write"},
		{"kernel limit accepted, as rc6 nokmem does", func(r []RunResult) []RunResult {
			r[1] = RunResult{Name: "kernel-memory-limit", KernelLimit: runKernelLimit, CgroupCreated: true, MemoryLimit: "67108864", Finished: true, Reaction: reactionAccepted}
			return r
		}, DynPass, "no write"},
		{"memory cgroup never created", func(r []RunResult) []RunResult { r[0].CgroupCreated = false; return r }, DynError, "never created its memory cgroup"},
		{"memory-limit run killed by SIGKILL", func(r []RunResult) []RunResult {
			r[0].Finished, r[0].ExitCode, r[0].Signal, r[0].ExitError = false, -1, "killed", "killed by signal 9 (killed)"
			return r
		}, DynError, "did not finish"},
		{"memory-limit run cut by cancellation after runc exited 0", func(r []RunResult) []RunResult {
			r[0].Finished, r[0].ExitError = false, "cancelled (context canceled): exit status 0"
			return r
		}, DynError, "did not finish"},
		{"memory-limit run exited 137", func(r []RunResult) []RunResult { r[0].ExitCode, r[0].ExitError = 137, "exit status 137"; return r }, DynError, "failed"},
		{"memory limit never applied", func(r []RunResult) []RunResult { r[0].MemoryLimit = "9223372036854771712"; return r }, DynError, "never showed"},
		{"kernel-memory-limit run killed", func(r []RunResult) []RunResult {
			r[1].Finished, r[1].ExitCode, r[1].Signal, r[1].ExitError = false, -1, "killed", "killed by signal 9 (killed)"
			return r
		}, DynError, "did not finish"},
		{"kernel-memory-limit run cut although its output says refused", func(r []RunResult) []RunResult {
			r[1].Finished = false
			return r
		}, DynError, "did not finish"},
		{"kernel-memory-limit run failed for another reason", func(r []RunResult) []RunResult {
			r[1].Reaction, r[1].Output = "failed: something else", "something else"
			return r
		}, DynError, "other than refusing"},
		{"kernel-memory-limit run accepted without a cgroup", func(r []RunResult) []RunResult {
			r[1] = RunResult{Name: "kernel-memory-limit", KernelLimit: runKernelLimit, Finished: true, Reaction: reactionAccepted}
			return r
		}, DynError, "never created"},
		{"second run missing", func(r []RunResult) []RunResult { return r[:1] }, DynError, "1 run(s)"},
		{"no runs", func(r []RunResult) []RunResult { return nil }, DynError, "0 run(s)"},
		{"runs in the wrong order", func(r []RunResult) []RunResult { return []RunResult{r[1], r[0]} }, DynError, "needs a memory-limit run"},
		{"memory-limit run used io_uring", func(r []RunResult) []RunResult {
			r[0].UntracedIO = []string{"io_uring_setup (pid 7, runc)"}
			return r
		}, DynError, "cannot see through (io_uring_setup"},
		{"refusing run made a 32-bit syscall", func(r []RunResult) []RunResult {
			r[1].UntracedIO = []string{"32-bit syscall 5 (int 0x80) (pid 7, runc)"}
			return r
		}, DynError, "cannot see through"},
		{"a write wins over everything", func(r []RunResult) []RunResult { r[1].Events = write; return r }, DynFail, "write(s)"},
		{"a write wins over untraced I/O", func(r []RunResult) []RunResult {
			r[0].Events, r[0].UntracedIO = write, []string{"io_setup (pid 7, runc)"}
			return r
		}, DynFail, "write(s)"},
		{"a write in a killed run is still a write", func(r []RunResult) []RunResult {
			r[0].Events, r[0].Finished, r[0].CgroupCreated = write, false, false
			return r
		}, DynFail, "write(s)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, reason := judgeRunc(c.edit(goodRuns()))
			if status != c.status || !strings.Contains(reason, c.reason) {
				t.Fatalf("got %s (%s), want %s (… %s …)", status, reason, c.status, c.reason)
			}
		})
	}
}

func TestJudgeProbeNeedsAFinishedProbeThatCreatedItsCgroup(t *testing.T) {
	good := RunResult{Name: "kubelet-probe", CgroupCreated: true, Finished: true}
	cases := []struct {
		name   string
		edit   func(r *RunResult)
		status string
		reason string
	}{
		{"probe created its cgroup", func(r *RunResult) {}, DynPass, "created a memory cgroup"},
		{"cgroup never created", func(r *RunResult) { r.CgroupCreated = false }, DynError, "did not create its memory cgroup"},
		{"probe killed", func(r *RunResult) { r.Finished, r.ExitCode, r.Signal = false, -1, "killed" }, DynError, "did not finish"},
		{"probe failed", func(r *RunResult) { r.ExitCode = 2 }, DynError, "failed"},
		{"probe used Linux AIO", func(r *RunResult) { r.UntracedIO = []string{"io_setup (pid 7, probe)"} }, DynError, "cannot see through"},
		{"probe wrote", func(r *RunResult) {
			r.Events = []Event{{Detector: "fanotify", Pid: 7, Syscall: "write", Path: KmemFile}}
		}, DynFail, "write(s)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := good
			c.edit(&r)
			status, reason := judgeProbe(r)
			if status != c.status || !strings.Contains(reason, c.reason) {
				t.Fatalf("got %s (%s), want %s (… %s …)", status, reason, c.status, c.reason)
			}
		})
	}
}

// decide combines the static verdict and the dynamic status; each case
// that must not pass kills one mutation of a guard in decide.
func TestDecideCombinesStaticAndDynamic(t *testing.T) {
	cases := []struct {
		name    string
		static  Verdict
		dynamic string
		opt     Options
		passed  bool
		verdict Verdict
	}{
		{"nokmem and a dynamic pass", NoKmem, DynPass, Options{}, true, NoKmem},
		{"no kmem code and a dynamic pass", NoKmemCode, DynPass, Options{}, true, NoKmemCode},
		{"a dynamic pass does not override kmem-enabled static evidence", KmemEnabled, DynPass, Options{}, false, KmemEnabled},
		{"a dynamic pass does not override unknown static evidence", Unknown, DynPass, Options{}, false, Unknown},
		{"a dynamic fail overrides nokmem static evidence", NoKmem, DynFail, Options{}, false, KmemEnabled},
		{"a dynamic error is not a pass even with static-only allowed", NoKmem, DynError, Options{AllowStaticOnly: true}, false, NoKmem},
		{"unavailable passes on static evidence when allowed", NoKmem, DynUnavailable, Options{AllowStaticOnly: true}, true, NoKmem},
		{"unavailable does not pass by default", NoKmem, DynUnavailable, Options{}, false, NoKmem},
		{"require: unavailable is not a pass even with static-only allowed", NoKmem, DynUnavailable, Options{Dynamic: "require", AllowStaticOnly: true}, false, NoKmem},
		{"require: an error is not a pass", NoKmem, DynError, Options{Dynamic: "require", AllowStaticOnly: true}, false, NoKmem},
		{"switched off passes on static evidence", NoKmem, DynOff, Options{Dynamic: "off"}, true, NoKmem},
		{"switched off does not rescue unknown static evidence", Unknown, DynOff, Options{Dynamic: "off"}, false, Unknown},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &Report{Static: &StaticResult{Verdict: c.static}, Verdict: c.static, Dynamic: &DynamicResult{Status: c.dynamic, Reason: "test"}}
			r.decide(c.opt)
			if r.Passed != c.passed || r.Verdict != c.verdict {
				t.Fatalf("passed=%v verdict=%s, want passed=%v verdict=%s; reasons %q", r.Passed, r.Verdict, c.passed, c.verdict, r.Reasons)
			}
			if c.opt.Dynamic == "require" && !strings.Contains(strings.Join(r.Reasons, "\n"), "required") {
				t.Errorf("the reasons do not say the dynamic check was required: %q", r.Reasons)
			}
		})
	}
}
