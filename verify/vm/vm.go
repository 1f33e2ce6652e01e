// Package vm runs the dynamic check inside a throwaway VM: QEMU boots a
// kernel of the user's choice (NOKMEM_VM_KERNEL, or a Debian/Ubuntu kernel
// from /boot) with an initramfs whose /init is the verifier itself
// (verify/guest, built static from this tree) and which holds the binaries
// to check. The guest mounts the memory controller as cgroup v1, runs the
// same check as a host (self-test, both detectors, real runc lifecycles),
// reports on a serial port and powers off. It needs no root and no cgroup
// v1 on the host, leaves nothing behind there (no cgroups; the initramfs
// and the report live in memory-backed files; QEMU dies with this process),
// and lets the proof run on the kernel the fleet runs (an EL7 3.10).
//
// With a CacheDir, the first check boots a template guest that waits for
// its job, saves it as a snapshot (snapshot.go, warm.go), and every later
// check restores that snapshot and sends the job through a shared-memory
// channel instead of booting: 0.1 s instead of about 3 s under TCG.
package vm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/nokmem/nokmem/internal/digest"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nokmem/nokmem/internal/owner"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/verify"
	"github.com/nokmem/nokmem/verify/guest"
)

// Defaults.
const (
	// DefaultTimeout bounds one boot: kernel, self-test and two runs per
	// binary, under TCG emulation on a small machine.
	DefaultTimeout = 5 * time.Minute
	// MemoryMiB and CPUs size the guest.
	MemoryMiB = 512
	CPUs      = 2
	// QEMU is the emulator it runs.
	QEMU = "qemu-system-x86_64"
)

// Verifier verifies binaries with the dynamic check made in a VM. It
// satisfies the pipeline's Verifier interface (Verify).
type Verifier struct {
	// Runner builds the guest's /init (go build).
	Runner run.Runner
	// Root is the nokmem source tree (verify/cmd/nokmem-vm-init).
	Root string
	// Kernel is NOKMEM_VM_KERNEL; "" picks one from /boot (FindKernel).
	Kernel string
	// Timeout is the time limit of one check (NOKMEM_VM_TIMEOUT; 0:
	// DefaultTimeout). A VM still running then is killed and the check
	// fails.
	Timeout time.Duration
	// RunTimeout bounds each run of a binary in the guest (0: the
	// verifier's default).
	RunTimeout time.Duration
	// Append adds words to the kernel command line (later words override
	// earlier ones: e.g. cgroup_no_v1=memory).
	Append []string
	// TempDir is where /init is built (default os.TempDir()); the build
	// directory is removed at once.
	TempDir string
	// Console, if set, receives the guest's console as it runs.
	Console io.Writer
	// Init is a prebuilt /init (verify/cmd/nokmem-vm-init built static);
	// empty: built from Root on first use.
	Init string
	// CacheDir holds the snapshots of booted guests (snapshot.go): a check
	// restores one instead of booting. Empty: every check boots.
	CacheDir string

	launcher launcher
	qemu     string // tests: the emulator's path, instead of QEMU in PATH
	// kvmFailed remembers that QEMU failed with KVM: later boots go
	// straight to TCG.
	kvmFailed atomic.Bool
	initOnce  sync.Mutex
	initData  []byte
}

// Binary is one binary to check in a boot.
type Binary struct {
	// Name is its name in the guest (unique within a boot).
	Name string
	Path string
	// Kind is guest.KindRunc or guest.KindProbe.
	Kind string
	// Disable switches detectors off (for tests of the self-test).
	Disable []string
	// Lifecycles is how many lifecycles a guest.KindLeak binary runs.
	Lifecycles int
}

// Boot is what one VM run gave.
type Boot struct {
	Kernel Kernel
	Accel  string // kvm or tcg
	// How is "booted", "booted and saved as a snapshot" or "restored from
	// a snapshot".
	How     string
	Args    []string
	Result  *guest.Result
	Console string        // the last part of the console
	Wall    time.Duration // from QEMU's start to its exit
	Notes   []string
}

