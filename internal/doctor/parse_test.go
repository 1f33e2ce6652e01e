package doctor

import (
	"strings"
	"testing"
)

func TestParseKernel(t *testing.T) {
	for _, c := range []struct {
		in           string
		major, minor int
		el, rel      int
		optIn        bool
	}{
		{"3.10.0-1160.83.1.el7.x86_64", 3, 10, 7, 1160, true},
		{"3.10.0-957.el7.x86_64", 3, 10, 7, 957, true},
		{"4.18.0-513.5.1.el8_9.x86_64", 4, 18, 8, 513, false},
		{"5.14.0-362.8.1.el9_3.x86_64", 5, 14, 9, 362, false},
		{"4.4.0-210-generic", 4, 4, 0, 0, true},
		{"6.18.44-fc-v769", 6, 18, 0, 0, false},
	} {
		k := parseKernel(c.in)
		if !k.OK || k.Major != c.major || k.Minor != c.minor || k.EL != c.el || k.ELRelease != c.rel || k.before(4, 6) != c.optIn {
			t.Errorf("%s: %+v", c.in, k)
		}
	}
	if parseKernel("garbage").OK {
		t.Error("garbage parsed")
	}
}

func TestNokmemParam(t *testing.T) {
	for in, want := range map[string]bool{
		"ro cgroup.memory=nokmem":                  true,
		"ro cgroup.memory=nosocket,nokmem quiet":   true,
		"ro cgroup.memory=nosocket":                false,
		"ro cgroup_memory=nokmem":                  false,
		"ro -- cgroup.memory=nokmem":               false, // init's, not the kernel's
		"cgroup.memory=nokmem cgroup.memory=nobpf": true,
	} {
		if got := nokmemParam(in); got != want {
			t.Errorf("%q: %v", in, got)
		}
	}
}

func TestNokmemHonoured(t *testing.T) {
	for _, c := range []struct {
		kernel string
		want   string
	}{
		{"3.10.0-1062.el7.x86_64", "yes"},
		{"3.10.0-1160.83.1.el7.x86_64", "yes"},
		{"3.10.0-957.27.2.el7.x86_64", "unverified"},
		{"4.19.0-25-amd64", "yes"},
		{"4.4.0-210-generic", "unverified"},
	} {
		got, ev := nokmemHonoured(true, parseKernel(c.kernel))
		if got != c.want || ev == "" {
			t.Errorf("%s: %s (%s)", c.kernel, got, ev)
		}
	}
	if got, _ := nokmemHonoured(false, parseKernel("3.10.0-1160.el7.x86_64")); got != "n/a" {
		t.Errorf("not set: %s", got)
	}
}

func TestLayout(t *testing.T) {
	mi := func(lines ...string) string { return strings.Join(lines, "\n") + "\n" }
	for _, c := range []struct {
		name, mountinfo, mode, memory string
	}{
		{"v1", mi("32 24 0:28 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory", "25 24 0:21 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd"), "v1", "/sys/fs/cgroup/memory"},
		{"hybrid", mi("35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory", "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw"), "hybrid", "/sys/fs/cgroup/memory"},
		{"v2 with a named v1 hierarchy", mi("35 24 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw", "40 35 0:40 / /sys/fs/cgroup/misc\\040dir rw - cgroup cgroup rw,name=foo"), "v2", ""},
		{"a container's view first, the root after", mi("900 800 0:28 /kubepods/pod1 /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory", "32 24 0:28 / /mnt/memory rw - cgroup cgroup rw,memory"), "v1", "/mnt/memory"},
	} {
		f := newFixture(t)
		f.write("/proc/self/mountinfo", c.mountinfo)
		n := &node{root: f.root, readFile: f.readFile}
		l := n.layout()
		mem := ""
		if l.MemoryV1 != nil {
			mem = l.MemoryV1.Point
		}
		if l.Mode != c.mode || mem != c.memory {
			t.Errorf("%s: mode %s, memory %q", c.name, l.Mode, mem)
		}
	}
	if got := unescapeMount(`/a\040b\134c`); got != `/a b\c` {
		t.Errorf("unescape: %q", got)
	}
}

// A DaemonSet's container reads the host's /proc/1/mountinfo, where the
// mount points are the node's, and finds them under its root.
func TestLayoutPrefersTheHostsMountinfo(t *testing.T) {
	f := newFixture(t)
	f.write("/proc/1/mountinfo", "32 24 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
	f.write("/proc/self/mountinfo", "700 600 0:28 / /host/sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n")
	n := &node{root: f.root, readFile: f.readFile}
	if l := n.layout(); l.Source != "/proc/1/mountinfo" || l.MemoryV1 == nil || l.MemoryV1.Point != "/sys/fs/cgroup/memory" {
		t.Errorf("%+v", l)
	}
	// Without the host's, the container's own view is mapped back.
	f2 := newFixture(t)
	f2.write("/proc/self/mountinfo", "700 600 0:28 / "+f2.root+"/sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n")
	n2 := &node{root: f2.root, readFile: f2.readFile}
	if l := n2.layout(); l.MemoryV1 == nil || l.MemoryV1.Point != "/sys/fs/cgroup/memory" {
		t.Errorf("container view: %+v", l.MemoryV1)
	}
}

func runtimeNamed(d Daemon, name string) *Runtime {
	for i := range d.Runtimes {
		if d.Runtimes[i].Name == name {
			return &d.Runtimes[i]
		}
	}
	return nil
}

// containerd's three config layouts, the legacy v1 shim, and no file.
func TestContainerdConfigs(t *testing.T) {
	for _, c := range []struct {
		name, toml      string
		cri             bool
		def, bin, drive string
		version         int
	}{
		{"no file: the built-in default", "", true, "runc", "/usr/bin/runc", driverCgroupfs, 2},
		{"version 1 (no version key), runc.v2 options", `[plugins.cri.containerd]
  default_runtime_name = "nokmem"
  [plugins.cri.containerd.runtimes.nokmem]
    runtime_type = "io.containerd.runc.v2"
    [plugins.cri.containerd.runtimes.nokmem.options]
      BinaryName = "/usr/bin/runc-nokmem"
`, true, "nokmem", "/usr/bin/runc-nokmem", driverCgroupfs, 1},
		{"version 1, containerd 1.2's default_runtime on the v1 shim", `[plugins.cri]
  systemd_cgroup = true
[plugins.cri.containerd.default_runtime]
  runtime_type = "io.containerd.runtime.v1.linux"
  runtime_engine = "/usr/bin/runc-nokmem"
`, true, "default_runtime", "/usr/bin/runc-nokmem", driverSystemd, 1},
		{"version 2, plugins.linux runc for the v1 shim", `version = 2
[plugins."io.containerd.runtime.v1.linux"]
  runtime = "/opt/bin/runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runtime.v1.linux"
`, true, "runc", "/opt/bin/runc", driverCgroupfs, 2},
		{"version 2, SystemdCgroup", `version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
    runtime_type = "io.containerd.kata.v2"
`, true, "runc", "/usr/bin/runc", driverSystemd, 2},
		{"version 3 (containerd 2.x)", `version = 3
[plugins."io.containerd.cri.v1.runtime".containerd]
  default_runtime_name = "nokmem"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nokmem]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nokmem.options]
      BinaryName = "/usr/bin/runc-nokmem"
`, true, "nokmem", "/usr/bin/runc-nokmem", driverCgroupfs, 3},
		{"CRI disabled (containerd.io's file)", `disabled_plugins = ["cri"]`, false, "runc", "", "", 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			f.binary("/usr/bin/runc", kmemEnabledBinary)
			f.binary("/usr/bin/runc-nokmem", nokmemBinary)
			f.binary("/opt/bin/runc", nokmemBinary)
			if c.toml != "" {
				f.write("/etc/containerd/config.toml", c.toml)
			}
			n := &node{root: f.root, readFile: f.readFile}
			d := n.containerd(0, "/etc/containerd/config.toml")
			if len(n.problems) > 0 {
				t.Fatalf("problems: %v", n.problems)
			}
			if d.CRI != c.cri || d.ConfigVersion != c.version || d.DefaultRuntime != c.def {
				t.Fatalf("%+v", d)
			}
			if !c.cri {
				return
			}
			r := runtimeNamed(d, c.def)
			if r == nil || !r.Default || r.Path != c.bin || r.CgroupDriver != c.drive || d.Runtimes[0].Name != c.def {
				t.Errorf("default runtime %+v in %+v", r, d.Runtimes)
			}
			if strings.Contains(c.toml, "kata") && (runtimeNamed(d, "kata") != nil || len(d.Notes) != 1) {
				t.Errorf("kata: %+v, notes %v", d.Runtimes, d.Notes)
			}
		})
	}
}

// docker: daemon.json, and RHEL 7's docker 1.13 that sets everything on
// its command line (from /etc/sysconfig/docker).
func TestDockerConfigs(t *testing.T) {
	f := newFixture(t)
	f.binary("/usr/bin/runc", kmemEnabledBinary)
	f.binary("/usr/libexec/docker/docker-runc-current", kmemEnabledBinary)
	f.binary("/usr/bin/runc-nokmem", nokmemBinary)
	n := &node{root: f.root, readFile: f.readFile}
	args := []string{"/usr/bin/dockerd-current", "--add-runtime", "docker-runc=/usr/libexec/docker/docker-runc-current", "--default-runtime=docker-runc",
		"--exec-opt", "native.cgroupdriver=systemd", "--userland-proxy-path=/usr/libexec/docker/docker-proxy-current", "--selinux-enabled"}
	if !isDockerd(args) {
		t.Fatal("dockerd-current is dockerd")
	}
	d := n.docker(900, "/etc/docker/daemon.json", args, false)
	r := runtimeNamed(d, "docker-runc")
	if d.DefaultRuntime != "docker-runc" || r == nil || !r.Default || r.Path != "/usr/libexec/docker/docker-runc-current" || r.CgroupDriver != driverSystemd || r.Source != "--add-runtime" {
		t.Errorf("RHEL docker: %+v", d)
	}

	f.write("/etc/docker/daemon.json", `{"default-runtime": "nokmem", "runtimes": {"nokmem": {"path": "runc-nokmem"}}, "exec-opts": ["native.cgroupdriver = cgroupfs"]}`)
	d = n.docker(0, "/etc/docker/daemon.json", nil, false)
	r, builtin := runtimeNamed(d, "nokmem"), runtimeNamed(d, "runc")
	if !d.ConfigFound || r == nil || !r.Default || r.Path != "/usr/bin/runc-nokmem" || r.CgroupDriver != driverCgroupfs || builtin == nil || builtin.Path != "/usr/bin/runc" || builtin.Default {
		t.Errorf("daemon.json: %+v", d)
	}

	f.write("/etc/docker/daemon.json", `{"default-runtime": `)
	n.docker(0, "/etc/docker/daemon.json", nil, false)
	if len(n.problems) != 1 || !strings.Contains(n.problems[0], "not valid JSON") {
		t.Errorf("problems: %v", n.problems)
	}
}

// kubeadm's layout: the driver comes through EnvironmentFile= and
// ${VAR}-expanded ExecStart= of a drop-in, or the config file.
func TestKubeletUnit(t *testing.T) {
	f := newFixture(t)
	f.binary("/usr/bin/kubelet", nokmemBinary)
	f.write("/usr/lib/systemd/system/kubelet.service", "[Unit]\nDescription=kubelet\n[Service]\nExecStart=/usr/bin/kubelet\nRestart=always\n")
	f.write("/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf", `# Note: This dropin only works with kubeadm and kubelet v1.11+
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/sysconfig/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS \
  $KUBELET_EXTRA_ARGS
`)
	f.write("/var/lib/kubelet/kubeadm-flags.env", `KUBELET_KUBEADM_ARGS="--cgroup-driver=systemd --network-plugin=cni --pod-infra-container-image=k8s.gcr.io/pause:3.1"`+"\n")
	f.write("/etc/sysconfig/kubelet", "KUBELET_EXTRA_ARGS=\n")
	f.write("/var/lib/kubelet/config.yaml", "kind: KubeletConfiguration\ncgroupDriver: cgroupfs\ncontainerRuntimeEndpoint: unix:///run/containerd/containerd.sock\n")
	n := &node{root: f.root, readFile: f.readFile}
	k := n.kubelet(nil)
	if k == nil || k.Path != "/usr/bin/kubelet" || k.Source != "/usr/lib/systemd/system/kubelet.service" {
		t.Fatalf("%+v", k)
	}
	// The flag overrides the config file, as in the kubelet.
	if k.CgroupDriver != driverSystemd || k.DriverSource != "--cgroup-driver" || k.ConfigFile != "/var/lib/kubelet/config.yaml" || k.RuntimeEndpoint != "unix:///run/containerd/containerd.sock" {
		t.Errorf("%+v", k)
	}
	if got := splitWords(`a "b c" 'd e' f\ g`); strings.Join(got, "|") != "a|b c|d e|f g" {
		t.Errorf("splitWords: %q", got)
	}
	if got := expand("$X", map[string]string{"X": "--a --b"}); len(got) != 2 {
		t.Errorf("$X splits: %q", got)
	}
	if got := expand("${X}", map[string]string{"X": "--a --b"}); len(got) != 1 {
		t.Errorf("${X} is one word: %q", got)
	}
}

func TestFlagValues(t *testing.T) {
	args := []string{"dockerd", "--exec-opt", "a=1", "--exec-opt=b=2", "-exec-opt", "c=3", "--", "--exec-opt=d"}
	if got := flagValues(args, "exec-opt"); strings.Join(got, ",") != "a=1,b=2,c=3" {
		t.Errorf("%q", got)
	}
	if !isKubelet([]string{"/usr/local/bin/hyperkube", "kubelet", "--v=2"}) || isContainerd([]string{"/usr/bin/containerd-shim-runc-v2"}) || !isContainerd([]string{"/usr/bin/docker-containerd-current"}) {
		t.Error("process kinds")
	}
}

func TestLineTime(t *testing.T) {
	now := fixedNow // 2026-11-20
	for in, want := range map[string]string{
		"Nov 20 11:00:00 host kernel: x":                             "2026-11-20T11:00:00Z",
		"Dec 31 23:59:59 host kernel: x":                             "2025-12-31T23:59:59Z", // not in the future
		"2026-11-19T08:00:00.123456+08:00 host dockerd[1]: x":        "2026-11-19T00:00:00.123456Z",
		"2026-11-19T08:00:00+0000 host kubelet[1]: journalctl short": "2026-11-19T08:00:00Z",
	} {
		got, ok := lineTime(in, now, fixedNow.Location())
		if !ok || got.UTC().Format("2006-01-02T15:04:05.999999Z07:00") != want {
			t.Errorf("%q: %v %v", in, got.UTC(), ok)
		}
	}
	if _, ok := lineTime("SLUB: Unable to allocate", now, fixedNow.Location()); ok {
		t.Error("no time in a kernel message")
	}
}
