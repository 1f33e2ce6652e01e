package doctor

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden summaries in testdata/")

func run(t *testing.T, f *fixture) *Report {
	t.Helper()
	r, err := Run(context.Background(), f.options())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func binaryAt(r *Report, p string) *Binary {
	for i := range r.Fix.Binaries {
		if r.Fix.Binaries[i].Path == p {
			return &r.Fix.Binaries[i]
		}
	}
	return nil
}

func logOf(r *Report, kind string) LogEvidence {
	var sum LogEvidence
	for _, ev := range r.Leak.Logs {
		if ev.Kind == kind {
			sum.Lines += ev.Lines
			sum.Before += ev.Before
			sum.SlubFailures += ev.SlubFailures
			sum.MkdirFailures += ev.MkdirFailures
			sum.Read = sum.Read || ev.Read
		}
	}
	return sum
}

// Each fixture node gets its verdict, for the reasons the issue names.
func TestFixtureNodes(t *testing.T) {
	t.Run("unaffected v2 node", func(t *testing.T) {
		r := run(t, v2Node(t))
		e := r.Exposure
		if r.Status != StatusOK || r.ExitCode != ExitOK || e.CgroupMode != "v2" || e.MemoryController != "v2" || e.Exposed || e.KmemModel != modelNone {
			t.Fatalf("status %s exit %d, exposure %+v", r.Status, r.ExitCode, e)
		}
		if r.Fix.InPlace != "not-needed" || r.Kmem.Walked != 0 || r.Leak.ProcCgroups != nil {
			t.Errorf("fix %s, walked %d, procCgroups %v", r.Fix.InPlace, r.Kmem.Walked, r.Leak.ProcCgroups)
		}
		// The runtime and its driver are still found and judged.
		b := binaryAt(r, "/usr/bin/runc")
		if b == nil || !b.InUse || b.CgroupDriver != driverSystemd || b.Verdict != "kmem-enabled" || b.Risk {
			t.Errorf("runc: %+v", b)
		}
		if k := r.Fix.Kubelet; k == nil || k.CgroupDriver != driverSystemd || k.RuntimeEndpoint != "unix:///run/containerd/containerd.sock" {
			t.Errorf("kubelet: %+v", k)
		}
	})

	t.Run("EL7 node at risk", func(t *testing.T) {
		r := run(t, atRiskNode(t))
		e := r.Exposure
		if r.Status != StatusAtRisk || r.ExitCode != ExitAtRisk || !e.Exposed || e.KmemModel != modelOptIn || e.KernelFamily != "el7" || e.MemoryMount != "/sys/fs/cgroup/memory" {
			t.Fatalf("status %s exit %d, exposure %+v\nreasons %v", r.Status, r.ExitCode, e, r.Reasons)
		}
		if e.Distribution != "CentOS Linux 7 (Core)" {
			t.Errorf("distribution %q (through the /etc/os-release symlink)", e.Distribution)
		}
		k := r.Kmem
		if k.Walked != 9 || k.Active != 2 || k.Inactive != 6 || k.Undetermined != 0 || k.Signals.SlabinfoEIO != 7 || k.Signals.SlabinfoReadable != 2 {
			t.Errorf("kmem %+v", k)
		}
		if len(k.Top) != 2 || k.Top[0].Path != "/kubepods/burstable/pod0b1c" || k.BySubtree[0].Name != "kubepods" || k.BySubtree[0].Active != 2 {
			t.Errorf("top %+v, by subtree %+v", k.Top, k.BySubtree)
		}
		if r.Leak.Verdict != "no-evidence" || r.Leak.Zombies == nil || *r.Leak.Zombies != 0 || *r.Leak.SlabMemcgIDs != 2 {
			t.Errorf("leak %+v", r.Leak)
		}
		if r.Fix.InPlace != "no" {
			t.Errorf("fix %s: %v", r.Fix.InPlace, r.Fix.Why)
		}
		runc, kubelet := binaryAt(r, "/usr/bin/runc"), binaryAt(r, "/usr/bin/kubelet")
		if runc == nil || !runc.Risk || strings.Join(runc.Roles, ",") != "docker-default,runc-on-path" || runc.CgroupDriver != driverCgroupfs {
			t.Errorf("runc: %+v", runc)
		}
		if kubelet == nil || !kubelet.Risk || kubelet.CgroupDriver != driverCgroupfs {
			t.Errorf("kubelet: %+v", kubelet)
		}
		// containerd.io's containerd with the CRI plugin off runs nothing of its own.
		if len(r.Fix.Containerd) != 1 || r.Fix.Containerd[0].CRI || r.Fix.Containerd[0].PID != 1100 {
			t.Errorf("containerd: %+v", r.Fix.Containerd)
		}
		if len(r.NextSteps) < 3 || !strings.Contains(r.NextSteps[0], "runc-nokmem") || !strings.Contains(r.NextSteps[1], "kubelet") {
			t.Errorf("next steps: %q", r.NextSteps)
		}
	})

	t.Run("leaking node", func(t *testing.T) {
		r := run(t, leakingNode(t))
		if r.Status != StatusLeaking || r.ExitCode != ExitLeaking || r.Leak.Verdict != "leaking" {
			t.Fatalf("status %s exit %d, leak %+v", r.Status, r.ExitCode, r.Leak)
		}
		if z := r.Leak.Zombies; z == nil || *z != 60 || *r.Leak.SlabMemcgIDs != 62 {
			t.Errorf("zombies %v of %v", z, r.Leak.SlabMemcgIDs)
		}
		kernel, syslog := logOf(r, "kernel"), logOf(r, "syslog")
		if !kernel.Read || kernel.SlubFailures != 1 || kernel.Lines != 2 {
			t.Errorf("kernel log: %+v", kernel)
		}
		// The mkdir failure from before the boot does not count.
		if !syslog.Read || syslog.MkdirFailures != 2 || syslog.SlubFailures != 1 || syslog.Before != 1 {
			t.Errorf("syslog: %+v", syslog)
		}
		if len(r.Reasons) != 3 || !strings.Contains(r.Reasons[0], "2 failed mkdir") {
			t.Errorf("reasons: %q", r.Reasons)
		}
		if last := r.NextSteps[len(r.NextSteps)-1]; !strings.Contains(last, "reboot") {
			t.Errorf("next steps: %q", r.NextSteps)
		}
	})

	t.Run("fixed node", func(t *testing.T) {
		r := run(t, fixedNode(t))
		if r.Status != StatusOK || r.ExitCode != ExitOK || !r.Exposure.Exposed || r.Fix.InPlace != "yes" || r.Kmem.Active != 0 {
			t.Fatalf("status %s, fix %s %v, active %d\nreasons %v", r.Status, r.Fix.InPlace, r.Fix.Why, r.Kmem.Active, r.Reasons)
		}
		d := r.Fix.Docker[0]
		if d.DefaultRuntime != "nokmem" || !d.Runtimes[0].Default || d.Runtimes[0].Path != "/usr/bin/runc-nokmem" {
			t.Errorf("docker: %+v", d)
		}
		nk, old := binaryAt(r, "/usr/bin/runc-nokmem"), binaryAt(r, "/usr/bin/runc")
		if nk == nil || !nk.InUse || nk.Verdict != "nokmem" || strings.Join(nk.Roles, ",") != "docker-default,runc-nokmem" {
			t.Errorf("runc-nokmem: %+v", nk)
		}
		// The old runc is still installed, but nothing uses it by default.
		if old == nil || old.InUse || old.Risk || old.Verdict != "kmem-enabled" || strings.Join(old.Roles, ",") != "docker-runtime,runc-on-path" {
			t.Errorf("runc: %+v", old)
		}
	})

	t.Run("fixed on disk, old kubelet still running", func(t *testing.T) {
		f := fixedNode(t)
		// What the kernel shows for an executable replaced after exec.
		f.symlink("/usr/bin/kubelet (deleted)", "/proc/1300/exe")
		r := run(t, f)
		if k := r.Fix.Kubelet; k == nil || !k.Replaced || k.Path != "/usr/bin/kubelet" {
			t.Fatalf("kubelet %+v", k)
		}
		if r.Status != StatusUnknown || r.Fix.InPlace != "unknown" || !strings.Contains(strings.Join(r.NextSteps, "\n"), "restart the kubelet") {
			t.Errorf("status %s, fix %s, next %q", r.Status, r.Fix.InPlace, r.NextSteps)
		}
	})

	t.Run("kernel parameter set", func(t *testing.T) {
		r := run(t, paramNode(t))
		e := r.Exposure
		if r.Status != StatusOK || !e.NokmemParam || e.NokmemHonoured != "yes" || e.KmemModel != modelOff || e.Exposed {
			t.Fatalf("status %s, exposure %+v", r.Status, e)
		}
		if !strings.Contains(e.NokmemEvidence, "5785961") || r.Fix.InPlace != "not-needed" {
			t.Errorf("evidence %q, fix %s", e.NokmemEvidence, r.Fix.InPlace)
		}
	})

	t.Run("kernel parameter ignored", func(t *testing.T) {
		r := run(t, paramIgnoredNode(t))
		e := r.Exposure
		if r.Status != StatusAtRisk || e.NokmemHonoured != "no" || e.KmemModel != modelOptIn || !e.Exposed {
			t.Fatalf("status %s, exposure %+v", r.Status, e)
		}
		if !strings.Contains(e.NokmemEvidence, "2 cgroups have kmem accounting on") {
			t.Errorf("evidence %q", e.NokmemEvidence)
		}
	})

	t.Run("could not tell", func(t *testing.T) {
		r := run(t, unknownNode(t))
		if r.Status != StatusUnknown || r.ExitCode != ExitUnknown || r.Fix.InPlace != "unknown" {
			t.Fatalf("status %s, fix %s %v", r.Status, r.Fix.InPlace, r.Fix.Why)
		}
		if b := binaryAt(r, "/usr/bin/runc"); b == nil || b.Verdict != "unknown" || !b.InUse {
			t.Errorf("runc: %+v", b)
		}
	})

	t.Run("no cgroup layout", func(t *testing.T) {
		f := newFixture(t)
		f.kernel("3.10.0-957.el7.x86_64", "ro", "bare")
		r := run(t, f)
		if r.Status != StatusUnknown || len(r.Problems) == 0 || !strings.Contains(strings.Join(r.Problems, "\n"), "mountinfo") {
			t.Fatalf("status %s, problems %q", r.Status, r.Problems)
		}
	})
}

// The EIO of memory.kmem.slabinfo comes through the ReadFile seam and
// decides the state of a cgroup that charged nothing.
func TestSlabinfoEIOThroughTheSeam(t *testing.T) {
	f := newFixture(t)
	f.cgroup("/eio", kmemFiles{slab: "eio"})
	f.cgroup("/readable", kmemFiles{slab: slabHeader})
	f.cgroup("/absent", kmemFiles{slab: "absent"})
	f.cgroup("/charged-without-slabinfo", kmemFiles{slab: "absent", usage: 4096})
	f.cgroup("/explicit-limit", kmemFiles{slab: "eio", limit: "104857600"})
	f.cgroup("/no-kmem-files", kmemFiles{noKmemAtAll: true})
	n := &node{root: f.root, readFile: f.readFile}
	for _, c := range []struct {
		rel, state, slab string
	}{
		{"/eio", "inactive", "eio"},
		{"/readable", "active", "readable"},
		{"/absent", "undetermined", "absent"},
		{"/charged-without-slabinfo", "active", "absent"},
		{"/explicit-limit", "active", "eio"},
		{"/no-kmem-files", "undetermined", "absent"},
	} {
		got := n.inspectCgroup(filepath.Join(f.root, "sys/fs/cgroup/memory", c.rel), c.rel)
		classify(&got, modelOptIn, false)
		if got.State != c.state || got.Slabinfo != c.slab {
			t.Errorf("%s: state %s (%s), slabinfo %s; want %s, %s", c.rel, got.State, got.Evidence, got.Slabinfo, c.state, c.slab)
		}
	}
	// Without the seam the fixture has no file there: absent, undecided.
	plain := &node{root: f.root, readFile: os.ReadFile}
	got := plain.inspectCgroup(filepath.Join(f.root, "sys/fs/cgroup/memory/eio"), "/eio")
	if classify(&got, modelOptIn, false); got.Slabinfo != "absent" || got.State != "undetermined" {
		t.Errorf("without the seam: %s, %s", got.Slabinfo, got.State)
	}
}

// The human summary of each fixture node, against testdata/*.txt
// (go test -run TestSummaryGolden -update rewrites them).
func TestSummaryGolden(t *testing.T) {
	for name, mk := range map[string]func(*testing.T) *fixture{
		"v2": v2Node, "at-risk": atRiskNode, "leaking": leakingNode, "fixed": fixedNode, "param": paramNode, "unknown": unknownNode,
	} {
		t.Run(name, func(t *testing.T) {
			f := mk(t)
			r := run(t, f)
			var b bytes.Buffer
			if err := r.WriteSummary(&b); err != nil {
				t.Fatal(err)
			}
			got := strings.ReplaceAll(b.String(), f.root, "<root>")
			golden := filepath.Join("testdata", "summary-"+name+".txt")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("summary differs from %s (-update rewrites it):\n%s", golden, got)
			}
		})
	}
}

// Main's exit statuses and outputs.
func TestMainExitStatusesAndJSON(t *testing.T) {
	for _, c := range []struct {
		mk   func(*testing.T) *fixture
		code int
	}{{v2Node, ExitOK}, {atRiskNode, ExitAtRisk}, {leakingNode, ExitLeaking}, {unknownNode, ExitUnknown}} {
		f := c.mk(t)
		var out, errb bytes.Buffer
		// Main reads the files themselves: without the EIO seam the
		// fixtures' "off" cgroups read as undetermined, not as active.
		code := Main([]string{"--root", f.root, "--json"}, &out, &errb)
		var r Report
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
		if code != c.code || r.ExitCode != code || r.Schema != Schema {
			t.Errorf("%s: exit %d, report %s/%d, stderr %s", r.Hostname, code, r.Status, r.ExitCode, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := Main([]string{"--bogus"}, &out, &errb); code != ExitFailed {
		t.Errorf("bad flag: exit %d", code)
	}
	if code := Main([]string{"--root", "/nonexistent-nokmem-root"}, &out, &errb); code != ExitFailed {
		t.Errorf("bad root: exit %d", code)
	}
	if code := Main([]string{"--root", v2Node(t).root, "--textfile", "/nonexistent-nokmem-dir"}, &out, &errb); code != ExitFailed {
		t.Errorf("bad textfile dir: exit %d", code)
	}
}

// Every field of the JSON report is documented in docs/doctor.md.
func TestJSONSchemaIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/doctor.md")
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(run(t, leakingNode(t)))
	if err != nil {
		t.Fatal(err)
	}
	var m any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				keys[k] = true
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(m)
	for k := range keys {
		if !bytes.Contains(doc, []byte("`"+k+"`")) {
			t.Errorf("docs/doctor.md does not document the JSON field %q", k)
		}
	}
}
