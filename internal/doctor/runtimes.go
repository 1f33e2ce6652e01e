package doctor

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

const (
	driverCgroupfs = "cgroupfs"
	driverSystemd  = "systemd"
)

// dockerDaemons finds each dockerd (running, or configured and installed)
// and the runtimes it would run containers with. The Docker API is not
// needed: daemon.json and the daemon's command line say the same.
func (n *node) dockerDaemons(procs []proc, v2Only bool) []Daemon {
	var out []Daemon
	for _, p := range procs {
		if isDockerd(p.Args) {
			cfg := lastFlag(p.Args, "config-file")
			if cfg == "" {
				cfg = "/etc/docker/daemon.json"
			}
			out = append(out, n.docker(p.PID, cfg, p.Args, v2Only))
		}
	}
	if len(out) == 0 {
		_, found := n.exists("/etc/docker/daemon.json")
		_, _, installed := n.which("dockerd")
		if found || installed {
			d := n.docker(0, "/etc/docker/daemon.json", nil, v2Only)
			d.Notes = append(d.Notes, "dockerd is not running: this is what it would use")
			out = append(out, d)
		}
	}
	return out
}

// dockerRuntime is a daemon.json "runtimes" entry.
type dockerRuntime struct {
	Path        string         `json:"path"`
	RuntimeType string         `json:"runtimeType"`
	Options     map[string]any `json:"options"`
}

func (n *node) docker(pid int, cfg string, args []string, v2Only bool) Daemon {
	d := Daemon{PID: pid, Config: cfg, CRI: false}
	var conf struct {
		DefaultRuntime string                   `json:"default-runtime"`
		Runtimes       map[string]dockerRuntime `json:"runtimes"`
		ExecOpts       []string                 `json:"exec-opts"`
	}
	if b, err := n.readConfig(cfg); err == nil {
		d.ConfigFound = true
		if err := json.Unmarshal(b, &conf); err != nil {
			n.problem("docker: %s is not valid JSON: %v", cfg, err)
		}
	}
	// Command-line flags come on top of the file (RHEL's docker 1.13 sets
	// everything there, from /etc/sysconfig/docker).
	if v := lastFlag(args, "default-runtime"); v != "" {
		conf.DefaultRuntime = v
	}
	if conf.Runtimes == nil {
		conf.Runtimes = map[string]dockerRuntime{}
	}
	for _, v := range flagValues(args, "add-runtime") {
		if name, p, ok := strings.Cut(v, "="); ok {
			conf.Runtimes[name] = dockerRuntime{Path: p}
		}
	}
	conf.ExecOpts = append(conf.ExecOpts, flagValues(args, "exec-opt")...)
	driver := driverCgroupfs
	if v2Only {
		driver = driverSystemd // dockerd 20.10+'s default on cgroup v2
	}
	for _, o := range conf.ExecOpts {
		if k, v, ok := strings.Cut(o, "="); ok && strings.EqualFold(strings.TrimSpace(k), "native.cgroupdriver") {
			driver = strings.TrimSpace(v)
		}
	}
	d.DefaultRuntime = conf.DefaultRuntime
	if d.DefaultRuntime == "" {
		d.DefaultRuntime = "runc"
	}
	if _, ok := conf.Runtimes["runc"]; !ok {
		// The built-in runtime: "runc" on the daemon's PATH (Docker 18.09
		// and later; 17.x and 18.06 called it docker-runc).
		bin := "runc"
		if _, _, ok := n.which("runc"); !ok {
			if _, _, ok := n.which("docker-runc"); ok {
				bin = "docker-runc"
			}
		}
		d.Runtimes = append(d.Runtimes, Runtime{Name: "runc", Binary: bin, Source: "built in"})
	}
	for name, r := range conf.Runtimes {
		bin := r.Path
		if bin == "" {
			if b, ok := r.Options["BinaryName"].(string); ok && b != "" {
				bin = b
			} else if r.RuntimeType == "" || strings.HasPrefix(r.RuntimeType, "io.containerd.runc.") {
				bin = "runc"
			}
		}
		src := cfg
		for _, v := range flagValues(args, "add-runtime") {
			if strings.HasPrefix(v, name+"=") {
				src = "--add-runtime"
			}
		}
		d.Runtimes = append(d.Runtimes, Runtime{Name: name, Binary: bin, Source: src})
	}
	n.finishRuntimes(&d, driver)
	return d
}

// finishRuntimes resolves binaries, marks the default and sorts.
func (n *node) finishRuntimes(d *Daemon, driver string) {
	found := false
	for i := range d.Runtimes {
		r := &d.Runtimes[i]
		if r.CgroupDriver == "" {
			r.CgroupDriver = driver
		}
		if np, _, ok := n.which(r.Binary); ok {
			r.Path = np
		}
		if r.Name == d.DefaultRuntime {
			r.Default, found = true, true
		}
	}
	if !found {
		d.Notes = append(d.Notes, fmt.Sprintf("the default runtime %q is not defined", d.DefaultRuntime))
	}
	sort.Slice(d.Runtimes, func(i, j int) bool {
		if d.Runtimes[i].Default != d.Runtimes[j].Default {
			return d.Runtimes[i].Default
		}
		return d.Runtimes[i].Name < d.Runtimes[j].Name
	})
}

