package doctor

import (
	"os"
	"path/filepath"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// parseTextfile reads a textfile as node_exporter does: with Prometheus'
// own text parser.
func parseTextfile(t *testing.T, path string) map[string]*dto.MetricFamily {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(fh)
	if err != nil {
		t.Fatalf("%s does not parse: %v", path, err)
	}
	return mfs
}

// value returns the gauge of family name whose labels include want.
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	t.Helper()
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
	if mf.GetType() != dto.MetricType_GAUGE {
		t.Errorf("%s is %s, not a gauge", name, mf.GetType())
	}
next:
	for _, m := range mf.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		return m.GetGauge().GetValue(), true
	}
	return 0, false
}

func TestTextfileParsesWithThePrometheusParser(t *testing.T) {
	dir := t.TempDir()
	r := run(t, leakingNode(t))
	path, err := r.WriteTextfile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if path != filepath.Join(dir, TextfileName) {
		t.Errorf("path %s", path)
	}
	mfs := parseTextfile(t, path)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"nokmem_doctor_status", map[string]string{"status": "leaking"}, 1},
		{"nokmem_doctor_status", map[string]string{"status": "ok"}, 0},
		{"nokmem_doctor_exit_code", nil, ExitLeaking},
		{"nokmem_doctor_last_run_timestamp_seconds", nil, float64(fixedNow.Unix())},
		{"nokmem_exposed", nil, 1},
		{"nokmem_node_info", map[string]string{"kernel": "3.10.0-957.el7.x86_64", "kmem_model": "opt-in", "cgroup_mode": "v1"}, 1},
		{"nokmem_kernel_param_nokmem", map[string]string{"honoured": "n/a"}, 0},
		{"nokmem_kmem_cgroups_walked", nil, 9},
		{"nokmem_kmem_active_cgroups", nil, 2},
		{"nokmem_kmem_active_cgroups_by_subtree", map[string]string{"subtree": "kubepods"}, 2},
		{"nokmem_memcg_count", map[string]string{"source": "proc_cgroups"}, 9},
		{"nokmem_memcg_count", map[string]string{"source": "hierarchy"}, 9},
		{"nokmem_memcg_zombies", nil, 60},
		{"nokmem_memcg_id_limit", nil, 65535},
		{"nokmem_log_events", map[string]string{"kind": "syslog", "event": "mkdir_failure"}, 2},
		{"nokmem_log_events", map[string]string{"kind": "kernel", "event": "slub_failure"}, 1},
		{"nokmem_fix_in_place", map[string]string{"state": "no"}, 1},
		{"nokmem_binary_verdict", map[string]string{"path": "/usr/bin/runc", "role": "docker-default,runc-on-path", "verdict": "kmem-enabled"}, 1},
		{"nokmem_binary_verdict", map[string]string{"path": "/usr/bin/kubelet", "role": "kubelet", "verdict": "kmem-enabled"}, 1},
		{"nokmem_binary_in_use", map[string]string{"path": "/usr/bin/runc"}, 1},
		{"nokmem_binary_kmem_risk", map[string]string{"path": "/usr/bin/kubelet"}, 1},
	} {
		got, ok := value(t, mfs, c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}

	// Replaced atomically: one file, readable by node_exporter, and no
	// temporary file left beside it.
	r2 := run(t, fixedNode(t))
	if _, err := r2.WriteTextfile(dir); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != TextfileName {
		t.Errorf("directory holds %v", entries)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, %v", fi.Mode(), err)
	}
	mfs = parseTextfile(t, path)
	if v, _ := value(t, mfs, "nokmem_doctor_status", map[string]string{"status": "ok"}); v != 1 {
		t.Errorf("after the second run: status ok = %v", v)
	}
	if v, ok := value(t, mfs, "nokmem_memcg_zombies", nil); !ok || v != 0 {
		t.Errorf("the fixed node's zombies: %v %v", v, ok)
	}
	// A node whose kernel has no zombie count has no such series.
	if _, err := run(t, v2Node(t)).WriteTextfile(dir); err != nil {
		t.Fatal(err)
	}
	if _, ok := parseTextfile(t, path)["nokmem_memcg_zombies"]; ok {
		t.Errorf("a v2 node has a zombie count")
	}
}
