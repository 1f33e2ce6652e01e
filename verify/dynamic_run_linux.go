package verify

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The limits of the bundle the runs use.
const (
	runMemoryLimit = 64 << 20 // linux.resources.memory.limit of every run
	runKernelLimit = 32 << 20 // linux.resources.memory.kernel of the second run
)

// observeEvery is how often a run's cgroup is read while the run lasts.
const observeEvery = 5 * time.Millisecond

// watched is what both detectors saw of one command.
type watched struct {
	traceOutcome
	unopenable int // fanotify events whose file the kernel could not open
}

// watch runs cmd under the enabled detectors: fanotify on the memory mount
// keeps the kmem-file events whose path passes keep, ptrace follows cmd's
// process tree. during runs while the command does, once it has started; it
// must return by the time done is closed. dir holds the seccomp launcher.
// Phase times go to opt.tl as <name>/fanotify-start, /traced-run and
// /fanotify-stop. err is a failure of the verifier itself.
func watch(ctx context.Context, name string, cmd *exec.Cmd, opt DynamicOptions, mount, dir string, keep func(string) bool, deadline time.Time, during func(done <-chan struct{})) (watched, error) {
	var w watched
	endFan := opt.tl.span(name + "/fanotify-start")
	fan, err := startFan(mount, opt)
	endFan()
	if err != nil {
		return w, err
	}
	if fan != nil {
		defer fan.close()
		fan.collect(keep)
	}
	ready := make(chan struct{})
	done := make(chan struct{})
	var (
		traceErr error
		flush    func()
	)
	if fan != nil {
		flush = fan.flush
	}
	endTraced := opt.tl.span(name + "/traced-run")
	go func() {
		defer close(done)
		defer endTraced()
		w.traceOutcome, traceErr = traceIfEnabled(ctx, cmd, opt, dir, deadline, ready, flush)
	}()
	<-ready
	if during != nil {
		during(done)
	}
	<-done
	if fan != nil {
		endStop := opt.tl.span(name + "/fanotify-stop")
		fe, err := fan.stop()
		endStop()
		w.unopenable = fan.unopenable
		if err != nil {
			return w, err
		}
		w.events = append(w.events, fe...)
	}
	return w, traceErr
}

// record copies what the detectors saw and how the run ended into rr.
func (w watched) record(rr *RunResult) {
	rr.Events = append(rr.Events, w.events...)
	rr.UntracedIO, rr.PtraceStops, rr.UnresolvedFanotify = w.untraced, w.stops, w.unopenable
	w.end.record(rr)
}

// runOnce runs `binary run` once on a fresh bundle with the 64 MiB memory
// limit (and, when kernel is not 0, a kernel-memory limit), under both
// detectors. err is a failure of the verifier itself; how the binary fared
// is in the result. cleanup removes the run's container, cgroups and
// files; the caller must call it, whatever runOnce returned (also after a
// cancellation), and may do so while the check goes on.
func runOnce(ctx context.Context, binary, mount string, kernel int64, opt DynamicOptions) (rr *RunResult, cleanup func(), err error) {
	id := ownedName("nokmem-verify-")
	name := "memory-limit"
	if kernel != 0 {
		name = "kernel-memory-limit"
	}
	rr = &RunResult{Name: name, CgroupPath: "/" + id, KernelLimit: kernel}
	tmp, err := os.MkdirTemp(opt.TempDir, ownedTempPattern("nokmem-bundle-"))
	if err != nil {
		return nil, func() {}, err
	}
	bundle, state := filepath.Join(tmp, "bundle"), filepath.Join(tmp, "state")
	cleanup = func() {
		end := opt.tl.span(name + "/cleanup")
		defer end()
		// runc keeps a container's state in <root>/<id> until the container
		// is destroyed (run does so when it ends): without it, delete has
		// nothing to act on.
		if exists(filepath.Join(state, id)) {
			// Not ctx: cleanup must also happen after a cancellation.
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			opt.command(exec.CommandContext(cctx, binary, "--root", state, "delete", "--force", id)).Run()
			cancel()
		}
		removeCgroupEverywhere(id)
		os.RemoveAll(tmp)
	}
	endBundle := opt.tl.span(rr.Name + "/bundle")
	err = writeBundle(bundle, rr.CgroupPath, kernel)
	endBundle()
	if err != nil {
		return nil, cleanup, err
	}
	out, err := os.Create(filepath.Join(tmp, "output"))
	if err != nil {
		return nil, cleanup, err
	}
	defer out.Close()
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return nil, cleanup, err
	}
	defer stdinW.Close()
	defer stdinR.Close()
	cmd := opt.command(exec.Command(binary, "--root", state, "--log", filepath.Join(tmp, "log.json"), "run", "--bundle", bundle, id))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdinR, out, out
	cmd.Dir = bundle
	cgDir := filepath.Join(mount, id)
	start := time.Now()
	keep := func(p string) bool { return strings.Contains(p, "/"+id+"/") }
	w, err := watch(ctx, rr.Name, cmd, opt, mount, tmp, keep, start.Add(opt.Timeout), func(done <-chan struct{}) {
		stdinR.Close()
		opt.at("run-started:" + rr.Name)
		// The container's /init waits on stdin, so the container (and its
		// cgroup) lives until stdin is closed: look at the cgroup meanwhile.
		end := opt.tl.span(rr.Name + "/until-limit-seen")
		observe(ctx, rr, cgDir, start.Add(opt.Timeout*4/5), done)
		end()
		stdinW.Close()
	})
	if err != nil {
		return nil, cleanup, err
	}
	w.record(rr)
	output, _ := os.ReadFile(out.Name())
	rr.Output = tail(string(output)+readLog(filepath.Join(tmp, "log.json")), 2000)
	if kernel != 0 {
		rr.Reaction = reaction(rr)
	}
	if rr.Slabinfo == "readable" {
		rr.Events = append(rr.Events, Event{Detector: "slabinfo", Syscall: "kernel state", Path: filepath.Join(cgDir, "memory.kmem.slabinfo")})
	}
	return rr, cleanup, nil
}

