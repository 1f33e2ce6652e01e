package verify

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// This file orders the dynamic check and judges its runs; the mechanism is
// in dynamic_run_linux.go (runs, bundle), dynamic_selftest_linux.go,
// ptrace_linux.go and fanotify_linux.go (detectors), dynamic_host_linux.go
// (mounts, kernel) and reap_linux.go (names, leftovers).

// Dynamic statuses.
const (
	DynPass        = "pass"
	DynFail        = "fail"
	DynUnavailable = "unavailable"
	DynError       = "error"
	DynOff         = "off"
)

// DetectorCheck is the self-test result of one detector.
type DetectorCheck struct {
	Detector string  `json:"detector"`
	Caught   bool    `json:"caught"`
	Events   []Event `json:"events,omitempty"`
}

// RunResult is one traced run of the binary.
type RunResult struct {
	Name          string `json:"name"`
	KernelLimit   int64  `json:"kernelLimit,omitempty"`
	CgroupPath    string `json:"cgroupPath"`
	CgroupCreated bool   `json:"cgroupCreated"`
	// MemoryLimit is the cgroup's memory.limit_in_bytes once runc had
	// applied the bundle's 64 MiB (67108864), or the last value read while
	// the run lasted if it never did.
	MemoryLimit string  `json:"memoryLimit,omitempty"`
	Slabinfo    string  `json:"slabinfo,omitempty"`
	Events      []Event `json:"events"`
	// Finished: the binary exited by itself; not killed by a signal, not
	// cut short by cancellation or the timeout.
	Finished bool `json:"finished"`
	// ExitCode is the exit status, -1 if the binary did not exit by itself.
	ExitCode int `json:"exitCode"`
	// Signal names the signal that killed the binary, if one did.
	Signal    string `json:"signal,omitempty"`
	ExitError string `json:"exitError,omitempty"`
	Reaction  string `json:"reaction,omitempty"`
	Output    string `json:"output,omitempty"`
	// UntracedIO lists syscalls whose file I/O the ptrace detector cannot
	// attribute (io_uring, Linux AIO, a 32-bit or x32 syscall); a run that
	// made any is not a pass.
	UntracedIO []string `json:"untracedIO,omitempty"`
	// PtraceStops counts how often the ptrace detector stopped the run's
	// processes (the seccomp filter lets every other syscall run on).
	PtraceStops int `json:"ptraceStops,omitempty"`
	// UnresolvedFanotify counts fanotify events whose file the kernel could
	// not open (cgroup files removed or write-only); informational.
	UnresolvedFanotify int `json:"unresolvedFanotify,omitempty"`
}

// DynamicResult is the outcome of the dynamic check.
type DynamicResult struct {
	Status   string          `json:"status"`
	Reason   string          `json:"reason"`
	Kernel   string          `json:"kernel,omitempty"`
	Mount    string          `json:"memoryMount,omitempty"`
	SelfTest []DetectorCheck `json:"selfTest,omitempty"`
	Runs     []RunResult     `json:"runs,omitempty"`
	// Reaped lists what dead checks had left behind and this one removed
	// before it started (see ReapLeftovers).
	Reaped []string `json:"reaped,omitempty"`
	// Timings says where the check's time went, phase by phase (see
	// docs/verifier.md, "Where the time goes").
	Timings []PhaseTime `json:"timings,omitempty"`
}

// Detectors are the independent write detectors.
var Detectors = []string{"ptrace", "fanotify"}

// DynamicOptions tune the dynamic check.
type DynamicOptions struct {
	// Disable switches detectors off; used to prove the self-test fails.
	Disable []string
	// TempDir holds bundles and state (default os.TempDir()).
	TempDir string
	// Timeout bounds one run (default 60s): the wait for the container's
	// cgroup and limit takes at most four fifths of it, then the run is
	// killed when it is not over by the end.
	Timeout time.Duration
	// RunFrom, when set, is the file the runc binary's processes are
	// started from (a descriptor path such as /proc/<pid>/fd/<n>), with the
	// binary's own path as their argv[0]: the verifier's VM runs runc from
	// a sealed memfd (verify/guest).
	RunFrom string

	// hook, for tests, is called as the check reaches each phase:
	// "self-test", "self-test-done", "run-started:<run>", "run-done:<run>",
	// "verdict".
	hook func(phase string)
	// tl records phase times; set by DynamicRunc and DynamicProbe.
	tl *timeline
}

