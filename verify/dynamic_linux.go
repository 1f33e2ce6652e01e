package verify

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

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
	Name          string  `json:"name"`
	KernelLimit   int64   `json:"kernelLimit,omitempty"`
	CgroupPath    string  `json:"cgroupPath"`
	CgroupCreated bool    `json:"cgroupCreated"`
	MemoryLimit   string  `json:"memoryLimit,omitempty"`
	Slabinfo      string  `json:"slabinfo,omitempty"`
	Events        []Event `json:"events"`
	ExitError     string  `json:"exitError,omitempty"`
	Reaction      string  `json:"reaction,omitempty"`
	Output        string  `json:"output,omitempty"`
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
}

// Detectors are the independent write detectors.
var Detectors = []string{"ptrace", "fanotify"}

// DynamicOptions tune the dynamic check.
type DynamicOptions struct {
	// Disable switches detectors off; used to prove the self-test fails.
	Disable []string
	// TempDir holds bundles and state (default os.TempDir()).
	TempDir string
	// Timeout bounds one run (default 60s).
	Timeout time.Duration
}

// MemoryMount returns the mount point of the cgroup v1 memory hierarchy.
func MemoryMount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || len(fields) < sep+4 || fields[sep+1] != "cgroup" {
			continue
		}
		for _, o := range strings.Split(fields[sep+3], ",") {
			if o == "memory" {
				return fields[4], nil
			}
		}
	}
	return "", errors.New("no cgroup v1 memory hierarchy is mounted")
}

// HostProblem says why the dynamic check cannot run here ("" if it can).
func HostProblem() string {
	if os.Geteuid() != 0 {
		return "the dynamic check needs root"
	}
	m, err := MemoryMount()
	if err != nil {
		return err.Error() + " (cgroup v2-only hosts cannot run the kmem leak, nor this check)"
	}
	if _, err := os.Stat(filepath.Join(m, KmemFile)); err != nil {
		return "the memory hierarchy at " + m + " has no " + KmemFile + " (kernel built without kmem accounting, or Linux 6.1+)"
	}
	return ""
}