// command starts cmd from opt.RunFrom, when set, keeping its argv[0].
func (o DynamicOptions) command(cmd *exec.Cmd) *exec.Cmd {
	if o.RunFrom != "" {
		cmd.Path = o.RunFrom
	}
	return cmd
}

// observe watches the run's memory cgroup until it holds a process and the
// bundle's memory limit, or the run ends, ctx is cancelled or until passes.
// runc joins the container's process to the cgroup (Apply) before it writes
// the limits (Set), so the limit read as soon as the cgroup has a process is
// still the unlimited default: keep reading until it is the requested one.
func observe(ctx context.Context, rr *RunResult, cgDir string, until time.Time, done <-chan struct{}) {
	want := strconv.Itoa(runMemoryLimit)
	tick := time.NewTicker(observeEvery)
	defer tick.Stop()
	for time.Now().Before(until) {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !rr.CgroupCreated {
			procs, err := os.ReadFile(filepath.Join(cgDir, "cgroup.procs"))
			if err != nil || len(bytes.TrimSpace(procs)) == 0 {
				continue
			}
			rr.CgroupCreated = true
		}
		if b, err := os.ReadFile(filepath.Join(cgDir, "memory.limit_in_bytes")); err == nil {
			rr.MemoryLimit = strings.TrimSpace(string(b))
		}
		if rr.MemoryLimit == want {
			if kernelBefore4(kernelRelease()) {
				rr.Slabinfo = slabinfoState(cgDir)
			}
			return
		}
	}
}

// reaction classifies how the binary treated the kernel-memory limit.
func reaction(rr *RunResult) string {
	switch {
	case !rr.Finished:
		return "none: the run did not finish (" + rr.ExitError + ")"
	case rr.ExitCode != 0 && strings.Contains(rr.Output, "kernel memory accounting disabled"):
		return reactionRefused
	case rr.ExitCode != 0:
		return "failed: " + firstLine(rr.Output)
	}
	return reactionAccepted
}

const (
	reactionRefused  = "refused: kernel memory accounting disabled in this runc build"
	reactionAccepted = "accepted (the kernel-memory limit was ignored or applied)"
)

// runProbe runs a kubelet kmem probe once (probe <cgroupsPath>) under both
// detectors. cleanup removes its cgroups and files; the caller must call
// it, whatever runProbe returned.
func runProbe(ctx context.Context, probe, mount string, opt DynamicOptions) (rr *RunResult, cleanup func(), err error) {
	id := ownedName("nokmem-verify-")
	rr = &RunResult{Name: "kubelet-probe", CgroupPath: "/" + id}
	tmp, err := os.MkdirTemp(opt.TempDir, ownedTempPattern("nokmem-bundle-"))
	if err != nil {
		return nil, func() {}, err
	}
	cleanup = func() {
		end := opt.tl.span("kubelet-probe/cleanup")
		defer end()
		removeCgroupEverywhere(id)
		os.RemoveAll(tmp)
	}
	out, err := os.Create(filepath.Join(tmp, "output"))
	if err != nil {
		return nil, cleanup, err
	}
	defer out.Close()
	cmd := exec.Command(probe, rr.CgroupPath)
	cmd.Stdout, cmd.Stderr = out, out
	keep := func(p string) bool { return strings.Contains(p, "/"+id+"/") }
	w, err := watch(ctx, rr.Name, cmd, opt, mount, tmp, keep, time.Now().Add(opt.Timeout), func(<-chan struct{}) {
		opt.at("run-started:" + rr.Name)
	})
	if err != nil {
		return nil, cleanup, err
	}
	cgDir := filepath.Join(mount, id)
	// The probe calls Apply(-1): the cgroup stays until we remove it.
	rr.CgroupCreated = exists(cgDir)
	if kernelBefore4(kernelRelease()) && rr.CgroupCreated {
		rr.Slabinfo = slabinfoState(cgDir)
	}
	w.record(rr)
	if rr.Slabinfo == "readable" {
		rr.Events = append(rr.Events, Event{Detector: "slabinfo", Syscall: "kernel state", Path: filepath.Join(cgDir, "memory.kmem.slabinfo")})
	}
	output, _ := os.ReadFile(out.Name())
	rr.Output = tail(string(output), 2000)
	return rr, cleanup, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return "it printed nothing" // never a reason ending in ": "
	}
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func readLog(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// fmtEvents describes the first of a run's events.
func fmtEvents(ev []Event) string {
	return fmt.Sprintf("%d write(s) to %s observed (%s by pid %d)", len(ev), KmemFile, ev[0].Syscall, ev[0].Pid)
}