// Verify implements the pipeline's Verifier: verify.Verify with the dynamic
// check made in a VM.
func (v *Verifier) Verify(ctx context.Context, binary string, opt verify.Options) (*verify.Report, error) {
	return verify.VerifyWith(ctx, binary, opt, func(ctx context.Context, kind, bin string) (*verify.DynamicResult, error) {
		b := Binary{Name: filepath.Base(bin), Path: bin, Kind: guest.KindRunc, Disable: opt.Disable}
		if kind == "probe" {
			b.Kind = guest.KindProbe
		}
		boot, err := v.Check(ctx, []Binary{b})
		if err != nil {
			return nil, err
		}
		d := boot.Result.Items[0].Dynamic
		d.Reason += fmt.Sprintf(" (in a VM: kernel %s, %s, %s)", boot.Result.Caps.Kernel, boot.Accel, boot.How)
		for _, n := range boot.Notes {
			d.Reason += "; " + n
		}
		return d, nil
	})
}

// Check boots one VM that checks every binary in bins, in order, and
// returns its results. err means the check could not be made: no QEMU or
// kernel, a kernel unfit for it (with what it lacks), a guest that did not
// power off within the time limit (killed), a missing or damaged report.
func (v *Verifier) Check(ctx context.Context, bins []Binary) (*Boot, error) {
	return v.boot(ctx, bins, false)
}

// SelfTest boots a VM that reports what its kernel offers and runs the
// detectors' self-test (a canary's write in a scratch cgroup) there; it
// fails unless both detectors saw the write.
func (v *Verifier) SelfTest(ctx context.Context) (*Boot, error) {
	boot, err := v.boot(ctx, nil, true)
	if err != nil {
		return boot, err
	}
	if len(boot.Result.SelfTest) != len(verify.Detectors) {
		return boot, fmt.Errorf("vm: the guest ran no self-test")
	}
	for _, c := range boot.Result.SelfTest {
		if !c.Caught {
			return boot, fmt.Errorf("vm: the %s detector did not see the canary's write in the guest (kernel %s)", c.Detector, boot.Result.Caps.Kernel)
		}
	}
	return boot, nil
}

// Leak boots one VM that runs n untraced runc lifecycles of each binary (an
// artifact and a default build, say), counting the memory cgroups before
// and after (guest.LeakResult): the leak reproducer. Only a kernel that
// leaks, such as EL7's 3.10, shows a difference (docs/vm.md).
func (v *Verifier) Leak(ctx context.Context, bins []Binary, n int) (*Boot, error) {
	if n <= 0 {
		return nil, fmt.Errorf("vm: the leak reproducer needs at least one lifecycle")
	}
	leakBins := make([]Binary, len(bins))
	for i, b := range bins {
		b.Kind, b.Lifecycles = guest.KindLeak, n
		leakBins[i] = b
	}
	return v.boot(ctx, leakBins, false)
}