// hookMu serialises the test hook: the self-test and the first run call it
// from goroutines of their own.
var hookMu sync.Mutex

func (o DynamicOptions) at(phase string) {
	if o.hook != nil {
		hookMu.Lock()
		defer hookMu.Unlock()
		o.hook(phase)
	}
}

// begin checks the host, fills in defaults and reaps what dead checks left;
// ok is false when res already holds the final (unavailable or error)
// result.
func begin(ctx context.Context, opt DynamicOptions) (*DynamicResult, DynamicOptions, bool) {
	res := &DynamicResult{Kernel: kernelRelease()}
	if interrupted(ctx, res, "before the check started") {
		return res, opt, false
	}
	if p := HostProblem(); p != "" {
		res.Status, res.Reason = DynUnavailable, p
		return res, opt, false
	}
	res.Mount, _ = MemoryMount()
	if opt.Timeout == 0 {
		opt.Timeout = 60 * time.Second
	}
	// A leftover that cannot be removed does not touch this check, whose
	// names are its own; verify:host reports it.
	endReap := opt.tl.span("reap")
	res.Reaped, _ = reapLeftovers(opt.TempDir)
	endReap()
	return res, opt, true
}

// besideSelfTest runs the self-test and the check's first run side by side:
// they share nothing (own cgroups, own scratch directories, own detector
// instances, each keeping only the events under its own cgroup), so the
// self-test costs no wall time. first returns the run and its cleanup,
// which goes to cleanups. ok is false when res already holds the final
// result: cancelled while either was under way, a failed self-test (whatever
// the run showed), or a verifier failure in the run.
func besideSelfTest(ctx context.Context, res *DynamicResult, opt DynamicOptions, name string, cleanups *sync.WaitGroup,
	first func() (*RunResult, func(), error)) (rr *RunResult, ok bool) {
	type selfTest struct {
		checks []DetectorCheck
		err    error
	}
	stc := make(chan selfTest, 1)
	go func() {
		end := opt.tl.span("self-test")
		defer end()
		st, err := SelfTest(ctx, res.Mount, opt)
		stc <- selfTest{st, err}
	}()
	end := opt.tl.span(name)
	rr, cleanup, err := first()
	end()
	cleanups.Go(cleanup)
	st := <-stc
	res.SelfTest = st.checks
	if rr != nil {
		res.Runs = append(res.Runs, *rr)
	}
	if interrupted(ctx, res, "during the "+name+" run (and the self-test beside it)") {
		return nil, false
	}
	if st.err != nil {
		res.Status, res.Reason = DynError, "self-test: "+st.err.Error()
		return nil, false
	}
	for _, d := range st.checks {
		if !d.Caught {
			res.Status, res.Reason = DynError, "self-test: the "+d.Detector+" detector did not see the canary's write, so a pass would prove nothing on this host"
			return nil, false
		}
	}
	if err != nil {
		res.Status, res.Reason = DynError, name+" run: "+err.Error()
		return nil, false
	}
	return rr, true
}

// interrupted turns res into an error result if ctx is done: a check that
// was cancelled at any point is never a pass, whatever its runs showed.
// phase says when, e.g. "during the self-test".
func interrupted(ctx context.Context, res *DynamicResult, phase string) bool {
	if ctx.Err() == nil {
		return false
	}
	res.Status = DynError
	res.Reason = "cancelled " + phase + " (" + context.Cause(ctx).Error() + "); an interrupted check is never a pass"
	n := 0
	for _, r := range res.Runs {
		n += len(r.Events)
	}
	if n > 0 {
		res.Reason += fmt.Sprintf("; %d write(s) to %s had been observed before", n, KmemFile)
	}
	return true
}

