// Package verify proves whether a runc or kubelet binary can turn on
// cgroup v1 kernel-memory accounting, i.e. write memory.kmem.limit_in_bytes.
//
// Two kinds of evidence are combined. Static checks read the binary (Go
// build info, strings that only one variant contains, the Go symbol table)
// and need no privileges. The dynamic check runs the binary's real
// lifecycle on a cgroup v1 host and watches, with two independent detectors,
// for any write to the file. A pass needs positive static evidence and, by
// default, a dynamic run whose detectors passed their self-test; "no signal"
// is never a pass.
package verify

import (
	"context"
	"fmt"
	"strings"

	"github.com/nokmem/nokmem/verify/target"
)

// Verdict classifies a binary.
type Verdict string

const (
	NoKmem      Verdict = "nokmem"       // kmem code present and disabled
	KmemEnabled Verdict = "kmem-enabled" // can write memory.kmem.limit_in_bytes
	NoKmemCode  Verdict = "no-kmem-code" // the libcontainer in it has no kmem code
	Unknown     Verdict = "unknown"
)

// ReportSchema identifies the report format.
const ReportSchema = "nokmem.verify/v1"

// Report is the verification result saved as verify.json.
type Report struct {
	Schema  string         `json:"schema"`
	Project string         `json:"project"`
	Binary  string         `json:"binary"`
	SHA256  string         `json:"sha256"`
	Verdict Verdict        `json:"verdict"`
	Passed  bool           `json:"passed"`
	Static  *StaticResult  `json:"static"`
	Dynamic *DynamicResult `json:"dynamic"`
	// Target is the gate "can this binary start on the target's nodes".
	Target  *target.Result `json:"target,omitempty"`
	Reasons []string       `json:"reasons"`
}

// KmemFile is the cgroup v1 file whose first write turns kernel-memory
// accounting on for a memory cgroup.
const KmemFile = "memory.kmem.limit_in_bytes"

// Options tune Verify.
type Options struct {
	Project string // "runc" or "kubelet"
	// Dynamic is "auto" (run where the host allows it), "require" (fail if
	// it cannot run) or "off".
	Dynamic string
	// AllowStaticOnly lets positive static evidence pass when the dynamic
	// check cannot run on this host. The report says so.
	AllowStaticOnly bool
	// Probe is, for kubelet, the kmem probe built from the same tree (see
	// DynamicProbe); without it kubelet has no dynamic check.
	Probe string
	// Target names the nodes the binary is for (see verify/target); empty
	// skips the gate.
	Target string
	// SelfContained requires the binary to start in an empty root (what
	// nokmem builds); without it a dynamic binary whose libraries and
	// symbol versions the target has (a distribution's runc) passes the
	// gate on the ELF reading, since no empty root can show it starting.
	SelfContained bool
	DynamicOptions
}

// Verify checks one binary, with the dynamic check made in this process.
func Verify(ctx context.Context, path string, opt Options) (*Report, error) {
	return VerifyWith(ctx, path, opt, func(ctx context.Context, kind, binary string) (*DynamicResult, error) {
		if kind == "probe" {
			return DynamicProbe(ctx, binary, opt.DynamicOptions), nil
		}
		return DynamicRunc(ctx, binary, opt.DynamicOptions), nil
	})
}

// ApplyTarget checks that the binary can start on the nodes of opt.Target:
// the ELF reading, then the proof by running --version in an empty root. A
// binary that misses its target is not a pass, whatever else it proves.
func (r *Report) ApplyTarget(ctx context.Context, path string, opt Options) error {
	tg, err := target.Lookup(opt.Target)
	if err != nil {
		return err
	}
	res, err := target.Check(path, tg)
	if err != nil {
		return err
	}
	res.EmptyRoot = target.RunEmptyRoot(ctx, path, opt.TempDir, "--version")
	r.Target = res
	if !res.OK {
		r.Passed = false
		for _, p := range res.Problems {
			r.Reasons = append(r.Reasons, "target "+tg.Name+": "+p)
		}
	}
	run := strings.Join(res.EmptyRoot.Args, " ")
	switch e := res.EmptyRoot; {
	case e.Status == target.EmptyRootOK:
		r.Reasons = append(r.Reasons, "target "+tg.Name+": "+run+" ran in an empty root directory (no libc, no /lib)")
	case opt.SelfContained && res.Linkage != "static":
		r.Passed = false
		r.Reasons = append(r.Reasons, "target "+tg.Name+": the binary is dynamically linked ("+strings.Join(res.Needed, " ")+"); nokmem ships self-contained binaries, built static")
	case e.Status == target.EmptyRootUnavailable:
		r.Reasons = append(r.Reasons, "target "+tg.Name+": the empty-root run could not be made here ("+e.Error+"); the ELF reading stands alone")
	case res.Linkage == "dynamic" && res.OK:
		r.Reasons = append(r.Reasons, "target "+tg.Name+": dynamically linked, so "+run+" cannot start in an empty root (expected); the ELF reading decides: every library and glibc symbol version it needs is on "+tg.Name)
	default:
		r.Passed = false
		r.Reasons = append(r.Reasons, "target "+tg.Name+": "+run+" failed in an empty root directory: "+e.Error)
	}
	return nil
}