func (v *Verifier) boot(ctx context.Context, bins []Binary, selfTest bool) (*Boot, error) {
	qemu := v.qemu
	if qemu == "" {
		var err error
		if qemu, err = exec.LookPath(QEMU); err != nil {
			return nil, fmt.Errorf("vm: %s not found: %s", QEMU, InstallHint)
		}
	}
	k, err := FindKernel(v.Kernel, "/boot")
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	boot := &Boot{Kernel: k}
	reapOwned(v.tempDir(), buildPrefix)
	initBin, err := v.guestInit(ctx)
	if err != nil {
		return nil, err
	}
	seed := make([]byte, 32)
	rand.Read(seed)
	job := guest.Job{Nonce: nonce(), RunTimeout: v.RunTimeout, Items: []guest.Item{}, SelfTest: selfTest, Now: time.Now(), Seed: seed}
	limit := v.timeout()
	// The guest stops by itself a little before the host's limit, so that
	// its report (the runs cancelled) still gets out.
	job.Deadline = limit - min(limit/5, 30*time.Second)
	var files []file
	seen := map[string]bool{"/init": true}
	for _, b := range bins {
		if b.Name == "" || strings.ContainsRune(b.Name, '/') || seen["bin/"+b.Name] {
			return nil, fmt.Errorf("vm: bad or duplicate binary name %q", b.Name)
		}
		seen["bin/"+b.Name] = true
		fs, err := binaryFiles(b.Path, guest.BinDir, b.Name)
		if err != nil {
			return nil, fmt.Errorf("vm: %s: %w", b.Path, err)
		}
		for _, f := range fs {
			if !seen[f.Name] {
				seen[f.Name] = true
				files = append(files, f)
			}
		}
		job.Items = append(job.Items, guest.Item{Name: b.Name, Kind: b.Kind, Disable: b.Disable, Lifecycles: b.Lifecycles})
	}
	jb, _ := json.Marshal(job)
	files = append(files, file{Name: guest.JobFile, Mode: 0o644, Data: jb})

	accels := []string{"tcg"}
	if !v.kvmFailed.Load() && KVMUsable() {
		accels = []string{"kvm", "tcg"}
	}
	var a *attempt
	for i, accel := range accels {
		boot.Accel = accel
		a, err = v.attempt(ctx, qemu, k, accel, "nokmem-verify-"+job.Nonce[:12], initBin, files, limit)
		if a != nil {
			boot.Args, boot.Console, boot.Wall, boot.How = a.args, a.console, a.wall, a.how
			for _, n := range a.notes {
				if !slices.Contains(boot.Notes, n) {
					boot.Notes = append(boot.Notes, n)
				}
			}
		}
		if err != nil {
			return boot, fmt.Errorf("vm: %w", err)
		}
		// /dev/kvm can open and still fail QEMU (nested virtualisation that
		// refuses the vCPU's MSRs, say): QEMU then ends at once, before
		// /init; boot again with TCG.
		if i < len(accels)-1 && !a.ex.TimedOut && !a.ex.Cancelled && !a.started() {
			boot.Notes = append(boot.Notes, "KVM did not work ("+a.ex.State+": "+firstLine(boot.Console)+"); booted with TCG")
			v.kvmFailed.Store(true)
			continue
		}
		break
	}
	ex := a.ex
	what := fmt.Sprintf("the VM (kernel %s, %s)", k.Path, boot.Accel)
	switch {
	case ex.Cancelled:
		return boot, fmt.Errorf("vm: cancelled (%v): %s was killed%s", context.Cause(ctx), what, consoleTail(boot.Console))
	case ex.TimedOut:
		return boot, fmt.Errorf("vm: %s did not power off within the time limit of %s (NOKMEM_VM_TIMEOUT) and was killed with its process group%s", what, limit, consoleTail(boot.Console))
	case !a.started():
		return boot, fmt.Errorf("vm: kernel %s did not start the verifier as /init (QEMU %s); it must boot an initramfs with rdinit=/init and print on ttyS0 (CONFIG_SERIAL_8250_CONSOLE)%s", k.Path, ex.State, consoleTail(boot.Console))
	}
	res, err := guest.ReadReport(a.report, job.Nonce)
	if errors.Is(err, guest.ErrNoReport) {
		// A waiting guest that could not take its job reports under the
		// template's nonce (its Error says why).
		if tres, terr := guest.ReadReport(a.report, guest.TemplateNonce); terr == nil && tres.Error != "" {
			res, err = tres, nil
		}
	}
	if err != nil {
		// A kernel without a second serial port: the console carries it.
		if cres, cerr := guest.ReadReport([]byte(boot.Console), job.Nonce); cerr == nil || errors.Is(err, guest.ErrNoReport) {
			res, err = cres, cerr
		}
	}
	if err != nil {
		return boot, fmt.Errorf("vm: %s ended (%s) without a usable report: %w%s", what, ex.State, err, consoleTail(boot.Console))
	}
	boot.Result = res
	if p := res.Caps.Problems(); len(p) > 0 {
		return boot, fmt.Errorf("vm: kernel %s (%s) cannot run the dynamic check: %s; %s", k.Path, res.Caps.Kernel, strings.Join(p, "; "), InstallHint)
	}
	if res.Error != "" {
		return boot, fmt.Errorf("vm: the guest failed: %s%s", res.Error, consoleTail(boot.Console))
	}
	if len(res.Items) != len(bins) {
		return boot, fmt.Errorf("vm: the guest checked %d of %d binaries%s", len(res.Items), len(bins), consoleTail(boot.Console))
	}
	for i, b := range bins {
		ir := res.Items[i]
		sum, err := digest.File(b.Path)
		if err != nil {
			return boot, fmt.Errorf("vm: %w", err)
		}
		if ir.Name != b.Name || ir.SHA256 != sum || (b.Kind == guest.KindLeak) != (ir.Leak != nil) || (b.Kind != guest.KindLeak) != (ir.Dynamic != nil) {
			return boot, fmt.Errorf("vm: the guest's result %d is for %s (sha256 %s), not for %s (sha256 %s)", i, ir.Name, ir.SHA256, b.Path, sum)
		}
	}
	return boot, nil
}

