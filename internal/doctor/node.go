package doctor

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
)

// node is the machine under diagnosis, seen through a root directory: "/"
// on the node itself, or a directory holding the node's files (a fixture,
// or the host paths a DaemonSet mounts under /host).
type node struct {
	root string
	// readFile reads a file by its path on this machine (root joined);
	// tests replace it to make memory.kmem.slabinfo fail with EIO.
	readFile func(string) ([]byte, error)
	problems []string
}

func (n *node) problem(format string, a ...any) {
	n.problems = append(n.problems, fmt.Sprintf(format, a...))
}

// host is where the node's path p is on this machine. Used for /proc and
// /sys, whose files the doctor reads without following symlinks.
func (n *node) host(p string) string { return filepath.Join(n.root, p) }

// resolve is host for paths whose symlinks were written for the node
// (/usr/bin/runc -> ../sbin/runc, /etc/os-release -> ../usr/lib/os-release):
// they are followed inside the root, never out of it.
func (n *node) resolve(p string) (string, error) {
	if n.root == "/" {
		return filepath.Clean(p), nil
	}
	return securejoin.SecureJoin(n.root, p)
}

// read reads the node's /proc or /sys file p.
func (n *node) read(p string) ([]byte, error) { return n.readFile(n.host(p)) }

// readConfig reads the node's configuration file p, following symlinks
// inside the root.
func (n *node) readConfig(p string) ([]byte, error) {
	hp, err := n.resolve(p)
	if err != nil {
		return nil, err
	}
	return n.readFile(hp)
}

// exists reports whether the node's path p is a regular file (following
// symlinks inside the root), and where it is on this machine.
func (n *node) exists(p string) (string, bool) {
	hp, err := n.resolve(p)
	if err != nil {
		return "", false
	}
	fi, err := os.Stat(hp)
	return hp, err == nil && fi.Mode().IsRegular()
}

// kernelVersion is a parsed release string, e.g. 3.10.0-1160.el7.x86_64.
type kernelVersion struct {
	Raw          string
	Major, Minor int
	OK           bool
	// EL is the Enterprise Linux major (7 for .el7) and ELRelease the
	// build number after the dash (1160 in 3.10.0-1160.el7).
	EL, ELRelease int
}

var (
	kernelRE = regexp.MustCompile(`^(\d+)\.(\d+)`)
	elRE     = regexp.MustCompile(`^\d+\.\d+\.\d+-(\d+)[^ ]*\.el(\d+)`)
)

func parseKernel(s string) kernelVersion {
	k := kernelVersion{Raw: strings.TrimSpace(s)}
	m := kernelRE.FindStringSubmatch(k.Raw)
	if m == nil {
		return k
	}
	k.Major, _ = strconv.Atoi(m[1])
	k.Minor, _ = strconv.Atoi(m[2])
	k.OK = true
	if m := elRE.FindStringSubmatch(k.Raw); m != nil {
		k.ELRelease, _ = strconv.Atoi(m[1])
		k.EL, _ = strconv.Atoi(m[2])
	}
	return k
}

func (k kernelVersion) before(major, minor int) bool {
	return k.Major < major || (k.Major == major && k.Minor < minor)
}

func (k kernelVersion) family() string {
	if k.EL > 0 {
		return fmt.Sprintf("el%d", k.EL)
	}
	return "upstream"
}