// DynamicProbe runs a kubelet probe: a program compiled from the same
// (patched) Kubernetes tree with the same tags, which creates a memory
// cgroup through the vendored libcontainer exactly as kubelet's cgroupfs
// driver creates QoS and pod cgroups (manager.Apply(-1) with a memory
// limit). Usage of the probe: probe <cgroupsPath>.
func DynamicProbe(ctx context.Context, probe string, opt DynamicOptions) (res *DynamicResult) {
	opt.tl = newTimeline()
	defer opt.tl.finish(&res)
	var cleanups sync.WaitGroup
	defer cleanups.Wait()
	res, opt, ok := begin(ctx, opt)
	if !ok {
		return res
	}
	rr, ok := besideSelfTest(ctx, res, opt, "kubelet-probe", &cleanups, func() (*RunResult, func(), error) {
		return runProbe(ctx, probe, res.Mount, opt)
	})
	if !ok {
		return res
	}
	opt.at("run-done:" + rr.Name)
	opt.at("verdict")
	if interrupted(ctx, res, "after the kubelet-probe run") {
		return res
	}
	res.Status, res.Reason = judgeProbe(*rr)
	return res
}

// DynamicRunc runs a runc binary's real lifecycle twice (memory limit only,
// then with a kernel-memory limit) and reports every write to the kmem file.
// The self-test runs beside the first run. The second run starts only once
// the first one has shown nothing decisive: on a 3.10 kernel a run with a
// kernel-memory limit by a binary that writes the file turns accounting on
// for its cgroup (the leak), so a writer gets one run, not two. Each run's
// cleanup goes on beside the next run and ends before the result does.
func DynamicRunc(ctx context.Context, binary string, opt DynamicOptions) (res *DynamicResult) {
	opt.tl = newTimeline()
	defer opt.tl.finish(&res)
	var cleanups sync.WaitGroup
	defer cleanups.Wait()
	res, opt, ok := begin(ctx, opt)
	if !ok {
		return res
	}
	for _, kernel := range []int64{0, runKernelLimit} {
		name := "memory-limit"
		if kernel != 0 {
			name = "kernel-memory-limit"
		}
		run := func() (*RunResult, func(), error) { return runOnce(ctx, binary, res.Mount, kernel, opt) }
		var rr *RunResult
		if kernel == 0 {
			if rr, ok = besideSelfTest(ctx, res, opt, name, &cleanups, run); !ok {
				return res
			}
		} else {
			// Start no run once cancelled.
			if interrupted(ctx, res, "before the "+name+" run") {
				return res
			}
			end := opt.tl.span(name)
			r, cleanup, err := run()
			end()
			cleanups.Go(cleanup)
			if r != nil {
				res.Runs = append(res.Runs, *r)
			}
			if interrupted(ctx, res, "during the "+name+" run") {
				return res
			}
			if err != nil {
				res.Status, res.Reason = DynError, name+" run: "+err.Error()
				return res
			}
			rr = r
		}
		opt.at("run-done:" + rr.Name)
		// Stop at the first run that decides: a write, or a run that
		// cannot support a pass.
		if len(rr.Events) > 0 {
			res.Status, res.Reason = DynFail, rr.Name+" run: "+fmtEvents(rr.Events)
			return res
		}
		if p := runcRunProblem(*rr); p != "" {
			res.Status, res.Reason = DynError, rr.Name+" run: "+p
			return res
		}
	}
	opt.at("verdict")
	if interrupted(ctx, res, "after the runs") {
		return res
	}
	res.Status, res.Reason = judgeRunc(res.Runs)
	return res
}

// judgeRunc decides a runc check from its runs. Any observed write fails
// it. A pass needs both runs, each of which finished and showed what the
// verdict relies on (runcRunProblem).
func judgeRunc(runs []RunResult) (status, reason string) {
	for _, rr := range runs {
		if len(rr.Events) > 0 {
			return DynFail, rr.Name + " run: " + fmtEvents(rr.Events)
		}
	}
	if len(runs) != 2 || runs[0].KernelLimit != 0 || runs[1].KernelLimit == 0 {
		return DynError, fmt.Sprintf("the check needs a memory-limit run and a kernel-memory-limit run; it has %d run(s)", len(runs))
	}
	for _, rr := range runs {
		if p := runcRunProblem(rr); p != "" {
			return DynError, rr.Name + " run: " + p
		}
	}
	return DynPass, "no write to " + KmemFile + " in either run; both runs finished, the memory cgroup was created with its limit, and both detectors passed the self-test"
}

// runcRunProblem says why a run without writes cannot support a pass (""
// if it can). A run must have finished by itself: a binary killed by a
// signal (exit status 137 is SIGKILL) or cut short by cancellation or the
// timeout may not have reached the code that writes the file. A run that
// succeeded must have created its memory cgroup, holding the container,
// with the bundle's 64 MiB limit: the cgroup creation is where runc's kmem
// code runs. The only run allowed to fail is the kernel-memory-limit run
// refusing the limit ("kernel memory accounting disabled in this runc
// build", rc7+ nokmem and nokmem's patches); runc may exit before its
// cgroup is seen then, and the refusal is the recorded reaction.
func runcRunProblem(rr RunResult) string {
	if len(rr.UntracedIO) > 0 {
		return untracedProblem(rr)
	}
	if !rr.Finished {
		return "the run did not finish (" + rr.ExitError + "), so it does not show what the binary does"
	}
	if rr.ExitCode != 0 {
		if rr.KernelLimit != 0 && rr.Reaction == reactionRefused {
			return ""
		}
		if rr.KernelLimit != 0 {
			return "the binary failed for a reason other than refusing the kernel-memory limit (" + firstLine(rr.Output) + "), so the run does not show how it treats that limit"
		}
		return "the binary failed (" + rr.ExitError + "): " + firstLine(rr.Output)
	}
	if !rr.CgroupCreated {
		return "the binary never created its memory cgroup, so the run did not exercise the kmem code path: " + firstLine(rr.Output)
	}
	if rr.MemoryLimit != strconv.Itoa(runMemoryLimit) {
		return "the memory cgroup never showed the bundle's limit " + strconv.Itoa(runMemoryLimit) + " (last read: " + rr.MemoryLimit + "), so the binary did not apply the memory configuration"
	}
	return ""
}

// judgeProbe decides a kubelet probe check from its run: a write fails it;
// a pass needs a probe that finished with status 0 and left the memory
// cgroup it was asked to create.
func judgeProbe(rr RunResult) (status, reason string) {
	switch {
	case len(rr.Events) > 0:
		return DynFail, "kubelet probe: " + fmtEvents(rr.Events)
	case len(rr.UntracedIO) > 0:
		return DynError, "kubelet probe: " + untracedProblem(rr)
	case !rr.Finished:
		return DynError, "the probe did not finish (" + rr.ExitError + "), so it does not show what the vendored libcontainer does"
	case rr.ExitCode != 0:
		return DynError, "the probe failed (" + rr.ExitError + "): " + firstLine(rr.Output)
	case !rr.CgroupCreated:
		return DynError, "the probe did not create its memory cgroup, so the kmem code path was not exercised: " + firstLine(rr.Output)
	}
	return DynPass, "the vendored libcontainer created a memory cgroup without writing " + KmemFile + "; the probe finished and both detectors passed the self-test"
}

// untracedProblem: a run that did file I/O the ptrace detector cannot
// attribute (io_uring, Linux AIO, a 32-bit or x32 syscall) shows nothing
// about that I/O, so it cannot support a pass.
func untracedProblem(rr RunResult) string {
	return "the run made syscalls whose file I/O the ptrace detector cannot see through (" + strings.Join(rr.UntracedIO, "; ") + "), so it does not show that nothing wrote " + KmemFile
}