// attempt runs the job in one VM with accel: restored from a snapshot
// (warm) where it can, else booted with the job in its initramfs.
func (v *Verifier) attempt(ctx context.Context, qemu string, k Kernel, accel, name string, initBin []byte, files []file, limit time.Duration) (*attempt, error) {
	var notes []string
	if v.CacheDir != "" && v.launcher == nil {
		a, err := v.warm(ctx, qemu, k, accel, name, initBin, files, limit)
		if err == nil || ctx.Err() != nil {
			return a, err
		}
		if a != nil {
			notes = a.notes
		}
		notes = append(notes, "booted without a snapshot: "+err.Error())
	}
	a, err := v.cold(ctx, qemu, k, accel, name, initBin, files, limit)
	if a != nil {
		a.notes = append(notes, a.notes...)
	}
	return a, err
}

// cold boots a VM whose initramfs holds /init, the job and its files.
func (v *Verifier) cold(ctx context.Context, qemu string, k Kernel, accel, name string, initBin []byte, files []file, limit time.Duration) (*attempt, error) {
	initrd, err := memfd("nokmem-initramfs")
	if err != nil {
		return nil, err
	}
	defer initrd.Close()
	if err := writeInitramfs(initrd, append([]file{{Name: "/init", Mode: 0o755, Data: initBin}}, files...)); err != nil {
		return nil, err
	}
	reportFile, err := memfd("nokmem-report")
	if err != nil {
		return nil, err
	}
	defer reportFile.Close()
	a := &attempt{args: qemuArgs(qemu, name, k.Path, accel, v.Append), how: "booted"}
	// Room for a report on the console (a kernel without ttyS1).
	console := &tail{max: 8 << 20}
	var out io.Writer = console
	if v.Console != nil {
		out = io.MultiWriter(console, v.Console)
	}
	start := time.Now()
	a.ex, err = v.launch().launch(ctx, a.args, []*os.File{initrd, reportFile}, out, limit)
	a.wall, a.console = time.Since(start), console.String()
	if err != nil {
		return a, err
	}
	if a.report, err = readAll(reportFile); err != nil {
		return a, fmt.Errorf("report: %w", err)
	}
	return a, nil
}

// qemuArgs is the QEMU command line: no default devices, the console on
// the first serial port (stdout), the report on the second (descriptor
// 4), the initramfs from descriptor 3.
func qemuArgs(qemu, name, kernel, accel string, extra []string) []string {
	cpu := "max" // TCG: whatever the binary was built for (GOAMD64 up to v3)
	if accel == "kvm" {
		cpu = "host"
	}
	cmdline := append([]string{"console=ttyS0", "quiet", "panic=-1", "rdinit=/init"}, extra...)
	return []string{qemu,
		"-name", name,
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-accel", accel, "-cpu", cpu,
		"-m", strconv.Itoa(MemoryMiB), "-smp", strconv.Itoa(CPUs),
		"-kernel", kernel, "-initrd", "/dev/fd/3",
		"-append", strings.Join(cmdline, " "),
		"-serial", "stdio", "-serial", "file:/dev/fd/4",
		"-monitor", "none",
	}
}

