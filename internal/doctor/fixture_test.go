package doctor

import (
	"bytes"
	"fmt"
	"github.com/nokmem/nokmem/verify"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A fixture node: a directory standing in for "/", holding /proc and /sys
// files, a memory cgroup tree, configuration files, logs and binaries.

// fixedNow is the fixtures' clock; they booted ten days before.
var (
	fixedNow  = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	fixedBoot = fixedNow.Add(-10 * 24 * time.Hour)
)

// The byte signatures verify.Static reads (verify/static.go). The fixture
// binaries are not ELF files, and the real verifier rightly calls a file
// with one string and no libcontainer code unknown, so the fixtures judge
// them through the Static seam by the same signatures (fixtureStatic).
const (
	kmemEnabledBinary = "\x7fFAKE runc: memory.kmem.limit_in_bytes because either tasks have already joined this cgroup or it has children\n"
	nokmemBinary      = "\x7fFAKE runc: kernel memory accounting disabled in this runc build\n"
	unknownBinary     = "\x7fFAKE runc: stripped, nothing to tell\n"
)

type fixture struct {
	t    *testing.T
	root string
	// eio are this machine's paths whose read fails with EIO, as
	// memory.kmem.slabinfo does on 3.10 where kmem accounting is off.
	eio map[string]bool
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return &fixture{t: t, root: t.TempDir(), eio: map[string]bool{}}
}

func (f *fixture) write(p, content string) {
	f.writeMode(p, content, 0o644)
}

func (f *fixture) writeMode(p, content string, mode os.FileMode) {
	f.t.Helper()
	hp := filepath.Join(f.root, p)
	if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(hp, []byte(content), mode); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) mkdir(p string) {
	f.t.Helper()
	if err := os.MkdirAll(filepath.Join(f.root, p), 0o755); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) symlink(target, p string) {
	f.t.Helper()
	f.mkdir(filepath.Dir(p))
	if err := os.Symlink(target, filepath.Join(f.root, p)); err != nil {
		f.t.Fatal(err)
	}
}

// readFile is the seam: EIO for the marked paths.
func (f *fixture) readFile(p string) ([]byte, error) {
	if f.eio[p] {
		return nil, &fs.PathError{Op: "read", Path: p, Err: syscall.EIO}
	}
	return os.ReadFile(p)
}

func (f *fixture) options() Options {
	return Options{Root: f.root, ReadFile: f.readFile, Now: func() time.Time { return fixedNow }, Location: time.UTC, Static: fixtureStatic}
}

// kernel writes the kernel release, command line, boot time and host name.
func (f *fixture) kernel(release, cmdline, host string) {
	f.write("/proc/sys/kernel/osrelease", release+"\n")
	f.write("/proc/cmdline", cmdline+"\n")
	f.write("/proc/sys/kernel/hostname", host+"\n")
	f.write("/proc/stat", fmt.Sprintf("cpu  1 2 3 4\nbtime %d\nprocesses 42\n", fixedBoot.Unix()))
	f.write("/dev/kmsg", "")
}

const centos7 = `NAME="CentOS Linux"
VERSION="7 (Core)"
ID="centos"
ID_LIKE="rhel fedora"
VERSION_ID="7"
PRETTY_NAME="CentOS Linux 7 (Core)"
`

// v1 mounts the EL7 way: one hierarchy per controller, no cgroup2.
func (f *fixture) v1(memcgs int) {
	f.write("/proc/self/mountinfo", `19 41 0:18 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw
24 19 0:20 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:7 - tmpfs tmpfs ro,mode=755
25 24 0:21 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:8 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
28 24 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,cpuacct,cpu
32 24 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
33 24 0:29 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,devices
`)
	f.write("/proc/cgroups", fmt.Sprintf("#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t3\t80\t1\ncpuacct\t3\t80\t1\nmemory\t6\t%d\t1\ndevices\t7\t80\t1\n", memcgs))
	for _, c := range []string{"dentry", "kmalloc-64", "inode_cache", ":t-0000192"} {
		f.mkdir("/sys/kernel/slab/" + c)
	}
}

// kmemFiles are one cgroup's kmem files; slab is "eio", "absent", or the
// file's content.
type kmemFiles struct {
	slab                 string
	usage, max, failcnt  uint64
	limit                string
	noUsage, noKmemAtAll bool
}

const slabHeader = "slabinfo - version: 2.1\n# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n"

// cgroup writes a memory cgroup at rel under /sys/fs/cgroup/memory.
func (f *fixture) cgroup(rel string, k kmemFiles) {
	dir := "/sys/fs/cgroup/memory" + strings.TrimSuffix(rel, "/")
	f.mkdir(dir)
	if k.noKmemAtAll {
		return
	}
	switch k.slab {
	case "absent":
	case "eio":
		// No file: only the seam makes it fail with EIO, so without the
		// seam it reads as absent, never as a readable (active) one.
		f.eio[filepath.Join(f.root, dir, "memory.kmem.slabinfo")] = true
	default:
		f.write(dir+"/memory.kmem.slabinfo", k.slab)
	}
	if !k.noUsage {
		f.write(dir+"/memory.kmem.usage_in_bytes", fmt.Sprintf("%d\n", k.usage))
		f.write(dir+"/memory.kmem.max_usage_in_bytes", fmt.Sprintf("%d\n", k.max))
		f.write(dir+"/memory.kmem.failcnt", fmt.Sprintf("%d\n", k.failcnt))
	}
	limit := k.limit
	if limit == "" {
		limit = "9223372036854775807" // 3.10's unlimited
	}
	f.write(dir+"/memory.kmem.limit_in_bytes", limit+"\n")
}

var (
	off    = kmemFiles{slab: "eio"}
	active = kmemFiles{slab: slabHeader + "dentry(3:c1) 120 120 192 21 1 : tunables 0 0 0 : slabdata 6 6 0\n", usage: 1 << 20, max: 2 << 20}
)

// proc writes a process's /proc/<pid>/cmdline.
func (f *fixture) proc(pid int, args ...string) {
	f.write(fmt.Sprintf("/proc/%d/cmdline", pid), strings.Join(args, "\x00")+"\x00")
}

func (f *fixture) binary(p, content string) { f.writeMode(p, content, 0o755) }

// el7 is a CentOS 7 node with docker (containerd.io's containerd with
// the CRI plugin off) and a kubelet on the cgroupfs driver; the runc and
// kubelet binaries and the cgroups' kmem state are the scenario's.
func el7(t *testing.T, release, cmdline string, runc, kubelet string, pod kmemFiles) *fixture {
	f := newFixture(t)
	f.kernel(release, cmdline, "node-el7")
	f.write("/usr/lib/os-release", centos7)
	f.symlink("../usr/lib/os-release", "/etc/os-release")
	ctr := "c1"
	f.v1(9)
	f.cgroup("/", off)
	f.cgroup("/system.slice", off)
	f.cgroup("/system.slice/docker.service", off)
	f.cgroup("/kubepods", off)
	f.cgroup("/kubepods/besteffort", off)
	f.cgroup("/kubepods/burstable", off)
	f.cgroup("/kubepods/burstable/pod0b1c", pod)
	f.cgroup("/kubepods/burstable/pod0b1c/"+ctr, pod)
	f.cgroup("/user.slice", off)
	if pod.slab != "eio" {
		f.mkdir("/sys/kernel/slab/dentry(3:" + ctr + ")")
		f.mkdir("/sys/kernel/slab/kmalloc-64(3:" + ctr + ")")
		f.mkdir("/sys/kernel/slab/dentry(2:pod0b1c)")
	}
	f.proc(1, "/usr/lib/systemd/systemd", "--switched-root", "--system", "--deserialize", "22")
	f.proc(1100, "/usr/bin/containerd")
	f.proc(1200, "/usr/bin/dockerd", "-H", "fd://", "--containerd=/run/containerd/containerd.sock")
	f.proc(1300, "/usr/bin/kubelet", "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf", "--config=/var/lib/kubelet/config.yaml", "--cgroup-driver=cgroupfs", "--network-plugin=cni")
	f.proc(2000, "/usr/bin/containerd-shim-runc-v2", "-namespace", "moby")
	f.write("/etc/containerd/config.toml", "disabled_plugins = [\"cri\"]\n")
	f.write("/var/lib/kubelet/config.yaml", "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: cgroupfs\n")
	f.binary("/usr/bin/dockerd", "\x7fFAKE dockerd\n")
	f.binary("/usr/bin/containerd", "\x7fFAKE containerd\n")
	f.binary("/usr/bin/runc", runc)
	f.binary("/usr/bin/kubelet", kubelet)
	return f
}

// The scenarios of the issue.

func atRiskNode(t *testing.T) *fixture {
	return el7(t, "3.10.0-957.el7.x86_64", "BOOT_IMAGE=/vmlinuz-3.10.0-957.el7.x86_64 root=/dev/mapper/centos-root ro crashkernel=auto rhgb quiet", kmemEnabledBinary, kmemEnabledBinary, active)
}

func leakingNode(t *testing.T) *fixture {
	f := atRiskNode(t)
	for i := 0; i < 60; i++ {
		f.mkdir(fmt.Sprintf("/sys/kernel/slab/dentry(%d:%064x)", 100+i, i))
	}
	f.write("/dev/kmsg", "4,1021,86400000000,-;SLUB: Unable to allocate memory on node -1 (gfp=0x8020)\n"+
		" SUBSYSTEM=slab\n"+
		"4,1022,86400000100,-;  cache: ip6_dst_cache(120:0000000000000000000000000000000000000000000000000000000000000007), object size: 448, buffer size: 448, default order: 2, min order: 0\n")
	before := fixedBoot.Add(-2 * time.Hour).Format("Jan _2 15:04:05")
	after := fixedNow.Add(-time.Hour).Format("Jan _2 15:04:05")
	f.write("/var/log/messages", before+` node-el7 kubelet[900]: E1110 10:00:00.000000 900 pod_workers.go:190] failed to create container for [kubepods burstable pod0a] : mkdir /sys/fs/cgroup/memory/kubepods/burstable/pod0a: no space left on device
`+after+` node-el7 dockerd[1200]: time="2026-11-20T11:00:00.000000000Z" level=error msg="Handler for POST /v1.39/containers/b98d/start returned error: OCI runtime create failed: container_linux.go:348: starting container process caused \"process_linux.go:279: applying cgroup configuration for process caused \\\"mkdir /sys/fs/cgroup/memory/kubepods/burstable/pod79fe/b98d: no space left on device\\\"\": unknown"
`+after+` node-el7 kubelet[1300]: E1120 11:00:01.000000 1300 remote_runtime.go:92] RunPodSandbox from runtime service failed: mkdir /sys/fs/cgroup/memory/kubepods/burstable/podf1bd: cannot allocate memory
`+after+` node-el7 kernel: SLUB: Unable to allocate memory on node -1 (gfp=0x8020)
`)
	return f
}

// fixedNode: runc-nokmem installed and docker's default, a nokmem kubelet,
// the kmem-enabled runc left installed beside it; no cgroup has kmem on.
func fixedNode(t *testing.T) *fixture {
	f := el7(t, "3.10.0-1160.83.1.el7.x86_64", "BOOT_IMAGE=/vmlinuz-3.10.0-1160.83.1.el7.x86_64 root=/dev/mapper/centos-root ro", kmemEnabledBinary, nokmemBinary, off)
	f.binary("/usr/bin/runc-nokmem", nokmemBinary)
	f.write("/etc/docker/daemon.json", `{
  "default-runtime": "nokmem",
  "runtimes": {"nokmem": {"path": "/usr/bin/runc-nokmem"}},
  "exec-opts": ["native.cgroupdriver=cgroupfs"],
  "log-driver": "json-file"
}
`)
	return f
}

// paramNode: cgroup.memory=nokmem on a kernel that honours it, with the
// kmem-enabled runc and kubelet still in place.
func paramNode(t *testing.T) *fixture {
	return el7(t, "3.10.0-1160.83.1.el7.x86_64", "BOOT_IMAGE=/vmlinuz-3.10.0-1160.83.1.el7.x86_64 ro cgroup.memory=nokmem", kmemEnabledBinary, kmemEnabledBinary, off)
}

// paramIgnoredNode: the parameter on a 7.6 kernel, and cgroups with kmem on.
func paramIgnoredNode(t *testing.T) *fixture {
	return el7(t, "3.10.0-957.1.3.el7.x86_64", "ro cgroup.memory=nokmem", kmemEnabledBinary, kmemEnabledBinary, active)
}

// unknownNode: exposed, nothing active yet, but a runc the static
// verifier cannot judge.
func unknownNode(t *testing.T) *fixture {
	return el7(t, "3.10.0-957.el7.x86_64", "ro", unknownBinary, nokmemBinary, off)
}

// v2Node: Rocky 9 on cgroup v2, containerd with the CRI plugin, kubelet on
// the systemd driver.
func v2Node(t *testing.T) *fixture {
	f := newFixture(t)
	f.kernel("5.14.0-362.8.1.el9_3.x86_64", "BOOT_IMAGE=(hd0,gpt2)/vmlinuz-5.14.0-362.8.1.el9_3.x86_64 root=/dev/mapper/rl-root ro", "node-v2")
	f.write("/etc/os-release", "NAME=\"Rocky Linux\"\nID=\"rocky\"\nVERSION_ID=\"9.3\"\nPRETTY_NAME=\"Rocky Linux 9.3 (Blue Onyx)\"\n")
	f.write("/proc/self/mountinfo", "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,seclabel,nsdelegate,memory_recursiveprot\n")
	f.write("/proc/cgroups", "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t0\t120\t1\nmemory\t0\t120\t1\npids\t0\t120\t1\n")
	f.write("/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n")
	f.proc(1000, "/usr/bin/containerd")
	f.proc(1300, "/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml", "--container-runtime-endpoint=unix:///run/containerd/containerd.sock")
	f.write("/var/lib/kubelet/config.yaml", "kind: KubeletConfiguration\napiVersion: kubelet.config.k8s.io/v1beta1\ncgroupDriver: systemd\n")
	f.write("/etc/containerd/config.toml", `version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = true
`)
	f.binary("/usr/bin/containerd", "\x7fFAKE containerd\n")
	f.binary("/usr/bin/runc", kmemEnabledBinary)
	f.binary("/usr/bin/kubelet", nokmemBinary)
	return f
}

// fixtureStatic is the static verifier's decision on the fixtures' fake
// binaries, by the signatures they carry (the verifier's own rules for
// real ELF files are tested in package verify).
func fixtureStatic(path string) (*verify.StaticResult, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	v := verify.Unknown
	switch {
	case bytes.Contains(b, []byte(verify.KmemFile)):
		v = verify.KmemEnabled
	case bytes.Contains(b, []byte("kernel memory accounting disabled in this runc build")):
		v = verify.NoKmem
	}
	return &verify.StaticResult{Verdict: v, Reasons: []string{"fixture signature"}}, nil
}