// osRelease parses /etc/os-release (KEY=value, values optionally quoted).
func osRelease(b []byte) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
			v = strings.NewReplacer(`\"`, `"`, `\$`, `$`, "\\`", "`", `\\`, `\`).Replace(v)
		}
		m[k] = v
	}
	return m
}

// nokmemParam reports whether the kernel command line disables kmem
// accounting: cgroup.memory= takes a comma-separated list (nokmem,
// nosocket, nobpf), and any occurrence naming nokmem sets it, as
// mm/memcontrol.c's cgroup_memory() does.
func nokmemParam(cmdline string) bool {
	for _, f := range strings.Fields(cmdline) {
		if f == "--" {
			break // what follows goes to init, not the kernel
		}
		v, ok := strings.CutPrefix(f, "cgroup.memory=")
		if !ok {
			continue
		}
		for _, tok := range strings.Split(v, ",") {
			if tok == "nokmem" {
				return true
			}
		}
	}
	return false
}

// mount is one line of /proc/<pid>/mountinfo.
type mount struct {
	Root, Point, FSType string
	SuperOpts           []string
}

func (m mount) hasOpt(o string) bool {
	for _, s := range m.SuperOpts {
		if s == o {
			return true
		}
	}
	return false
}

// parseMountinfo reads the format of proc(5): fields up to the optional
// ones, "-", then the filesystem type, source and super options.
func parseMountinfo(b []byte) []mount {
	var out []mount
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 6 || sep < 0 {
			continue
		}
		m := mount{Root: unescapeMount(f[3]), Point: unescapeMount(f[4])}
		if sep+1 < len(f) {
			m.FSType = f[sep+1]
		}
		if sep+3 < len(f) {
			m.SuperOpts = strings.Split(f[sep+3], ",")
		}
		out = append(out, m)
	}
	return out
}

// unescapeMount undoes the kernel's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cgroupLayout is what the mounts say about cgroups.
type cgroupLayout struct {
	Mode     string // v1, hybrid, v2, none
	MemoryV1 *mount
	V2       *mount
	Source   string // the mountinfo file read
}

// layout finds the cgroup mounts. It reads /proc/1/mountinfo first: in a
// container given the host's /proc, that is the host's view, while
// /proc/self is the container's; on the node itself both agree.
func (n *node) layout() cgroupLayout {
	for _, p := range []string{"/proc/1/mountinfo", "/proc/self/mountinfo"} {
		b, err := n.read(p)
		if err != nil {
			continue
		}
		l := cgroupLayout{Source: p}
		hasV1 := false
		for _, m := range parseMountinfo(b) {
			m := m
			// A container's own view of the host paths mounted under its
			// root: make them the node's paths again.
			if n.root != "/" {
				if rel, ok := strings.CutPrefix(m.Point, n.root+"/"); ok {
					m.Point = "/" + rel
				}
			}
			switch m.FSType {
			case "cgroup2":
				if l.V2 == nil {
					l.V2 = &m
				}
			case "cgroup":
				if controllerOpts(m) {
					hasV1 = true
				}
				if m.hasOpt("memory") && (l.MemoryV1 == nil || (l.MemoryV1.Root != "/" && m.Root == "/")) {
					l.MemoryV1 = &m
				}
			}
		}
		switch {
		case hasV1 && l.V2 != nil:
			l.Mode = "hybrid"
		case hasV1:
			l.Mode = "v1"
		case l.V2 != nil:
			l.Mode = "v2"
		default:
			l.Mode = "none"
		}
		return l
	}
	n.problem("cannot read /proc/1/mountinfo or /proc/self/mountinfo under %s: the cgroup mode is unknown", n.root)
	return cgroupLayout{Mode: "unknown"}
}

// controllerOpts reports whether a v1 mount carries a controller (not only
// a named hierarchy such as name=systemd).
func controllerOpts(m mount) bool {
	for _, o := range m.SuperOpts {
		switch o {
		case "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "net_cls", "net_prio", "perf_event", "hugetlb", "rdma", "misc":
			return true
		}
	}
	return false
}

// procCgroup is one line of /proc/cgroups.
type procCgroup struct {
	Hierarchy, Num int
	Enabled        bool
}

func parseProcCgroups(b []byte) map[string]procCgroup {
	out := map[string]procCgroup{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || strings.HasPrefix(f[0], "#") {
			continue
		}
		h, err1 := strconv.Atoi(f[1])
		num, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil {
			continue
		}
		out[f[0]] = procCgroup{Hierarchy: h, Num: num, Enabled: f[3] == "1"}
	}
	return out
}
