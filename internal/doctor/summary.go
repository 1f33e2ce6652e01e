package doctor

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

var statusWords = map[Status]string{
	StatusOK:      "OK",
	StatusAtRisk:  "AT RISK",
	StatusLeaking: "LEAKING",
	StatusUnknown: "COULD NOT TELL",
}

// WriteSummary writes the report for a person: the verdict and the
// evidence under four headings, then the next step.
func (r *Report) WriteSummary(w io.Writer) error {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	host := r.Hostname
	if host == "" {
		host = "node"
	}
	p("nokmem doctor: %s (root %s)", host, r.Root)
	p("status: %s (exit status %d)", statusWords[r.Status], r.ExitCode)
	for _, s := range r.Reasons {
		p("  - %s", s)
	}

	e := r.Exposure
	p("")
	p("exposure")
	tw := tabwriter.NewWriter(&b, 2, 8, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "  %s\t%s\n", k, v) }
	row("kernel", fmt.Sprintf("%s (%s)", or(e.Kernel, "unknown"), e.KernelFamily))
	row("distribution", or(e.Distribution, "unknown"))
	mem := e.MemoryController
	if e.MemoryMount != "" {
		mem += " at " + e.MemoryMount
	}
	row("cgroups", fmt.Sprintf("%s; memory controller %s", e.CgroupMode, mem))
	nk := "not set"
	if e.NokmemParam {
		nk = "set, honoured: " + e.NokmemHonoured
	}
	row("cgroup.memory=nokmem", nk)
	row("kmem model", e.KmemModel)
	row("exposed", fmt.Sprintf("%s: %s", yesNo(e.Exposed), e.Why))
	tw.Flush()
	if e.NokmemEvidence != "" {
		p("  nokmem: %s", e.NokmemEvidence)
	}

	k := r.Kmem
	p("")
	p("kmem accounting")
	if k.Walked == 0 {
		p("  %s", k.Trust)
	} else {
		trunc := ""
		if k.Truncated {
			trunc = " (stopped at the limit)"
		}
		p("  %d cgroups walked%s: %d active, %d inactive, %d undetermined (the root not counted)", k.Walked, trunc, k.Active, k.Inactive, k.Undetermined)
		s := k.Signals
		p("  signals: slabinfo readable %d, EIO %d, absent %d; usage>0 %d, max_usage>0 %d, failcnt>0 %d, explicit limit %d",
			s.SlabinfoReadable, s.SlabinfoEIO, s.SlabinfoAbsent, s.UsagePositive, s.MaxUsagePositive, s.FailcntPositive, s.LimitSet)
		var subs []string
		for _, st := range k.BySubtree {
			subs = append(subs, fmt.Sprintf("%s %d/%d", st.Name, st.Active, st.Walked))
		}
		p("  active/walked by subtree: %s", strings.Join(subs, ", "))
		if len(k.Top) > 0 && e.KmemModel != modelAlways {
			p("  top:")
			for _, c := range k.Top {
				p("    %s: %s", c.Path, c.Evidence)
			}
		}
		p("  trust: %s", k.Trust)
	}

	l := r.Leak
	p("")
	p("leak (verdict: %s)", l.Verdict)
	for _, w := range l.Why {
		p("  - %s", w)
	}
	p("  memcg IDs: /proc/cgroups %s, cgroup directories %s, zombies %s, of %d", ptr(l.ProcCgroups), ptr(l.LiveCgroups), ptr(l.Zombies), l.IDLimit)
	if l.ProcCgroupsNote != "" {
		p("  /proc/cgroups: %s", l.ProcCgroupsNote)
	}
	p("  zombies: %s", l.ZombieMethod)
	for _, ev := range l.Logs {
		if !ev.Read {
			p("  %s log %s: not read (%s)", ev.Kind, ev.Source, ev.Error)
			continue
		}
		before := ""
		if ev.Before > 0 {
			before = fmt.Sprintf(", %d older than this boot skipped", ev.Before)
		}
		p("  %s log %s: %d lines%s; SLUB failures %d, memory cgroup mkdir failures %d, kmem deprecation notices %d, nokmem refusals %d",
			ev.Kind, ev.Source, ev.Lines, before, ev.SlubFailures, ev.MkdirFailures, ev.KmemDeprecated, ev.NokmemRefusals)
		for _, s := range ev.Samples {
			p("    | %s", s)
		}
	}

	f := r.Fix
	p("")
	p("fix in place: %s", f.InPlace)
	for _, d := range f.Docker {
		p("  docker%s: %s, default runtime %s", pid(d.PID), cfgState(d), d.DefaultRuntime)
		runtimes(&b, d)
	}
	for _, d := range f.Containerd {
		cri := "CRI on"
		if !d.CRI {
			cri = "CRI off"
		}
		p("  containerd%s: %s (version %d), %s, default runtime %s", pid(d.PID), cfgState(d), d.ConfigVersion, cri, d.DefaultRuntime)
		runtimes(&b, d)
	}
	if kb := f.Kubelet; kb != nil {
		ep := ""
		if kb.RuntimeEndpoint != "" {
			ep = ", runtime " + kb.RuntimeEndpoint
		}
		p("  kubelet%s: %s, %s driver (%s)%s; from %s", pid(kb.PID), or(kb.Path, kb.Binary+" (not found)"), kb.CgroupDriver, kb.DriverSource, ep, kb.Source)
	}
	if len(f.Binaries) > 0 {
		p("  binaries:")
		tw := tabwriter.NewWriter(&b, 2, 8, 2, ' ', 0)
		for _, bin := range f.Binaries {
			use := "installed"
			if bin.InUse {
				use = "in use, " + bin.CgroupDriver
			}
			mark := ""
			if bin.Risk {
				mark = "  <- turns kmem on"
			}
			fmt.Fprintf(tw, "    %s\t%s\t%s\t%s%s\n", bin.Path, strings.Join(bin.Roles, ","), use, bin.Verdict, mark)
		}
		tw.Flush()
	}
	for _, w := range f.Why {
		p("  - %s", w)
	}
	if len(r.Problems) > 0 {
		p("")
		p("problems")
		for _, s := range r.Problems {
			p("  - %s", s)
		}
	}
	p("")
	p("next step")
	for _, s := range r.NextSteps {
		p("  - %s", s)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func runtimes(b *strings.Builder, d Daemon) {
	for _, r := range d.Runtimes {
		def := ""
		if r.Default {
			def = " (default)"
		}
		fmt.Fprintf(b, "    runtime %s%s: %s -> %s, %s driver\n", r.Name, def, r.Binary, or(r.Path, "not found"), r.CgroupDriver)
	}
	for _, n := range d.Notes {
		fmt.Fprintf(b, "    note: %s\n", n)
	}
}

func cfgState(d Daemon) string {
	if d.ConfigFound {
		return d.Config
	}
	return d.Config + " (absent: defaults)"
}

func pid(p int) string {
	if p == 0 {
		return ""
	}
	return fmt.Sprintf(" (pid %d)", p)
}

func ptr(p *int) string {
	if p == nil {
		return "n/a"
	}
	return fmt.Sprint(*p)
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
