package doctor

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Where systemd keeps the kubelet's unit and its drop-ins, in the order
// systemd reads them (later drop-ins override earlier ones).
var (
	kubeletUnits    = []string{"/etc/systemd/system/kubelet.service", "/run/systemd/system/kubelet.service", "/usr/lib/systemd/system/kubelet.service", "/lib/systemd/system/kubelet.service"}
	kubeletDropins  = []string{"/usr/lib/systemd/system/kubelet.service.d", "/lib/systemd/system/kubelet.service.d", "/run/systemd/system/kubelet.service.d", "/etc/systemd/system/kubelet.service.d"}
	kubeletDefaults = []string{"/usr/bin/kubelet", "/usr/local/bin/kubelet"}
)

// kubelet finds the kubelet: the running process first, then its systemd
// unit, then the usual install paths. nil if there is none.
func (n *node) kubelet(procs []proc) *KubeletConfig {
	var k *KubeletConfig
	var args []string
	for _, p := range procs {
		if isKubelet(p.Args) {
			k = &KubeletConfig{PID: p.PID, Binary: p.Args[0], Source: "process"}
			if p.Exe != "" {
				k.Binary, k.Replaced = p.Exe, p.Deleted
			}
			args = p.Args
			break
		}
	}
	if k == nil {
		if unit, a := n.kubeletUnit(); len(a) > 0 {
			k = &KubeletConfig{Binary: a[0], Source: unit}
			args = a
		}
	}
	if k == nil {
		for _, p := range kubeletDefaults {
			if np, _, ok := n.which(p); ok {
				k = &KubeletConfig{Binary: p, Path: np, Source: "installed (not running, no unit found)"}
				break
			}
		}
	}
	if k == nil {
		return nil
	}
	if k.Path == "" {
		if np, _, ok := n.which(k.Binary); ok {
			k.Path = np
		}
	}
	k.CgroupDriver, k.DriverSource = driverCgroupfs, "the kubelet's default"
	k.ConfigFile = lastFlag(args, "config")
	if k.ConfigFile != "" {
		var c struct {
			CgroupDriver             string `yaml:"cgroupDriver"`
			ContainerRuntimeEndpoint string `yaml:"containerRuntimeEndpoint"`
		}
		if b, err := n.readConfig(k.ConfigFile); err != nil {
			n.problem("kubelet: cannot read its config file %s: %v", k.ConfigFile, err)
		} else if err := yaml.Unmarshal(b, &c); err != nil {
			n.problem("kubelet: %s is not valid YAML: %v", k.ConfigFile, err)
		} else {
			if c.CgroupDriver != "" {
				k.CgroupDriver, k.DriverSource = c.CgroupDriver, k.ConfigFile+" cgroupDriver"
			}
			k.RuntimeEndpoint = c.ContainerRuntimeEndpoint
		}
	}
	if v := lastFlag(args, "cgroup-driver"); v != "" {
		k.CgroupDriver, k.DriverSource = v, "--cgroup-driver"
	}
	if v := lastFlag(args, "container-runtime-endpoint"); v != "" {
		k.RuntimeEndpoint = v
	}
	if lastFlag(args, "container-runtime") == "docker" && k.RuntimeEndpoint == "" {
		k.RuntimeEndpoint = "docker"
	}
	return k
}

// kubeletUnit reads the kubelet's systemd unit and drop-ins and returns
// the command line its ExecStart= would run, with the Environment= and
// EnvironmentFile= variables expanded as systemd does ($VAR splits into
// words, ${VAR} is one word). Nothing is run.
func (n *node) kubeletUnit() (string, []string) {
	var files []string
	for _, u := range kubeletUnits {
		if _, ok := n.exists(u); ok {
			files = append(files, u)
			break
		}
	}
	if len(files) == 0 {
		return "", nil
	}
	for _, d := range kubeletDropins {
		hp, err := n.resolve(d)
		if err != nil {
			continue
		}
		m, _ := filepath.Glob(filepath.Join(hp, "*.conf"))
		sort.Strings(m)
		for _, f := range m {
			files = append(files, d+"/"+filepath.Base(f))
		}
	}
	env := map[string]string{}
	var exec string
	for _, f := range files {
		b, err := n.readConfig(f)
		if err != nil {
			continue
		}
		for _, kv := range unitLines(b) {
			switch kv[0] {
			case "Environment":
				for _, w := range splitWords(kv[1]) {
					if k, v, ok := strings.Cut(w, "="); ok {
						env[k] = v
					}
				}
			case "EnvironmentFile":
				p := strings.TrimPrefix(strings.TrimSpace(kv[1]), "-")
				if eb, err := n.readConfig(p); err == nil {
					for k, v := range envFile(eb) {
						env[k] = v
					}
				}
			case "ExecStart":
				exec = kv[1] // an empty ExecStart= resets, a later one replaces
			}
		}
	}
	exec = strings.TrimLeft(strings.TrimSpace(exec), "-@+!:")
	if exec == "" {
		return files[0], nil
	}
	var args []string
	for _, w := range splitWords(exec) {
		args = append(args, expand(w, env)...)
	}
	return files[0], args
}

// unitLines returns the Key=Value lines of a unit's [Service] section,
// with backslash continuations joined.
func unitLines(b []byte) [][2]string {
	var out [][2]string
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	var cont strings.Builder
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasSuffix(line, `\`) {
			cont.WriteString(strings.TrimSuffix(line, `\`) + " ")
			continue
		}
		if cont.Len() > 0 {
			line = cont.String() + line
			cont.Reset()
		}
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = line
		case section == "[Service]":
			if k, v, ok := strings.Cut(line, "="); ok {
				out = append(out, [2]string{strings.TrimSpace(k), strings.TrimSpace(v)})
			}
		}
	}
	return out
}

// splitWords splits like systemd: on spaces, with "…" and '…' quoting.
func splitWords(s string) []string {
	var out []string
	var w strings.Builder
	in, quote := false, byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
			w.WriteByte(c)
		case c == '"' || c == '\'':
			quote, in = c, true
		case c == '\\' && i+1 < len(s):
			i++
			w.WriteByte(s[i])
			in = true
		case c == ' ' || c == '\t':
			if in {
				out = append(out, w.String())
				w.Reset()
				in = false
			}
		default:
			w.WriteByte(c)
			in = true
		}
	}
	if in {
		out = append(out, w.String())
	}
	return out
}

// expand substitutes $VAR (split into words) and ${VAR} (one word).
func expand(w string, env map[string]string) []string {
	if strings.HasPrefix(w, "$") && !strings.HasPrefix(w, "${") && isName(w[1:]) {
		return strings.Fields(env[w[1:]])
	}
	out := os.Expand(w, func(k string) string { return env[k] })
	if out == "" && w != "" {
		return nil
	}
	return []string{out}
}

func isName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return s != ""
}

// envFile reads an EnvironmentFile (KEY=value lines, values optionally
// quoted).
func envFile(b []byte) map[string]string {
	m := map[string]string{}
	for k, v := range osRelease(b) {
		m[strings.TrimPrefix(k, "export ")] = v
	}
	return m
}
