package doctor

import (
	"bytes"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// proc is a process of the node, found through /proc/<pid>/cmdline: no
// ps, no ptrace. cmdline is world-readable; /proc/<pid>/exe needs ptrace
// access (CAP_SYS_PTRACE from a container) and is used only if readable.
type proc struct {
	PID  int
	Args []string
	Exe  string // the node path of the executable, "" if unreadable
	// Deleted: the executable was removed or replaced since it started.
	Deleted bool
}

func (n *node) processes() []proc {
	entries, err := os.ReadDir(n.host("/proc"))
	if err != nil {
		n.problem("cannot list processes: %v", err)
		return nil
	}
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(n.host("/proc/" + e.Name() + "/cmdline"))
		if err != nil || len(b) == 0 {
			continue // exited, or a kernel thread
		}
		args := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
		p := proc{PID: pid, Args: args}
		if exe, err := os.Readlink(n.host("/proc/" + e.Name() + "/exe")); err == nil {
			p.Exe, p.Deleted = strings.CutSuffix(exe, " (deleted)")
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out
}

func base(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return path.Base(args[0])
}

// Which processes are which. dockerd-current and docker-containerd-current
// are RHEL 7's docker 1.13; docker-containerd is Docker 17.x's bundled one.
func isKubelet(args []string) bool {
	b := base(args)
	return b == "kubelet" || (b == "hyperkube" && len(args) > 1 && args[1] == "kubelet")
}

func isDockerd(args []string) bool {
	b := base(args)
	return b == "dockerd" || b == "dockerd-current" || (b == "docker" && len(args) > 1 && (args[1] == "daemon" || args[1] == "-d"))
}

func isContainerd(args []string) bool {
	b := base(args)
	return b == "containerd" || b == "docker-containerd" || b == "docker-containerd-current"
}

// flagValues returns every value given to the long flag name (Go flag and
// pflag syntax: --name=value, --name value, -name=value, -name value).
func flagValues(args []string, name string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		for _, p := range []string{"--" + name, "-" + name} {
			if v, ok := strings.CutPrefix(a, p+"="); ok {
				out = append(out, v)
			} else if a == p && i+1 < len(args) {
				out = append(out, args[i+1])
				i++
			}
		}
	}
	return out
}

func lastFlag(args []string, names ...string) string {
	v := ""
	for _, n := range names {
		if vs := flagValues(args, n); len(vs) > 0 {
			v = vs[len(vs)-1]
		}
	}
	return v
}

// servicePath is the PATH systemd gives services, where a daemon looks up
// a runtime named without a directory ("runc").
var servicePath = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// which finds the node's executable for bin (a path, or a name looked up
// in servicePath), following symlinks inside the root. It returns the
// node's path of the file and this machine's path to read it at.
func (n *node) which(bin string) (nodePath, hostPath string, ok bool) {
	if bin == "" {
		return "", "", false
	}
	cands := []string{bin}
	if !strings.Contains(bin, "/") {
		cands = cands[:0]
		for _, d := range servicePath {
			cands = append(cands, d+"/"+bin)
		}
	} else if !filepath.IsAbs(bin) {
		cands = []string{"/" + bin}
	}
	for _, c := range cands {
		hp, err := n.resolve(c)
		if err != nil {
			continue
		}
		if n.root == "/" {
			if hp, err = filepath.EvalSymlinks(c); err != nil {
				continue
			}
		}
		fi, err := os.Stat(hp)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
			continue
		}
		np := hp
		if n.root != "/" {
			np = "/" + strings.TrimPrefix(strings.TrimPrefix(hp, filepath.Clean(n.root)), "/")
		}
		return np, hp, true
	}
	return "", "", false
}
