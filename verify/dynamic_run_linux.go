package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The limits of the bundle the runs use.
const (
	runMemoryLimit = 64 << 20 // linux.resources.memory.limit of every run
	runKernelLimit = 32 << 20 // linux.resources.memory.kernel of the second run
)

// runEnd says how a command the verifier ran came to an end.
type runEnd struct {
	exited bool           // it exited by itself, with status code
	code   int            // when exited
	signal syscall.Signal // when a signal killed it
	cut    string         // set when the verifier ended it: "cancelled (…)", "timed out"
}

func endOf(ws unix.WaitStatus) runEnd {
	if ws.Exited() {
		return runEnd{exited: true, code: ws.ExitStatus()}
	}
	if ws.Signaled() {
		return runEnd{signal: ws.Signal()}
	}
	return runEnd{}
}

// finished: the process exited by itself and nothing cut the run short.
func (e runEnd) finished() bool { return e.exited && e.cut == "" }

func (e runEnd) String() string {
	var s string
	switch {
	case e.exited:
		s = "exit status " + strconv.Itoa(e.code)
	case e.signal != 0:
		s = "killed by signal " + strconv.Itoa(int(e.signal)) + " (" + e.signal.String() + ")"
	default:
		s = "did not exit"
	}
	if e.cut != "" {
		s = e.cut + ": " + s
	}
	return s
}

// record copies how the run ended into rr.
func (e runEnd) record(rr *RunResult) {
	rr.Finished, rr.ExitCode = e.finished(), -1
	if e.exited {
		rr.ExitCode = e.code
	}
	if e.signal != 0 {
		rr.Signal = e.signal.String()
	}
	if !e.finished() || e.code != 0 {
		rr.ExitError = e.String()
	}
}

func disabled(opt DynamicOptions, d string) bool {
	for _, x := range opt.Disable {
		if x == d {
			return true
		}
	}
	return false
}

func startFan(mount string, opt DynamicOptions) (*fanWatch, error) {
	if disabled(opt, "fanotify") {
		return nil, nil
	}
	return newFanWatch(mount)
}

// traceIfEnabled runs cmd under ptrace, or plainly when ptrace is disabled;
// either way a cancelled ctx or the deadline kills it. ready is closed once
// the command has started.
func traceIfEnabled(ctx context.Context, cmd *exec.Cmd, opt DynamicOptions, deadline time.Time, ready chan<- struct{}) ([]Event, runEnd, error) {
	if ready == nil {
		ready = make(chan struct{})
	}
	if !disabled(opt, "ptrace") {
		// ptraceRun locks its goroutine to its thread (ptrace requests must
		// come from the tracer thread): give it a goroutine of its own.
		type res struct {
			ev  []Event
			end runEnd
			err error
		}
		ch := make(chan res, 1)
		go func() {
			ev, end, err := ptraceRun(ctx, cmd, deadline, ready)
			ch <- res{ev, end, err}
		}()
		r := <-ch
		return r.ev, r.end, r.err
	}
	err := cmd.Start()
	close(ready)
	if err != nil {
		return nil, runEnd{}, err
	}
	waitc := make(chan error, 1)
	go func() { waitc <- cmd.Wait() }()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	var cut string
	select {
	case err = <-waitc:
	case <-ctx.Done():
		cut = "cancelled (" + context.Cause(ctx).Error() + ")"
	case <-timer.C:
		cut = "timed out"
	}
	if cut != "" {
		cmd.Process.Kill()
		err = <-waitc
	}
	if cmd.ProcessState == nil {
		return nil, runEnd{cut: cut}, err
	}
	end := endOf(unix.WaitStatus(cmd.ProcessState.Sys().(syscall.WaitStatus)))
	end.cut = cut
	return nil, end, nil
}

type bundleConfig struct {
	OCIVersion string `json:"ociVersion"`
	// Platform is required by runc before rc4 (spec 1.0.0-rc5) and ignored later.
	Platform map[string]string `json:"platform"`
	Process  map[string]any    `json:"process"`
	Root     map[string]any    `json:"root"`
	Hostname string            `json:"hostname"`
	Mounts   []any             `json:"mounts"`
	Linux    map[string]any    `json:"linux"`
}

func writeBundle(dir, cgroupsPath string, kernel int64) error {
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"dev", "proc", "sys", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return err
		}
	}
	if err := writeExecutable(filepath.Join(rootfs, "init"), initCode); err != nil {
		return err
	}
	mem := map[string]any{"limit": runMemoryLimit}
	if kernel != 0 {
		mem["kernel"] = kernel
	}
	cfg := bundleConfig{
		OCIVersion: "1.0.0",
		Platform:   map[string]string{"os": "linux", "arch": "amd64"},
		Process: map[string]any{
			"terminal": false, "user": map[string]any{"uid": 0, "gid": 0},
			"args": []string{"/init"}, "env": []string{"PATH=/"}, "cwd": "/",
			"noNewPrivileges": true,
		},
		Root:     map[string]any{"path": "rootfs", "readonly": true},
		Hostname: "nokmem-verify",
		Mounts: []any{
			map[string]any{"destination": "/proc", "type": "proc", "source": "proc"},
		},
		Linux: map[string]any{
			"cgroupsPath": cgroupsPath,
			"resources":   map[string]any{"memory": mem},
			"namespaces": []any{
				map[string]string{"type": "pid"}, map[string]string{"type": "ipc"},
				map[string]string{"type": "uts"}, map[string]string{"type": "mount"},
			},
		},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
}