func (v *Verifier) timeout() time.Duration {
	if v.Timeout > 0 {
		return v.Timeout
	}
	return DefaultTimeout
}

func (v *Verifier) tempDir() string {
	if v.TempDir != "" {
		return v.TempDir
	}
	return os.TempDir()
}

func (v *Verifier) launch() launcher {
	if v.launcher != nil {
		return v.launcher
	}
	return processLauncher{}
}

// guestInit returns the guest's /init: Init, or the verifier built static
// from Root (once per Verifier).
func (v *Verifier) guestInit(ctx context.Context) ([]byte, error) {
	v.initOnce.Lock()
	defer v.initOnce.Unlock()
	if v.initData != nil {
		return v.initData, nil
	}
	if v.Init != "" {
		b, err := os.ReadFile(v.Init)
		if err != nil {
			return nil, fmt.Errorf("vm: guest init: %w", err)
		}
		v.initData = b
		return b, nil
	}
	b, err := BuildInit(ctx, v.Runner, v.Root, v.tempDir())
	if err != nil {
		return nil, err
	}
	v.initData = b
	return b, nil
}

// InitPackage is the guest's /init.
const InitPackage = "./verify/cmd/nokmem-vm-init"

// BuildInit builds the guest's /init from the nokmem tree at root: static
// (CGO_ENABLED=0), for the oldest x86-64 (GOAMD64=v1, as EL7 nodes), in a
// directory of tmpDir that is removed before it returns.
func BuildInit(ctx context.Context, r run.Runner, root, tmpDir string) ([]byte, error) {
	if r == nil {
		r = run.Local{}
	}
	dir, err := os.MkdirTemp(tmpDir, buildPrefix+owner.Self().String()+"-")
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "init")
	if _, err := r.Run(ctx, run.Cmd{
		Args: []string{"go", "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", out, InitPackage},
		Dir:  root,
		Env:  []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOAMD64=v1", "GOFLAGS="},
	}); err != nil {
		return nil, fmt.Errorf("vm: build the guest's /init: %w", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	return b, nil
}

// Problem says why this machine cannot run the VM mode ("" if it can, as
// far as can be told without booting): QEMU and a kernel.
func Problem(kernelSetting string) string {
	if _, err := exec.LookPath(QEMU); err != nil {
		return QEMU + " not found (" + InstallHint + ")"
	}
	if _, err := FindKernel(kernelSetting, "/boot"); err != nil {
		return err.Error()
	}
	return ""
}

func nonce() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func readAll(f *os.File) ([]byte, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return io.ReadAll(f)
}

func firstLine(s string) string {
	s = strings.TrimSpace(strings.ReplaceAll(s, "\r", ""))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// ansi matches the terminal control sequences of SeaBIOS and the kernel.
var ansi = regexp.MustCompile(`\x1b(\[[0-9;?]*[A-Za-z]|c)`)

func consoleTail(console string) string {
	console = ansi.ReplaceAllString(console, "")
	lines := strings.Split(strings.TrimRight(strings.ReplaceAll(console, "\r", ""), "\n"), "\n")
	if len(lines) > 25 {
		lines = lines[len(lines)-25:]
	}
	s := strings.TrimSpace(strings.Join(lines, "\n"))
	if s == "" {
		return "; the console stayed empty"
	}
	return "; the console ended with:\n" + s
}

// tail keeps the last max bytes written to it; with watch set, it closes
// seen once watch has been written.
type tail struct {
	mu    sync.Mutex
	max   int
	buf   bytes.Buffer
	watch string
	seen  chan struct{}
	found bool
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(p)
	if t.watch != "" && !t.found {
		// The watched line may straddle writes: look at the new bytes and
		// what came just before them.
		b := t.buf.Bytes()
		from := max(0, len(b)-len(p)-len(t.watch))
		if bytes.Contains(b[from:], []byte(t.watch)) {
			t.found = true
			close(t.seen)
		}
	}
	if over := t.buf.Len() - t.max; over > 0 {
		t.buf.Next(over)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.String()
}
