package verify

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// cgroupMount is one cgroup filesystem from /proc/self/mountinfo.
type cgroupMount struct {
	dir     string
	fsType  string   // cgroup (v1) or cgroup2
	options []string // super options: the v1 controllers, name=…
}

func readCgroupMounts() ([]cgroupMount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []cgroupMount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || len(fields) < sep+4 || (fields[sep+1] != "cgroup" && fields[sep+1] != "cgroup2") {
			continue
		}
		out = append(out, cgroupMount{dir: fields[4], fsType: fields[sep+1], options: strings.Split(fields[sep+3], ",")})
	}
	return out, sc.Err()
}

// cgroupMounts returns the mount point of every cgroup hierarchy, each once.
func cgroupMounts() []string {
	ms, _ := readCgroupMounts()
	seen := map[string]bool{}
	var out []string
	for _, m := range ms {
		if !seen[m.dir] {
			seen[m.dir] = true
			out = append(out, m.dir)
		}
	}
	return out
}

// MemoryMount returns the mount point of the cgroup v1 memory hierarchy.
func MemoryMount() (string, error) {
	ms, err := readCgroupMounts()
	if err != nil {
		return "", err
	}
	for _, m := range ms {
		if m.fsType != "cgroup" {
			continue
		}
		for _, o := range m.options {
			if o == "memory" {
				return m.dir, nil
			}
		}
	}
	return "", errors.New("no cgroup v1 memory hierarchy is mounted")
}

// HostProblem says why the dynamic check cannot run here ("" if it can).
func HostProblem() string {
	if os.Geteuid() != 0 {
		return "the dynamic check needs root"
	}
	m, err := MemoryMount()
	if err != nil {
		return err.Error() + " (cgroup v2-only hosts cannot run the kmem leak, nor this check)"
	}
	if _, err := os.Stat(filepath.Join(m, KmemFile)); err != nil {
		return "the memory hierarchy at " + m + " has no " + KmemFile + " (kernel built without kmem accounting, or Linux 6.1+)"
	}
	return ""
}

// KernelRelease returns uname -r.
func KernelRelease() string { return kernelRelease() }

func kernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// kernelBefore4 reports a kernel (like RHEL 7's 3.10) whose memcg exposes
// memory.kmem.slabinfo only while kmem accounting is active.
func kernelBefore4(rel string) bool {
	var major int
	fmt.Sscanf(rel, "%d.", &major)
	return major > 0 && major < 4
}

// slabinfoState: on Linux < 4.0, memory.kmem.slabinfo fails with EIO
// unless kmem accounting was activated for the cgroup.
func slabinfoState(cg string) string {
	f, err := os.Open(filepath.Join(cg, "memory.kmem.slabinfo"))
	if err != nil {
		return "absent"
	}
	defer f.Close()
	_, err = f.Read(make([]byte, 256))
	switch {
	case errors.Is(err, syscall.EIO):
		return "EIO (kmem accounting inactive)"
	case err == nil || err == io.EOF:
		return "readable"
	}
	return "error: " + err.Error()
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }
