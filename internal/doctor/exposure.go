package doctor

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Kmem models: how a kernel turns kernel-memory accounting on.
const (
	// modelOptIn: off in every memory cgroup until something writes
	// memory.kmem.limit_in_bytes (runc writes 1, then -1). Kernels before
	// 4.6, EL7's 3.10 among them; the leak is the memcg of such a cgroup
	// never being freed.
	modelOptIn = "opt-in"
	// modelAlways: on in every memory cgroup of the v1 hierarchy (Linux
	// b313aeee2509, 4.6); writing the file changes nothing that matters
	// here, and from 5.16 nothing at all.
	modelAlways = "always"
	// modelOff: cgroup.memory=nokmem honoured.
	modelOff     = "off"
	modelNone    = "none"
	modelUnknown = "unknown"
)

// el7NokmemRelease is the first EL7 kernel build with cgroup.memory=nokmem:
// Red Hat documents the parameter for RHEL 7.7 and later, whose kernel is
// 3.10.0-1062 (access.redhat.com/solutions/5785961, as quoted in the
// user's write-ups; reports of it working: docker/for-linux#841 on
// 3.10.0-1062.x, kubernetes/kubernetes#61937 on 3.10.0-1160.21.1).
const el7NokmemRelease = 1062

// facts are what the exposure step read, for the later steps.
type facts struct {
	kernel      kernelVersion
	layout      cgroupLayout
	memDir      string // this machine's path of the v1 memory hierarchy's root
	procCgroups map[string]procCgroup
	boot        time.Time // zero if unknown
}

func (n *node) exposure() (Exposure, facts) {
	var e Exposure
	var f facts
	if b, err := n.read("/proc/sys/kernel/osrelease"); err == nil {
		f.kernel = parseKernel(string(b))
	} else if n.root == "/" {
		var u unix.Utsname
		if unix.Uname(&u) == nil {
			f.kernel = parseKernel(unix.ByteSliceToString(u.Release[:]))
		}
	}
	e.Kernel = f.kernel.Raw
	e.KernelFamily = f.kernel.family()
	if !f.kernel.OK {
		n.problem("cannot read the kernel version (/proc/sys/kernel/osrelease under %s)", n.root)
	}
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		if b, err := n.readConfig(p); err == nil {
			m := osRelease(b)
			e.Distribution, e.OSID, e.OSVersionID = m["PRETTY_NAME"], m["ID"], m["VERSION_ID"]
			break
		}
	}
	if b, err := n.read("/proc/cmdline"); err == nil {
		e.NokmemParam = nokmemParam(string(b))
	} else {
		n.problem("cannot read /proc/cmdline: %v", err)
	}
	if b, err := n.read("/proc/cgroups"); err == nil {
		f.procCgroups = parseProcCgroups(b)
	} else {
		n.problem("cannot read /proc/cgroups: %v", err)
	}
	if b, err := n.read("/proc/stat"); err == nil {
		f.boot = bootTime(b)
	}

	f.layout = n.layout()
	e.CgroupMode = f.layout.Mode
	pc, pcOK := f.procCgroups["memory"]
	switch {
	case pcOK && !pc.Enabled:
		e.MemoryController = "absent"
	case f.layout.MemoryV1 != nil:
		e.MemoryController = "v1"
		e.MemoryMount = f.layout.MemoryV1.Point
		if f.layout.MemoryV1.Root != "/" {
			n.problem("the memory hierarchy is mounted from %s, not its root (a container's view): the walk sees only that part", f.layout.MemoryV1.Root)
		}
		dir := n.host(e.MemoryMount)
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			n.problem("the memory hierarchy is mounted at %s on the node, but %s is not a directory here (mount it into the doctor's root)", e.MemoryMount, dir)
		} else if real, err := filepath.EvalSymlinks(dir); err == nil {
			f.memDir = real // the walk does not descend through a symlink
		} else {
			f.memDir = dir
		}
	case f.layout.V2 != nil:
		e.MemoryController = "absent"
		if b, err := n.read(f.layout.V2.Point + "/cgroup.controllers"); err == nil && hasWord(string(b), "memory") {
			e.MemoryController = "v2"
		} else if pcOK && pc.Hierarchy == 0 && pc.Enabled {
			e.MemoryController = "v2"
		}
	case f.layout.Mode == "unknown":
		e.MemoryController = "unknown"
	default:
		e.MemoryController = "absent"
	}

	e.NokmemHonoured, e.NokmemEvidence = nokmemHonoured(e.NokmemParam, f.kernel)
	switch {
	case e.MemoryController == "unknown":
		e.KmemModel = modelUnknown
	case e.MemoryController != "v1":
		e.KmemModel = modelNone
	case !f.kernel.OK:
		e.KmemModel = modelUnknown
	case e.NokmemHonoured == "yes":
		e.KmemModel = modelOff
	case f.kernel.before(4, 6):
		e.KmemModel = modelOptIn
	default:
		e.KmemModel = modelAlways
	}
	e.Exposed, e.Why = exposed(e, f.kernel)
	return e, f
}

