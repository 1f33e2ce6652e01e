package doctor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// TextfileName is the file WriteTextfile writes in node_exporter's
// textfile directory.
const TextfileName = "nokmem_doctor.prom"

// WriteTextfile writes the report as Prometheus metrics for
// node_exporter's textfile collector to dir/nokmem_doctor.prom. The file
// is replaced atomically: the metrics go to a temporary file in dir (a
// name not ending in .prom, so the collector never reads it half
// written), which is then renamed over the old one.
func (r *Report) WriteTextfile(dir string) (string, error) {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("textfile directory %s: not a directory", dir)
	}
	reg, err := r.Registry()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, TextfileName)
	if err := prometheus.WriteToTextfile(path, reg); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return path, nil
}

// Registry returns the report's metrics (docs/doctor.md lists them).
func (r *Report) Registry() (*prometheus.Registry, error) {
	reg := prometheus.NewPedanticRegistry()
	var errs []string
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
		if err := reg.Register(g); err != nil {
			errs = append(errs, err.Error())
		}
		return g
	}
	b01 := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}

	status := gauge("nokmem_doctor_status", "The doctor's verdict: 1 for the current status (ok, at-risk, leaking, unknown), 0 for the others.", "status")
	for _, s := range []Status{StatusOK, StatusAtRisk, StatusLeaking, StatusUnknown} {
		status.WithLabelValues(string(s)).Set(b01(r.Status == s))
	}
	gauge("nokmem_doctor_exit_code", "The doctor's exit status: 0 ok, 1 at risk, 2 leaking, 3 could not tell.").WithLabelValues().Set(float64(r.ExitCode))
	gauge("nokmem_doctor_last_run_timestamp_seconds", "When the doctor ran, in seconds since the epoch.").WithLabelValues().Set(float64(r.Time.UnixNano()) / 1e9)
	gauge("nokmem_doctor_problems", "How many things the doctor could not read or decide.").WithLabelValues().Set(float64(len(r.Problems)))

	e := r.Exposure
	gauge("nokmem_node_info", "The node as the doctor saw it (always 1).", "kernel", "kernel_family", "distribution", "cgroup_mode", "memory_controller", "kmem_model").
		WithLabelValues(e.Kernel, e.KernelFamily, e.Distribution, e.CgroupMode, e.MemoryController, e.KmemModel).Set(1)
	gauge("nokmem_exposed", "1 if the node can leak memory cgroup IDs through kmem accounting (cgroup v1 memory controller on a kernel that turns it on per cgroup).").WithLabelValues().Set(b01(e.Exposed))
	gauge("nokmem_kernel_param_nokmem", "1 if cgroup.memory=nokmem is on the kernel command line; honoured says whether this kernel acts on it (yes, no, unverified, n/a).", "honoured").
		WithLabelValues(e.NokmemHonoured).Set(b01(e.NokmemParam))

	k := r.Kmem
	gauge("nokmem_kmem_cgroups_walked", "Memory cgroups walked.").WithLabelValues().Set(float64(k.Walked))
	gauge("nokmem_kmem_active_cgroups", "Memory cgroups (root excluded) whose kernel-memory accounting is on, as the kernel's signals show it.").WithLabelValues().Set(float64(k.Active))
	gauge("nokmem_kmem_inactive_cgroups", "Memory cgroups whose kernel-memory accounting the signals show off.").WithLabelValues().Set(float64(k.Inactive))
	gauge("nokmem_kmem_undetermined_cgroups", "Memory cgroups no signal decides.").WithLabelValues().Set(float64(k.Undetermined))
	sub := gauge("nokmem_kmem_active_cgroups_by_subtree", "Active memory cgroups under each top-level directory of the hierarchy.", "subtree")
	for _, st := range k.BySubtree {
		sub.WithLabelValues(st.Name).Set(float64(st.Active))
	}

	l := r.Leak
	count := gauge("nokmem_memcg_count", "Memory cgroups: num_cgroups of /proc/cgroups (source proc_cgroups) and directories in the hierarchy (source hierarchy).", "source")
	if l.ProcCgroups != nil {
		count.WithLabelValues("proc_cgroups").Set(float64(*l.ProcCgroups))
	}
	if l.LiveCgroups != nil {
		count.WithLabelValues("hierarchy").Set(float64(*l.LiveCgroups))
	}
	zombies := gauge("nokmem_memcg_zombies", "Removed memory cgroups still holding a memcg ID through their slab caches (a lower bound; kernels before 4.6 only).")
	if l.Zombies != nil {
		zombies.WithLabelValues().Set(float64(*l.Zombies))
	}
	gauge("nokmem_memcg_id_limit", "The memory cgroup ID space.").WithLabelValues().Set(float64(l.IDLimit))
	readable := gauge("nokmem_log_readable", "1 if the doctor could read this log.", "source", "kind")
	events := gauge("nokmem_log_events", "Leak evidence in this boot's log lines: slub_failure, mkdir_failure (a memory cgroup), kmem_deprecated, nokmem_refusal.", "source", "kind", "event")
	for _, ev := range l.Logs {
		readable.WithLabelValues(ev.Source, ev.Kind).Set(b01(ev.Read))
		if !ev.Read {
			continue
		}
		for name, v := range map[string]int{"slub_failure": ev.SlubFailures, "mkdir_failure": ev.MkdirFailures, "kmem_deprecated": ev.KmemDeprecated, "nokmem_refusal": ev.NokmemRefusals} {
			events.WithLabelValues(ev.Source, ev.Kind, name).Set(float64(v))
		}
	}

	f := r.Fix
	inPlace := gauge("nokmem_fix_in_place", "Whether the runc and kubelet in use keep kmem accounting off: 1 for the current state (yes, no, unknown, not-needed).", "state")
	for _, s := range []string{"yes", "no", "unknown", "not-needed"} {
		inPlace.WithLabelValues(s).Set(b01(f.InPlace == s))
	}
	verdict := gauge("nokmem_binary_verdict", "The static verifier's verdict on a runc or kubelet of the node (always 1; the verdict is a label: nokmem, kmem-enabled, no-kmem-code, unknown, missing, error).", "path", "role", "verdict")
	inUse := gauge("nokmem_binary_in_use", "1 if a daemon or the kubelet uses this binary by default.", "path", "role")
	risk := gauge("nokmem_binary_kmem_risk", "1 if this binary is in use, kmem-enabled and on the cgroupfs driver: it turns kmem accounting on.", "path", "role")
	for _, b := range f.Binaries {
		role := strings.Join(b.Roles, ",")
		verdict.WithLabelValues(b.Path, role, b.Verdict).Set(1)
		inUse.WithLabelValues(b.Path, role).Set(b01(b.InUse))
		risk.WithLabelValues(b.Path, role).Set(b01(b.Risk))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("metrics: %s", strings.Join(errs, "; "))
	}
	return reg, nil
}