// containerdDaemons finds each containerd with the runtimes its CRI
// plugin runs pods with.
func (n *node) containerdDaemons(procs []proc) []Daemon {
	var out []Daemon
	for _, p := range procs {
		if isContainerd(p.Args) {
			cfg := lastFlag(p.Args, "config", "c")
			if cfg == "" {
				cfg = "/etc/containerd/config.toml"
			}
			out = append(out, n.containerd(p.PID, cfg))
		}
	}
	if len(out) == 0 {
		_, found := n.exists("/etc/containerd/config.toml")
		_, _, installed := n.which("containerd")
		if found || installed {
			d := n.containerd(0, "/etc/containerd/config.toml")
			d.Notes = append(d.Notes, "containerd is not running: this is what it would use")
			out = append(out, d)
		}
	}
	return out
}

// Where each config version keeps the CRI plugin's runtimes (containerd
// docs/cri/config.md and its 2.x "io.containerd.cri.v1.runtime" split),
// and the legacy io.containerd.runtime.v1.linux plugin's runc.
var criTables = map[int64]struct{ cri, linux string }{
	1: {"cri", "linux"},
	2: {"io.containerd.grpc.v1.cri", "io.containerd.runtime.v1.linux"},
	3: {"io.containerd.cri.v1.runtime", ""},
}

func (n *node) containerd(pid int, cfg string) Daemon {
	d := Daemon{PID: pid, Config: cfg, CRI: true, DefaultRuntime: "runc"}
	conf := map[string]any{}
	if b, err := n.readConfig(cfg); err == nil {
		d.ConfigFound = true
		if err := toml.Unmarshal(b, &conf); err != nil {
			n.problem("containerd: %s is not valid TOML: %v", cfg, err)
			conf = map[string]any{}
		}
	}
	// A file without version (or dockerd's generated one, version = 0) is
	// read as version 1.
	version := int64(1)
	if v, ok := conf["version"].(int64); ok && v > 1 {
		version = v
	}
	if !d.ConfigFound {
		version = 2 // containerd's built-in defaults
	}
	d.ConfigVersion = int(version)
	keys, ok := criTables[version]
	if !ok {
		n.problem("containerd: %s has config version %d, which the doctor does not know", cfg, version)
		return d
	}
	if dis, ok := conf["disabled_plugins"].([]any); ok {
		for _, p := range dis {
			if p == "cri" || p == "io.containerd.grpc.v1.cri" || p == keys.cri {
				d.CRI = false
			}
		}
	}
	if !d.CRI {
		d.Notes = append(d.Notes, "the CRI plugin is disabled: this containerd serves docker only, with docker's runtime")
		return d
	}
	cri := table(table(conf, "plugins"), keys.cri)
	ctrd := table(cri, "containerd")
	// The legacy v1 shim's runc: plugins.linux.runtime (version 1) or
	// plugins."io.containerd.runtime.v1.linux".runtime.
	linuxRunc := "runc"
	if keys.linux != "" {
		if r, ok := table(table(conf, "plugins"), keys.linux)["runtime"].(string); ok && r != "" {
			linuxRunc = r
		}
	}
	legacySystemd, _ := cri["systemd_cgroup"].(bool)
	runtime := func(name string, t map[string]any, src string) Runtime {
		rt := Runtime{Name: name, Source: src}
		typ, _ := t["runtime_type"].(string)
		opts := table(t, "options")
		switch {
		case typ == "" || strings.HasPrefix(typ, "io.containerd.runc."):
			rt.Binary = "runc"
			if b, ok := opts["BinaryName"].(string); ok && b != "" {
				rt.Binary = b
			}
			rt.CgroupDriver = driverCgroupfs
			if s, _ := opts["SystemdCgroup"].(bool); s {
				rt.CgroupDriver = driverSystemd
			}
		case typ == "io.containerd.runtime.v1.linux":
			rt.Binary = linuxRunc
			if e, ok := t["runtime_engine"].(string); ok && e != "" {
				rt.Binary = e
			}
			rt.CgroupDriver = driverCgroupfs
			if legacySystemd {
				rt.CgroupDriver = driverSystemd
			}
		default:
			d.Notes = append(d.Notes, fmt.Sprintf("runtime %q has runtime_type %s, not runc: not checked", name, typ))
			rt.CgroupDriver = "n/a"
		}
		return rt
	}
	where := fmt.Sprintf("%s: plugins.%q.containerd", cfg, keys.cri)
	if v, ok := ctrd["default_runtime_name"].(string); ok && v != "" {
		d.DefaultRuntime = v
	} else if dr := table(ctrd, "default_runtime"); len(dr) > 0 {
		// containerd 1.2's form: an unnamed default runtime.
		d.DefaultRuntime = "default_runtime"
		d.Runtimes = append(d.Runtimes, runtime("default_runtime", dr, where+".default_runtime"))
	}
	rts := table(ctrd, "runtimes")
	for name := range rts {
		d.Runtimes = append(d.Runtimes, runtime(name, table(rts, name), where+".runtimes."+name))
	}
	if _, ok := rts["runc"]; !ok && d.DefaultRuntime == "runc" {
		// containerd's built-in default: runc through the runc.v2 shim,
		// SystemdCgroup = false.
		d.Runtimes = append(d.Runtimes, runtime("runc", map[string]any{"runtime_type": "io.containerd.runc.v2"}, "built in"))
	}
	var bins []Runtime
	for _, r := range d.Runtimes {
		if r.Binary != "" {
			bins = append(bins, r)
		} else if r.Name == d.DefaultRuntime {
			bins = append(bins, r)
		}
	}
	d.Runtimes = bins
	n.finishRuntimes(&d, driverCgroupfs)
	return d
}

// table returns m[key] as a TOML table, or an empty one.
func table(m map[string]any, key string) map[string]any {
	if t, ok := m[key].(map[string]any); ok {
		return t
	}
	return map[string]any{}
}