// nokmemHonoured says whether this kernel acts on cgroup.memory=nokmem,
// with the evidence. The walk can later prove a "yes" or "unverified"
// wrong (a cgroup with kmem accounting on).
func nokmemHonoured(param bool, k kernelVersion) (string, string) {
	switch {
	case !param:
		return "n/a", ""
	case !k.OK:
		return "unverified", "the kernel version is unknown"
	case k.EL == 7 && k.ELRelease >= el7NokmemRelease:
		return "yes", fmt.Sprintf("EL7 kernel build %d: Red Hat supports cgroup.memory=nokmem from RHEL 7.7 (3.10.0-%d) on (access.redhat.com/solutions/5785961); reported working on 3.10.0-1062.x (docker/for-linux#841) and 3.10.0-1160.21.1 (kubernetes/kubernetes#61937)", k.ELRelease, el7NokmemRelease)
	case k.EL == 7:
		return "unverified", fmt.Sprintf("EL7 kernel build %d is older than RHEL 7.7's 3.10.0-%d, the first Red Hat documents the parameter for; it most likely ignores it (the kmem walk is the test)", k.ELRelease, el7NokmemRelease)
	case !k.before(4, 6):
		return "yes", "upstream kernels take cgroup.memory=nokmem from 4.6 on (mm/memcontrol.c cgroup_memory(), Vladimir Davydov's \"allow to disable kmem accounting\", linux-mm, December 2015)"
	default:
		return "unverified", "upstream kernels before 4.6 lack the parameter; a vendor kernel may have backported it (the kmem walk is the test)"
	}
}

func exposed(e Exposure, k kernelVersion) (bool, string) {
	switch {
	case e.MemoryController == "v2":
		return false, "the memory controller is on cgroup v2, which this leak does not affect (memory.kmem.limit_in_bytes does not exist there)"
	case e.MemoryController == "absent":
		return false, "there is no memory controller to leak from"
	case e.MemoryController == "unknown":
		return false, "the cgroup layout could not be read"
	case e.KmemModel == modelUnknown:
		return false, "the kernel version is unknown"
	case e.KmemModel == modelOff:
		return false, "cgroup.memory=nokmem is set and this kernel honours it: kmem accounting cannot be turned on"
	case e.KmemModel == modelAlways:
		return false, fmt.Sprintf("kernel %d.%d accounts kernel memory in every memory cgroup by itself (4.6 and later), so a runtime writing memory.kmem.limit_in_bytes changes nothing; the EL7 3.10 leak of kmem-enabled cgroups does not apply", k.Major, k.Minor)
	}
	return true, fmt.Sprintf("kernel %s keeps kmem accounting off until something writes memory.kmem.limit_in_bytes (runc and kubelet do, on the cgroupfs driver), and the memory controller is on cgroup v1", k.Raw)
}

// bootTime reads btime from /proc/stat.
func bootTime(b []byte) time.Time {
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("btime ")); ok {
			if s, err := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64); err == nil {
				return time.Unix(s, 0)
			}
		}
	}
	return time.Time{}
}

func hasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}
