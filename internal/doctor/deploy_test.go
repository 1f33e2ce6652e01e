package doctor

import (
	"bytes"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	k8syaml "sigs.k8s.io/yaml"
)

// The DaemonSet decodes strictly into the Kubernetes API types (no unknown
// or misspelt field) and keeps its promises: read-only host paths but the
// textfile directory, no capability, no host namespaces, and arguments
// the doctor accepts.
func TestDaemonSetManifest(t *testing.T) {
	b, err := os.ReadFile("../../deploy/doctor/daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := k8syaml.UnmarshalStrict(b, &ds); err != nil {
		t.Fatalf("daemonset.yaml: %v", err)
	}
	if ds.APIVersion != "apps/v1" || ds.Kind != "DaemonSet" || ds.Name != "nokmem-doctor" {
		t.Errorf("%s %s %s", ds.APIVersion, ds.Kind, ds.Name)
	}
	spec := ds.Spec.Template.Spec
	sel := ds.Spec.Selector
	if sel == nil || sel.MatchLabels["app.kubernetes.io/name"] != ds.Spec.Template.Labels["app.kubernetes.io/name"] {
		t.Errorf("selector %v does not select the template's labels %v", sel, ds.Spec.Template.Labels)
	}
	if spec.HostPID || spec.HostNetwork || spec.HostIPC || spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("host namespaces or a token: pid %v net %v ipc %v token %v", spec.HostPID, spec.HostNetwork, spec.HostIPC, spec.AutomountServiceAccountToken)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers", len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.Capabilities == nil || len(sc.Capabilities.Add) != 0 ||
		len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
		t.Errorf("container security context: %+v", sc)
	}

	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	textfile := ""
	for _, m := range c.VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok || v.HostPath == nil {
			t.Errorf("mount %s: no hostPath volume", m.Name)
			continue
		}
		if !m.ReadOnly {
			if textfile != "" {
				t.Errorf("a second writable mount: %s", m.MountPath)
			}
			textfile = m.MountPath
			continue
		}
		// Each host path appears under /host at its own path, as the
		// doctor's --root=/host expects.
		if m.MountPath != "/host"+v.HostPath.Path {
			t.Errorf("%s is mounted at %s, not /host%s", v.HostPath.Path, m.MountPath, v.HostPath.Path)
		}
	}
	for _, need := range []string{"/proc", "/sys/fs/cgroup", "/etc/docker", "/etc/containerd", "/usr/bin", "/var/lib/kubelet/config.yaml"} {
		found := false
		for _, v := range volumes {
			found = found || (v.HostPath != nil && v.HostPath.Path == need)
		}
		if !found {
			t.Errorf("no read-only mount of the host's %s", need)
		}
	}
	if len(c.Env) != 1 || c.Env[0].Name != "NODE_NAME" || c.Env[0].ValueFrom == nil || c.Env[0].ValueFrom.FieldRef == nil || c.Env[0].ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("env %+v: want NODE_NAME from spec.nodeName", c.Env)
	}
	if strings.Join(c.Args, " ") != "--root=/host --json --textfile="+textfile+" --interval=10m" {
		t.Errorf("args %q, writable mount %s", c.Args, textfile)
	}
	// The doctor accepts exactly these arguments (--version returns once
	// they are parsed, instead of looping every 10 minutes).
	if code := Main(append(append([]string{}, c.Args...), "--version"), io.Discard, io.Discard); code != ExitOK {
		t.Errorf("the doctor refuses its DaemonSet arguments: exit %d", code)
	}
}

// The alert rules decode strictly as Prometheus rule groups, and every
// metric and label value they use is one the doctor writes.
func TestAlertRules(t *testing.T) {
	b, err := os.ReadFile("../../deploy/doctor/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name     string `yaml:"name"`
			Interval string `yaml:"interval"`
			Rules    []struct {
				Alert       string            `yaml:"alert"`
				Record      string            `yaml:"record"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	if len(file.Groups) != 1 || len(file.Groups[0].Rules) < 5 {
		t.Fatalf("groups: %+v", file.Groups)
	}

	// The metric families a report writes, with their label values.
	reg, err := run(t, leakingNode(t)).Registry()
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	labelValues := map[string]bool{}
	families := map[string]bool{}
	for _, mf := range mfs {
		families[mf.GetName()] = true
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				labelValues[l.GetName()+"="+l.GetValue()] = true
			}
		}
	}
	for _, s := range []Status{StatusOK, StatusAtRisk, StatusUnknown} {
		labelValues["status="+string(s)] = true
	}
	metricRE := regexp.MustCompile(`\bnokmem_[a-z_]+`)
	matcherRE := regexp.MustCompile(`(\w+)="([^"]*)"`)
	names := map[string]bool{}
	for _, r := range file.Groups[0].Rules {
		if r.Alert == "" || r.Record != "" || r.Expr == "" || names[r.Alert] {
			t.Errorf("rule %+v: want a uniquely named alert with an expression", r)
		}
		names[r.Alert] = true
		if _, err := model.ParseDuration(r.For); err != nil {
			t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
		}
		if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
			t.Errorf("%s: severity, summary and description are required", r.Alert)
		}
		for _, m := range metricRE.FindAllString(r.Expr, -1) {
			if !families[m] {
				t.Errorf("%s uses %s, which the doctor does not write", r.Alert, m)
			}
		}
		for _, m := range matcherRE.FindAllStringSubmatch(r.Expr, -1) {
			if !labelValues[m[1]+"="+m[2]] {
				t.Errorf("%s matches %s=%q, a label value the doctor does not write", r.Alert, m[1], m[2])
			}
		}
	}
}