func (r *Report) decide(opt Options) {
	staticGood := r.Static.Verdict == NoKmem || r.Static.Verdict == NoKmemCode
	r.Reasons = append(r.Reasons, r.Static.Reasons...)
	d := r.Dynamic
	switch d.Status {
	case DynFail:
		r.Verdict = KmemEnabled
		r.Reasons = append(r.Reasons, "dynamic: "+d.Reason)
		r.Passed = false
		return
	case DynPass:
		r.Reasons = append(r.Reasons, "dynamic: "+d.Reason)
		r.Passed = staticGood
		if !staticGood {
			r.Reasons = append(r.Reasons, "the dynamic run saw no write, but the static checks say "+string(r.Static.Verdict)+"; not a pass")
		}
		return
	}
	r.Reasons = append(r.Reasons, "dynamic check "+d.Status+": "+d.Reason)
	switch {
	case opt.Dynamic == "require":
		r.Passed = false
		r.Reasons = append(r.Reasons, "the dynamic check is required and did not pass")
	case d.Status == DynError:
		r.Passed = false
	case staticGood && (opt.AllowStaticOnly || d.Status == DynOff):
		r.Passed = true
		r.Reasons = append(r.Reasons, "passed on static evidence only (dynamic check "+d.Status+")")
	default:
		r.Passed = false
		r.Reasons = append(r.Reasons, "not a pass: the dynamic check did not run (set NOKMEM_ALLOW_STATIC_ONLY=1 to accept static evidence alone)")
	}
}

// Summary renders the report for humans.
func (r *Report) Summary() string {
	var b strings.Builder
	status := "FAIL"
	if r.Passed {
		status = "PASS"
	}
	fmt.Fprintf(&b, "%s %s %s: verdict %s\n", status, r.Project, r.Binary, r.Verdict)
	fmt.Fprintf(&b, "  sha256 %s\n", r.SHA256)
	if r.Static.GoVersion != "" {
		fmt.Fprintf(&b, "  built with %s, tags %q\n", r.Static.GoVersion, r.Static.Tags)
	}
	for _, s := range r.Static.Signals {
		avail := "available"
		if !s.Available {
			avail = "not available"
		}
		fmt.Fprintf(&b, "  static %-40s %-13s %s\n", s.Name, avail, s.Value)
	}
	if r.Target != nil {
		b.WriteString("  " + r.Target.Summary())
	}
	if d := r.Dynamic; d != nil {
		fmt.Fprintf(&b, "  dynamic: %s: %s\n", d.Status, d.Reason)
		for _, st := range d.SelfTest {
			fmt.Fprintf(&b, "    self-test %-9s caught=%v\n", st.Detector, st.Caught)
		}
		for _, run := range d.Runs {
			fmt.Fprintf(&b, "    run %-20s cgroup %s created=%v events=%d", run.Name, run.CgroupPath, run.CgroupCreated, len(run.Events))
			if run.Reaction != "" {
				fmt.Fprintf(&b, " reaction=%q", run.Reaction)
			}
			b.WriteString("\n")
			for _, e := range run.Events {
				fmt.Fprintf(&b, "      %s: pid %d (%s) %s %s\n", e.Detector, e.Pid, e.Comm, e.Syscall, e.Path)
			}
		}
		if t := d.TimingSummary(); t != "" {
			fmt.Fprintf(&b, "    timings (ms) %s\n", t)
		}
	}
	for _, reason := range r.Reasons {
		fmt.Fprintf(&b, "  - %s\n", reason)
	}
	return b.String()
}