func randomName(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// KernelRelease returns uname -r.
func KernelRelease() string { return kernelRelease() }

func kernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// kernelBefore4 reports a kernel (like RHEL 7's 3.10) whose memcg exposes
// memory.kmem.slabinfo only while kmem accounting is active.
func kernelBefore4(rel string) bool {
	var major int
	fmt.Sscanf(rel, "%d.", &major)
	return major > 0 && major < 4
}

// SelfTest proves that every enabled detector sees a real write to the
// kmem file, made by a canary process in a scratch cgroup of our own.
func SelfTest(ctx context.Context, mount string, opt DynamicOptions) ([]DetectorCheck, error) {
	dir := filepath.Join(mount, randomName("nokmem-selftest-"))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("self-test cgroup: %w", err)
	}
	defer removeCgroup(dir)
	tmp, err := os.MkdirTemp(opt.TempDir, "nokmem-canary-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	canary := filepath.Join(tmp, "canary")
	if err := writeExecutable(canary, canaryCode); err != nil {
		return nil, err
	}
	fan, err := startFan(mount, opt)
	if err != nil {
		return nil, err
	}
	if fan != nil {
		defer fan.close()
	}
	inDir := func(p string) bool { return strings.HasPrefix(p, dir+"/") }
	if fan != nil {
		fan.collect(inDir)
	}
	cmd := exec.CommandContext(ctx, canary, dir)
	pt, runErr := traceIfEnabled(cmd, opt, time.Now().Add(30*time.Second), nil)
	if runErr != nil {
		return nil, fmt.Errorf("self-test canary failed to write %s: %v", filepath.Join(dir, KmemFile), runErr)
	}
	var fe []Event
	if fan != nil {
		if fe, err = fan.stop(); err != nil {
			return nil, err
		}
	}
	return []DetectorCheck{
		{Detector: "ptrace", Caught: len(pt) > 0 && !disabled(opt, "ptrace"), Events: pt},
		{Detector: "fanotify", Caught: len(fe) > 0 && !disabled(opt, "fanotify"), Events: fe},
	}, nil
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

// traceIfEnabled runs cmd under ptrace, or plainly when ptrace is disabled.
func traceIfEnabled(cmd *exec.Cmd, opt DynamicOptions, deadline time.Time, ready chan<- struct{}) ([]Event, error) {
	if ready == nil {
		ready = make(chan struct{})
	}
	if disabled(opt, "ptrace") {
		err := cmd.Start()
		close(ready)
		if err != nil {
			return nil, err
		}
		return nil, cmd.Wait()
	}
	type res struct {
		ev  []Event
		err error
	}
	ch := make(chan res, 1)
	go func() {
		ev, err := ptraceRun(cmd, deadline, ready)
		ch <- res{ev, err}
	}()
	r := <-ch
	return r.ev, r.err
}

// begin checks the host, fills in defaults and runs the self-test; ok is
// false when res already holds the final (unavailable or error) result.
func begin(ctx context.Context, opt DynamicOptions) (*DynamicResult, DynamicOptions, bool) {
	res := &DynamicResult{Kernel: kernelRelease()}
	if p := HostProblem(); p != "" {
		res.Status, res.Reason = DynUnavailable, p
		return res, opt, false
	}
	res.Mount, _ = MemoryMount()
	if opt.Timeout == 0 {
		opt.Timeout = 60 * time.Second
	}
	return res, opt, selfTestFirst(ctx, res, opt)
}

// selfTestFirst runs the self-test and reports an error result if a
// detector failed it.
func selfTestFirst(ctx context.Context, res *DynamicResult, opt DynamicOptions) bool {
	st, err := SelfTest(ctx, res.Mount, opt)
	res.SelfTest = st
	if err != nil {
		res.Status, res.Reason = DynError, "self-test: "+err.Error()
		return false
	}
	for _, d := range st {
		if !d.Caught {
			res.Status, res.Reason = DynError, "self-test: the "+d.Detector+" detector did not see the canary's write, so a pass would prove nothing on this host"
			return false
		}
	}
	return true
}

// DynamicProbe runs a kubelet probe: a program compiled from the same
// (patched) Kubernetes tree with the same tags, which creates a memory
// cgroup through the vendored libcontainer exactly as kubelet's cgroupfs
// driver creates QoS and pod cgroups (manager.Apply(-1) with a memory
// limit). Usage of the probe: probe <cgroupsPath>.
func DynamicProbe(ctx context.Context, probe string, opt DynamicOptions) *DynamicResult {
	res, opt, ok := begin(ctx, opt)
	if !ok {
		return res
	}
	id := randomName("nokmem-verify-")
	rr := RunResult{Name: "kubelet-probe", CgroupPath: "/" + id}
	defer removeCgroupEverywhere(id)
	fan, err := startFan(res.Mount, opt)
	if err != nil {
		res.Status, res.Reason = DynError, err.Error()
		return res
	}
	if fan != nil {
		defer fan.close()
		fan.collect(func(p string) bool { return strings.Contains(p, "/"+id+"/") })
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, probe, rr.CgroupPath)
	cmd.Stdout, cmd.Stderr = &out, &out
	events, runErr := traceIfEnabled(cmd, opt, time.Now().Add(opt.Timeout), nil)
	cgDir := filepath.Join(res.Mount, id)
	rr.CgroupCreated = exists(cgDir)
	if kernelBefore4(kernelRelease()) && rr.CgroupCreated {
		rr.Slabinfo = slabinfoState(cgDir)
	}
	if fan != nil {
		fe, err := fan.stop()
		rr.UnresolvedFanotify = fan.unopenable
		if err != nil {
			res.Status, res.Reason = DynError, err.Error()
			return res
		}
		events = append(events, fe...)
	}
	if rr.Slabinfo == "readable" {
		events = append(events, Event{Detector: "slabinfo", Syscall: "kernel state", Path: filepath.Join(cgDir, "memory.kmem.slabinfo")})
	}
	rr.Events = events
	rr.Output = tail(out.String(), 2000)
	if runErr != nil {
		rr.ExitError = runErr.Error()
	}
	res.Runs = append(res.Runs, rr)
	switch {
	case len(events) > 0:
		res.Status = DynFail
		res.Reason = fmt.Sprintf("kubelet probe: %d write(s) to %s observed (%s by pid %d)", len(events), KmemFile, events[0].Syscall, events[0].Pid)
	case runErr != nil || !rr.CgroupCreated:
		res.Status = DynError
		res.Reason = "the probe did not create its memory cgroup, so the kmem code path was not exercised: " + firstLine(rr.ExitError+" "+rr.Output)
	default:
		res.Status, res.Reason = DynPass, "the vendored libcontainer created a memory cgroup without writing "+KmemFile+"; both detectors passed the self-test"
	}
	return res
}

// DynamicRunc runs a runc binary's real lifecycle twice (memory limit only,
// then with a kernel-memory limit) and reports every write to the kmem file.
func DynamicRunc(ctx context.Context, binary string, opt DynamicOptions) *DynamicResult {
	res, opt, ok := begin(ctx, opt)
	if !ok {
		return res
	}
	mount := res.Mount
	for _, kernel := range []int64{0, 32 << 20} {
		rr, err := runOnce(ctx, binary, mount, kernel, opt)
		if err != nil {
			res.Status, res.Reason = DynError, err.Error()
			return res
		}
		res.Runs = append(res.Runs, *rr)
		if len(rr.Events) > 0 {
			res.Status = DynFail
			res.Reason = fmt.Sprintf("%s run: %d write(s) to %s observed (%s by pid %d)", rr.Name, len(rr.Events), KmemFile, rr.Events[0].Syscall, rr.Events[0].Pid)
			return res
		}
		if kernel == 0 && !rr.CgroupCreated {
			res.Status = DynError
			res.Reason = "the binary never created its memory cgroup, so the run did not exercise the kmem code path: " + firstLine(rr.ExitError+" "+rr.Output)
			return res
		}
	}
	res.Status, res.Reason = DynPass, "no write to "+KmemFile+" in either run; both detectors passed the self-test"
	return res
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
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
	mem := map[string]any{"limit": 64 << 20}
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

func runOnce(ctx context.Context, binary, mount string, kernel int64, opt DynamicOptions) (*RunResult, error) {
	id := randomName("nokmem-verify-")
	rr := &RunResult{Name: "memory-limit", CgroupPath: "/" + id, KernelLimit: kernel}
	if kernel != 0 {
		rr.Name = "kernel-memory-limit"
	}
	tmp, err := os.MkdirTemp(opt.TempDir, "nokmem-bundle-")
	if err != nil {
		return nil, err
	}
	bundle, state := filepath.Join(tmp, "bundle"), filepath.Join(tmp, "state")
	cgDir := filepath.Join(mount, id)
	defer func() {
		c := exec.Command(binary, "--root", state, "delete", "--force", id)
		c.Run()
		removeCgroupEverywhere(id)
		os.RemoveAll(tmp)
	}()
	if err := writeBundle(bundle, rr.CgroupPath, kernel); err != nil {
		return nil, err
	}
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
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, binary, "--root", state, "--log", filepath.Join(tmp, "log.json"), "run", "--bundle", bundle, id)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdinR, &out, &out
	cmd.Dir = bundle
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	ready := make(chan struct{})
	done := make(chan struct{})
	var events []Event
	var runErr error
	go func() {
		defer close(done)
		events, runErr = traceIfEnabled(cmd, opt, time.Now().Add(opt.Timeout), ready)
	}()
	<-ready
	stdinR.Close()
	// While the container waits on stdin, look at its memory cgroup.
	deadline := time.Now().Add(opt.Timeout)
poll:
	for time.Now().Before(deadline) {
		select {
		case <-done:
			break poll
		case <-time.After(20 * time.Millisecond):
		}
		procs, err := os.ReadFile(filepath.Join(cgDir, "cgroup.procs"))
		if err != nil || len(bytes.TrimSpace(procs)) == 0 {
			continue
		}
		rr.CgroupCreated = true
		if b, err := os.ReadFile(filepath.Join(cgDir, "memory.limit_in_bytes")); err == nil {
			rr.MemoryLimit = strings.TrimSpace(string(b))
		}
		if kernelBefore4(kernelRelease()) {
			rr.Slabinfo = slabinfoState(cgDir)
		}
		break
	}
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
	rr.Events = events
	if runErr != nil {
		rr.ExitError = runErr.Error()
	}
	rr.Output = tail(out.String()+readLog(filepath.Join(tmp, "log.json")), 2000)
	if kernel != 0 {
		switch {
		case runErr != nil && strings.Contains(rr.Output, "kernel memory accounting disabled"):
			rr.Reaction = "refused: kernel memory accounting disabled in this runc build"
		case runErr != nil:
			rr.Reaction = "failed: " + firstLine(rr.Output)
		default:
			rr.Reaction = "accepted (the kernel-memory limit was ignored or applied)"
		}
	}
	if rr.Slabinfo == "readable" {
		rr.Events = append(rr.Events, Event{Detector: "slabinfo", Syscall: "kernel state", Path: filepath.Join(cgDir, "memory.kmem.slabinfo")})
	}
	return rr, nil
}

// slabinfoState: on Linux < 4.0, memory.kmem.slabinfo fails with EIO
// unless kmem accounting was activated for the cgroup.
func slabinfoState(cg string) string {
	f, err := os.Open(filepath.Join(cg, "memory.kmem.slabinfo"))
	if err != nil {
		return "absent"
	}
	defer f.Close()
	_, err = f.Read(make([]byte, 256))
	switch {
	case errors.Is(err, syscall.EIO):
		return "EIO (kmem accounting inactive)"
	case err == nil || err == io.EOF:
		return "readable"
	}
	return "error: " + err.Error()
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

// removeCgroup removes a cgroup directory (and empty children).
func removeCgroup(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			removeCgroup(filepath.Join(dir, e.Name()))
		}
	}
	for i := 0; i < 50; i++ {
		if err := unix.Rmdir(dir); err == nil || errors.Is(err, unix.ENOENT) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// removeCgroupEverywhere removes /<name> from every cgroup v1 hierarchy.
func removeCgroupEverywhere(name string) {
	mounts, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, m := range mounts {
		if p := filepath.Join(m, name); exists(p) {
			removeCgroup(p)
		}
	}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }
