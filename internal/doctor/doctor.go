// Package doctor diagnoses a node for the cgroup v1 kernel-memory leak of
// CentOS 7 / RHEL 7 kernels and answers four questions with the evidence:
// is the node exposed, where is kmem accounting on, is it leaking memory
// cgroup IDs, and is the fix (a nokmem runc and kubelet) in place.
//
// It only reads: files under a root directory that stands in for the
// node's "/" (the node itself, a fixture, or the host paths a DaemonSet
// mounts), the kernel log and the journal. It never writes to the node
// and never runs the binaries it judges; the static verifier reads them.
// See docs/doctor.md.
package doctor

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nokmem/nokmem/verify"
)

// Options are the doctor's seams; the zero value diagnoses this machine.
type Options struct {
	// Root stands in for the node's "/" (default "/").
	Root string
	// ReadFile reads a file by its path on this machine (Root joined).
	// Default os.ReadFile; tests make memory.kmem.slabinfo fail with EIO.
	ReadFile func(path string) ([]byte, error)
	// Logs are read for leak evidence; nil means DefaultLogs(Root), an
	// empty slice none.
	Logs []LogSource
	// Static is the static verifier (default verify.Static).
	Static func(path string) (*verify.StaticResult, error)
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Location is the zone of syslog timestamps without one; nil means
	// the node's /etc/localtime, else this machine's zone.
	Location *time.Location
	// MaxCgroups bounds the walk (default 200000).
	MaxCgroups int
	// Hostname names the node in the report; empty means the node's
	// /proc/sys/kernel/hostname, which in a container is the container's.
	Hostname string
}

// Run diagnoses the node. Its error is only for a root that cannot be a
// node; everything the doctor cannot read is in the report's Problems.
func Run(ctx context.Context, opt Options) (*Report, error) {
	if opt.Root == "" {
		opt.Root = "/"
	}
	if fi, err := os.Stat(opt.Root); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("root %s is not a directory", opt.Root)
	}
	if opt.ReadFile == nil {
		opt.ReadFile = os.ReadFile
	}
	if opt.Static == nil {
		opt.Static = verify.Static
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Logs == nil {
		opt.Logs = DefaultLogs(opt.Root)
	}
	n := &node{root: opt.Root, readFile: opt.ReadFile}
	loc := opt.Location
	if loc == nil {
		loc = time.Local
		if b, err := n.readConfig("/etc/localtime"); err == nil {
			if l, err := time.LoadLocationFromTZData("node", b); err == nil {
				loc = l
			}
		}
	}
	now := opt.Now()
	r := &Report{Schema: Schema, Time: now.UTC(), Root: opt.Root, Reasons: []string{}, NextSteps: []string{}}
	r.Hostname = opt.Hostname
	if b, err := n.read("/proc/sys/kernel/hostname"); err == nil && r.Hostname == "" {
		r.Hostname = strings.TrimSpace(string(b))
	}

	var f facts
	r.Exposure, f = n.exposure()
	w := n.walkKmem(ctx, f.memDir, r.Exposure.KmemModel, opt.MaxCgroups)
	r.Kmem = w.kmem
	checkNokmem(&r.Exposure, r.Kmem, f.kernel)
	r.Leak = n.leak(ctx, r.Exposure, f, w, opt.Logs, now, loc)

	procs := n.processes()
	r.Fix = Fix{Docker: n.dockerDaemons(procs, r.Exposure.CgroupMode == "v2"), Containerd: n.containerdDaemons(procs), Kubelet: n.kubelet(procs), Why: []string{}, Binaries: []Binary{}}
	if r.Fix.Docker == nil {
		r.Fix.Docker = []Daemon{}
	}
	if r.Fix.Containerd == nil {
		r.Fix.Containerd = []Daemon{}
	}
	n.binaries(&r.Fix, opt.Static)
	judgeFix(&r.Fix, r.Exposure.Exposed)

	if err := ctx.Err(); err != nil {
		n.problem("interrupted: %v", err)
	}
	r.Problems = append([]string{}, n.problems...)
	decide(r)
	return r, nil
}

// checkNokmem lets the walk overrule the kernel version: with
// cgroup.memory=nokmem honoured, no cgroup can have kmem accounting on.
func checkNokmem(e *Exposure, k Kmem, kv kernelVersion) {
	if !e.NokmemParam || e.KmemModel == modelAlways || e.KmemModel == modelNone || k.Active == 0 {
		return
	}
	e.NokmemHonoured = "no"
	e.NokmemEvidence = fmt.Sprintf("cgroup.memory=nokmem is set, yet %d cgroups have kmem accounting on: this kernel ignores it", k.Active)
	if e.KmemModel == modelOff {
		e.KmemModel = modelOptIn
		e.Exposed, e.Why = exposed(*e, kv)
	}
}

// decide sets the status, its reasons and the next steps.
func decide(r *Report) {
	e, fix := r.Exposure, r.Fix
	reason := func(format string, a ...any) { r.Reasons = append(r.Reasons, fmt.Sprintf(format, a...)) }
	step := func(format string, a ...any) { r.NextSteps = append(r.NextSteps, fmt.Sprintf(format, a...)) }
	installSteps := func() {
		defer func() {
			switch {
			case e.KernelFamily != "el7" || e.NokmemHonoured == "yes":
			case parseKernel(e.Kernel).ELRelease >= el7NokmemRelease:
				step("or boot with cgroup.memory=nokmem: this kernel honours it (EL7 from 3.10.0-%d, RHEL 7.7)", el7NokmemRelease)
			default:
				step("or update the kernel to RHEL 7.7's 3.10.0-%d or later and boot with cgroup.memory=nokmem, which those kernels honour", el7NokmemRelease)
			}
		}()
		for _, b := range fix.Binaries {
			if !b.Risk {
				continue
			}
			if contains(b.Roles, roleKubelet) {
				step("replace the kubelet %s with a nokmem build (the kubelet package from the nokmem mirror, or go tool mage build:kubelet <version>), then restart it", b.Path)
			} else {
				step("install runc-nokmem and make it the default instead of %s (%s): yum install runc-nokmem; nokmem runtime docker --default, or nokmem runtime containerd --default for the CRI", b.Path, strings.Join(b.Roles, ", "))
			}
		}
	}

	switch {
	case r.Leak.Verdict == "leaking":
		r.Status = StatusLeaking
		for _, w := range r.Leak.Why {
			reason("%s", w)
		}
		if e.Exposed {
			installSteps()
			step("drain the node and reboot it: leaked memory cgroup IDs are freed only by a reboot")
		} else {
			step("the memory cgroup IDs are used up, but not by the kmem-accounting leak nokmem fixes: find what keeps removed cgroups alive (page cache charged to them), drain the node and reboot it")
		}
	case e.MemoryController == "unknown" || e.KmemModel == modelUnknown:
		r.Status = StatusUnknown
		reason("the node's cgroup layout or kernel version could not be read")
		step("see the problems below: run as root on the node, or mount the host's /proc and /sys/fs/cgroup into the doctor's root")
	case !e.Exposed:
		r.Status = StatusOK
		reason("not exposed: %s", e.Why)
		step("nothing to do on this node")
	default:
		risk := false
		if r.Kmem.Active > 0 {
			risk = true
			top := ""
			if len(r.Kmem.Top) > 0 {
				top = fmt.Sprintf(" (e.g. %s: %s)", r.Kmem.Top[0].Path, r.Kmem.Top[0].Evidence)
			}
			reason("%d cgroups have kmem accounting on%s: each keeps its memcg ID after it is removed", r.Kmem.Active, top)
		}
		if z := r.Leak.Zombies; z != nil && *z > 0 {
			risk = true
			reason("%d removed cgroups still hold their memcg ID (below the %d that counts as leaking)", *z, zombieLeakThreshold)
		}
		if fix.InPlace == "no" {
			risk = true
		}
		for _, w := range fix.Why {
			reason("%s", w)
		}
		switch {
		case risk:
			r.Status = StatusAtRisk
			installSteps()
			if r.Kmem.Active > 0 {
				step("the %d cgroups with kmem accounting on leak their IDs when removed whatever runs next: after the fix, restart their pods (or reboot) to create them again without it", r.Kmem.Active)
			}
		case fix.InPlace == "unknown" && fix.Kubelet != nil && fix.Kubelet.Replaced:
			r.Status = StatusUnknown
			reason("exposed, and the running kubelet is not the file on disk")
			step("restart the kubelet (systemctl restart kubelet) so that %s is what runs", fix.Kubelet.Path)
		case fix.InPlace == "unknown":
			r.Status = StatusUnknown
			reason("exposed, and no cgroup has kmem accounting on yet, but it cannot be told whether the runc and kubelet in use keep it off")
			for _, b := range fix.Binaries {
				if b.InUse && b.CgroupDriver != driverSystemd && b.Verdict != "nokmem" && b.Verdict != "no-kmem-code" {
					kind := "runc"
					if contains(b.Roles, roleKubelet) {
						kind = "kubelet"
					}
					step("check %s by running it: nokmem verify %s %s (the dynamic check; root on the node)", b.Path, kind, b.Path)
				}
			}
		default:
			r.Status = StatusOK
			reason("exposed, but the fix is in place and no cgroup has kmem accounting on")
			step("nothing to do on this node")
		}
	}
	if e.NokmemParam && e.NokmemHonoured != "yes" && e.KernelFamily == "el7" {
		step("cgroup.memory=nokmem is on the command line, but %s", e.NokmemEvidence)
	}
	if len(r.Problems) > 0 && r.Status != StatusUnknown {
		step("%d things could not be read (see problems); the verdict rests on the rest", len(r.Problems))
	}
	r.ExitCode = r.Status.ExitCode()
}
