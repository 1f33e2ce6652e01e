package runtimecfg

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// RuncV2 is containerd's runc shim, the runtime_type of the nokmem runtime.
// Its options (BinaryName, SystemdCgroup) are runc.v2's Options
// (containerd pkg/cri/config, runtime/v2/runc/options).
const RuncV2 = "io.containerd.runc.v2"

// criKey is the CRI plugin's key under [plugins]: a version 1 config names
// plugins by ID ("cri"), version 2 by type and ID (containerd 1.3+,
// services/server/config: "plugins are referenced by their full URI").
func criKey(version int64) (string, error) {
	switch version {
	case 1:
		return "cri", nil
	case 2:
		return "io.containerd.grpc.v1.cri", nil
	case 3:
		return "", fmt.Errorf("config version 3 (containerd 2.x) is not supported: its CRI runtimes live under plugins.\"io.containerd.cri.v1.runtime\"; add the runtime there by hand (see /usr/share/runc-nokmem/containerd-nokmem.toml)")
	}
	return "", fmt.Errorf("unknown containerd config version %d", version)
}

// tomlPath renders a key path the way containerd's documentation writes it.
func tomlPath(keys ...string) string {
	q := make([]string, len(keys))
	for i, k := range keys {
		q[i] = k
		if strings.ContainsAny(k, ". ") {
			q[i] = `"` + k + `"`
		}
	}
	return strings.Join(q, ".")
}

func configVersion(cfg map[string]any) (int64, error) {
	v, ok := cfg["version"]
	if !ok {
		return 1, nil // containerd reads a file without version as version 1
	}
	n, ok := v.(int64)
	if !ok {
		return 0, fmt.Errorf("version = %v is not an integer", v)
	}
	return n, nil
}

// table returns parent[key] as a table, creating it if absent.
func table(parent map[string]any, path []string, key string) (map[string]any, error) {
	switch v := parent[key].(type) {
	case map[string]any:
		return v, nil
	case nil:
		t := map[string]any{}
		parent[key] = t
		return t, nil
	default:
		return nil, fmt.Errorf("%s is %T, not a table", tomlPath(append(path, key)...), v)
	}
}

func decodeTOML(in []byte) (map[string]any, error) {
	cfg := map[string]any{}
	if err := toml.Unmarshal(in, &cfg); err != nil {
		return nil, fmt.Errorf("not valid TOML: %w", err)
	}
	return cfg, nil
}