// runOnce runs `binary run` once on a fresh bundle with the 64 MiB memory
// limit (and, when kernel is not 0, a kernel-memory limit), under both
// detectors, and removes its container, cgroups and files afterwards,
// also when it fails or ctx is cancelled. err is a failure of the verifier
// itself; how the binary fared is in the result.
func runOnce(ctx context.Context, binary, mount string, kernel int64, opt DynamicOptions) (*RunResult, error) {
	id := ownedName("nokmem-verify-")
	rr := &RunResult{Name: "memory-limit", CgroupPath: "/" + id, KernelLimit: kernel}
	if kernel != 0 {
		rr.Name = "kernel-memory-limit"
	}
	tmp, err := os.MkdirTemp(opt.TempDir, ownedTempPattern("nokmem-bundle-"))
	if err != nil {
		return nil, err
	}
	bundle, state := filepath.Join(tmp, "bundle"), filepath.Join(tmp, "state")
	cgDir := filepath.Join(mount, id)
	defer func() {
		// Not ctx: cleanup must also happen after a cancellation.
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		exec.CommandContext(cctx, binary, "--root", state, "delete", "--force", id).Run()
		removeCgroupEverywhere(id)
		os.RemoveAll(tmp)
	}()
	if err := writeBundle(bundle, rr.CgroupPath, kernel); err != nil {
		return nil, err
	}
	out, err := os.Create(filepath.Join(tmp, "output"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	fan, err := startFan(mount, opt)
	if err != nil {
		return nil, err
	}
	if fan != nil {
		defer fan.close()
		fan.collect(func(p string) bool { return strings.Contains(p, "/"+id+"/") })
	}
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer stdinW.Close()
	cmd := exec.Command(binary, "--root", state, "--log", filepath.Join(tmp, "log.json"), "run", "--bundle", bundle, id)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdinR, out, out
	cmd.Dir = bundle
	start := time.Now()
	ready := make(chan struct{})
	done := make(chan struct{})
	var (
		events   []Event
		end      runEnd
		traceErr error
	)
	go func() {
		defer close(done)
		events, end, traceErr = traceIfEnabled(ctx, cmd, opt, start.Add(opt.Timeout), ready)
	}()
	<-ready
	stdinR.Close()
	opt.at("run-started:" + rr.Name)
	// The container's /init waits on stdin, so the container (and its
	// cgroup) lives until stdin is closed: look at the cgroup meanwhile.
	observe(ctx, rr, cgDir, start.Add(opt.Timeout*4/5), done)
	stdinW.Close()
	<-done
	if fan != nil {
		fe, err := fan.stop()
		rr.UnresolvedFanotify = fan.unopenable
		if err != nil {
			return nil, err
		}
		events = append(events, fe...)
	}
	if traceErr != nil {
		return nil, traceErr
	}
	rr.Events = events
	end.record(rr)
	output, _ := os.ReadFile(out.Name())
	rr.Output = tail(string(output)+readLog(filepath.Join(tmp, "log.json")), 2000)
	if kernel != 0 {
		rr.Reaction = reaction(rr)
	}
	if rr.Slabinfo == "readable" {
		rr.Events = append(rr.Events, Event{Detector: "slabinfo", Syscall: "kernel state", Path: filepath.Join(cgDir, "memory.kmem.slabinfo")})
	}
	return rr, nil
}

// observe watches the run's memory cgroup until it holds a process and the
// bundle's memory limit, or the run ends, ctx is cancelled or until passes.
// runc joins the container's process to the cgroup (Apply) before it writes
// the limits (Set), so the limit read as soon as the cgroup has a process is
// still the unlimited default: keep reading until it is the requested one.
func observe(ctx context.Context, rr *RunResult, cgDir string, until time.Time, done <-chan struct{}) {
	want := strconv.Itoa(runMemoryLimit)
	for time.Now().Before(until) {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
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
// detectors and removes its cgroups and files afterwards.
func runProbe(ctx context.Context, probe, mount string, opt DynamicOptions) (*RunResult, error) {
	id := ownedName("nokmem-verify-")
	rr := &RunResult{Name: "kubelet-probe", CgroupPath: "/" + id}
	tmp, err := os.MkdirTemp(opt.TempDir, ownedTempPattern("nokmem-bundle-"))
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	defer removeCgroupEverywhere(id)
	out, err := os.Create(filepath.Join(tmp, "output"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	fan, err := startFan(mount, opt)
	if err != nil {
		return nil, err
	}
	if fan != nil {
		defer fan.close()
		fan.collect(func(p string) bool { return strings.Contains(p, "/"+id+"/") })
	}
	cmd := exec.Command(probe, rr.CgroupPath)
	cmd.Stdout, cmd.Stderr = out, out
	ready := make(chan struct{})
	done := make(chan struct{})
	var (
		events   []Event
		end      runEnd
		traceErr error
	)
	go func() {
		defer close(done)
		events, end, traceErr = traceIfEnabled(ctx, cmd, opt, time.Now().Add(opt.Timeout), ready)
	}()
	<-ready
	opt.at("run-started:" + rr.Name)
	<-done
	cgDir := filepath.Join(mount, id)
	// The probe calls Apply(-1): the cgroup stays until we remove it.
	rr.CgroupCreated = exists(cgDir)
	if kernelBefore4(kernelRelease()) && rr.CgroupCreated {
		rr.Slabinfo = slabinfoState(cgDir)
	}
	if fan != nil {
		fe, err := fan.stop()
		rr.UnresolvedFanotify = fan.unopenable
		if err != nil {
			return nil, err
		}
		events = append(events, fe...)
	}
	if traceErr != nil {
		return nil, traceErr
	}
	if rr.Slabinfo == "readable" {
		events = append(events, Event{Detector: "slabinfo", Syscall: "kernel state", Path: filepath.Join(cgDir, "memory.kmem.slabinfo")})
	}
	rr.Events = events
	end.record(rr)
	output, _ := os.ReadFile(out.Name())
	rr.Output = tail(string(output), 2000)
	return rr, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
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