func encodeTOML(cfg map[string]any) ([]byte, error) {
	var b bytes.Buffer
	enc := toml.NewEncoder(&b)
	enc.SetIndentTables(true)
	if err := enc.Encode(cfg); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func mergeContainerd(in []byte, opt Options) (*Result, error) {
	cfg, err := decodeTOML(in)
	if err != nil {
		return nil, err
	}
	before, err := encodeTOML(cfg)
	if err != nil {
		return nil, err
	}
	version, err := configVersion(cfg)
	if err != nil {
		return nil, err
	}
	key, err := criKey(version)
	if err != nil {
		return nil, err
	}
	res := &Result{}
	note := func(format string, a ...any) { res.Notes = append(res.Notes, fmt.Sprintf(format, a...)) }
	if disabled, ok := cfg["disabled_plugins"].([]any); ok && !opt.Remove {
		for _, d := range disabled {
			if d == "cri" || d == "io.containerd.grpc.v1.cri" {
				return nil, fmt.Errorf("this containerd has its CRI plugin disabled (disabled_plugins = [%q]), so Kubernetes cannot use it: on a docker node wire docker instead (nokmem runtime docker); for Kubernetes, remove %q from disabled_plugins first", d, d)
			}
		}
	}
	plugins, err := table(cfg, nil, "plugins")
	if err != nil {
		return nil, err
	}
	path := []string{"plugins", key}
	cri, err := table(plugins, path[:1], key)
	if err != nil {
		return nil, err
	}
	ctrd, err := table(cri, path, "containerd")
	if err != nil {
		return nil, err
	}
	path = append(path, "containerd")
	hadRuntimes := false
	if rts, ok := ctrd["runtimes"].(map[string]any); ok && len(rts) > 0 {
		hadRuntimes = true
	}
	runtimes, err := table(ctrd, path, "runtimes")
	if err != nil {
		return nil, err
	}
	rtPath := tomlPath(append(path, "runtimes", Handler)...)
	defPath := tomlPath(append(path, "default_runtime_name")...)
	current, _ := ctrd["default_runtime_name"].(string)

	if opt.Remove {
		if _, ok := runtimes[Handler]; ok {
			delete(runtimes, Handler)
			note("removed %s", rtPath)
		} else {
			note("%s is not configured", rtPath)
		}
		if current == Handler {
			ctrd["default_runtime_name"] = "runc"
			note("%s = \"runc\" (was %q)", defPath, Handler)
		}
		return finishTOML(cfg, before, res)
	}

	if dr, ok := ctrd["default_runtime"].(map[string]any); ok && opt.Default {
		if t, _ := dr["runtime_type"].(string); t != "" {
			return nil, fmt.Errorf("%s (deprecated) is set and overrides default_runtime_name: move it to %s and delete it, then run this again",
				tomlPath(append(path, "default_runtime")...), tomlPath(append(path, "runtimes", "runc")...))
		}
	}
	systemd, why := systemdCgroup(opt.SystemdCgroup, cri, ctrd, runtimes)
	rt, err := table(runtimes, append(path, "runtimes"), Handler)
	if err != nil {
		return nil, err
	}
	if t, ok := rt["runtime_type"].(string); ok && t != RuncV2 {
		note("%s.runtime_type was %q", rtPath, t)
	}
	rt["runtime_type"] = RuncV2
	opts, err := table(rt, append(path, "runtimes", Handler), "options")
	if err != nil {
		return nil, err
	}
	opts["BinaryName"] = opt.binary()
	opts["SystemdCgroup"] = systemd
	note("%s: runtime_type = %q, options.BinaryName = %q, options.SystemdCgroup = %v (%s)", rtPath, RuncV2, opt.binary(), systemd, why)
	// A runtimes table in config.toml replaces containerd's built-in one
	// (measured with containerd 1.6 config dump), so a file that relied on
	// the built-in runc must now name it, or pods without a handler fail.
	if _, ok := runtimes["runc"]; !ok && !hadRuntimes && (current == "" || current == "runc") {
		runtimes["runc"] = map[string]any{"runtime_type": RuncV2}
		note("%s: runtime_type = %q, containerd's built-in default, which a runtimes table in this file would otherwise drop",
			tomlPath(append(path, "runtimes", "runc")...), RuncV2)
	}
	if opt.Default && current != Handler {
		ctrd["default_runtime_name"] = Handler
		was := current
		if was == "" {
			was = "runc, containerd's default"
		}
		note("%s = %q (was %s): pods without a RuntimeClass run under runc-nokmem", defPath, Handler, was)
	}
	return finishTOML(cfg, before, res)
}

func finishTOML(cfg map[string]any, before []byte, res *Result) (*Result, error) {
	out, err := encodeTOML(cfg)
	if err != nil {
		return nil, err
	}
	res.Config, res.Changed = out, !bytes.Equal(out, before)
	return res, nil
}

// systemdCgroup decides the runc.v2 SystemdCgroup option of the nokmem
// runtime. It must match kubelet's cgroup driver, which today matches the
// default runtime's, so "auto" copies that.
func systemdCgroup(setting string, cri, ctrd, runtimes map[string]any) (bool, string) {
	switch setting {
	case "true":
		return true, "set by --systemd-cgroup"
	case "false":
		return false, "set by --systemd-cgroup"
	}
	name, _ := ctrd["default_runtime_name"].(string)
	if name == "" || name == Handler {
		name = "runc"
	}
	if rt, ok := runtimes[name].(map[string]any); ok {
		if o, ok := rt["options"].(map[string]any); ok {
			if v, ok := o["SystemdCgroup"].(bool); ok {
				return v, fmt.Sprintf("as runtime %q", name)
			}
		}
	}
	if v, ok := cri["systemd_cgroup"].(bool); ok && v {
		return true, "as systemd_cgroup = true of the CRI plugin"
	}
	if rt, ok := runtimes[Handler].(map[string]any); ok {
		if o, ok := rt["options"].(map[string]any); ok {
			if v, ok := o["SystemdCgroup"].(bool); ok {
				return v, "kept"
			}
		}
	}
	return false, fmt.Sprintf("the cgroupfs driver: runtime %q does not set SystemdCgroup", name)
}

// checkImports refuses a config.toml whose imports define the CRI plugin's
// table: containerd 1.x replaces the main file's whole table with the
// imported one, so a runtime merged here would be dropped.
func checkImports(path string, data []byte) error {
	cfg, err := decodeTOML(data)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	imports, _ := cfg["imports"].([]any)
	var overriding []string
	for _, imp := range imports {
		pattern, _ := imp.(string)
		if pattern == "" {
			continue
		}
		if !filepath.IsAbs(pattern) {
			pattern = filepath.Join(filepath.Dir(path), pattern)
		}
		files, err := filepath.Glob(pattern)
		if err != nil {
			return fmt.Errorf("%s: imports %q: %w", path, pattern, err)
		}
		for _, f := range files {
			if f == path {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				return fmt.Errorf("%s imports %s: %w", path, f, err)
			}
			icfg, err := decodeTOML(b)
			if err != nil {
				return fmt.Errorf("%s imports %s: %w", path, f, err)
			}
			v, err := configVersion(icfg)
			if err != nil {
				return fmt.Errorf("%s imports %s: %w", path, f, err)
			}
			key, err := criKey(v)
			if err != nil {
				return fmt.Errorf("%s imports %s: %w", path, f, err)
			}
			plugins, _ := icfg["plugins"].(map[string]any)
			if _, ok := plugins[key]; !ok {
				continue
			}
			if isOldSnippet(icfg, key) {
				return fmt.Errorf("%s imports %s, the snippet older runc-nokmem packages shipped: on import it replaces the whole CRI table of %s and every pod fails (\"container.Runtime.Name must be set\"); delete %s, then run this again", path, f, path, f)
			}
			overriding = append(overriding, f)
		}
	}
	if len(overriding) > 0 {
		last := overriding[len(overriding)-1]
		return fmt.Errorf("%s imports %s, which define(s) the whole %s table; containerd 1.x then ignores that table in %s: run this on %s instead (the last one imported wins)",
			path, strings.Join(overriding, ", "), tomlPath("plugins", "io.containerd.grpc.v1.cri"), path, last)
	}
	return nil
}

// isOldSnippet recognises containerd-runc-nokmem.toml of earlier packages:
// runc's BinaryName pointed at runc-nokmem.
func isOldSnippet(cfg map[string]any, key string) bool {
	cri, _ := cfg["plugins"].(map[string]any)[key].(map[string]any)
	ctrd, _ := cri["containerd"].(map[string]any)
	runtimes, _ := ctrd["runtimes"].(map[string]any)
	runc, _ := runtimes["runc"].(map[string]any)
	opts, _ := runc["options"].(map[string]any)
	bin, _ := opts["BinaryName"].(string)
	return strings.HasSuffix(bin, "/runc-nokmem") && len(runtimes) == 1
}
