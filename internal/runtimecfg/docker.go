package runtimecfg

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// mergeDocker edits daemon.json: "runtimes" gains (or loses) "nokmem" with
// its "path", "default-runtime" names it with Default. Every other key is
// kept as it was written (values are carried as raw JSON); key order and
// indentation are normalised.
func mergeDocker(in []byte, opt Options) (*Result, error) {
	cfg := map[string]json.RawMessage{}
	if len(bytes.TrimSpace(in)) > 0 {
		if err := json.Unmarshal(in, &cfg); err != nil {
			return nil, fmt.Errorf("not a JSON object: %w", err)
		}
	}
	before, err := encodeJSON(cfg)
	if err != nil {
		return nil, err
	}
	runtimes := map[string]json.RawMessage{}
	if raw, ok := cfg["runtimes"]; ok {
		if err := json.Unmarshal(raw, &runtimes); err != nil {
			return nil, fmt.Errorf(`"runtimes" is not an object: %w`, err)
		}
	}
	var current string
	if raw, ok := cfg["default-runtime"]; ok {
		if err := json.Unmarshal(raw, &current); err != nil {
			return nil, fmt.Errorf(`"default-runtime" is not a string: %w`, err)
		}
	}
	res := &Result{}
	note := func(format string, a ...any) { res.Notes = append(res.Notes, fmt.Sprintf(format, a...)) }
	setRaw := func(m map[string]json.RawMessage, key string, v any) error {
		b, err := json.Marshal(v)
		m[key] = b
		return err
	}

	if opt.Remove {
		if _, ok := runtimes[Handler]; ok {
			delete(runtimes, Handler)
			note(`removed runtimes.%s`, Handler)
		} else {
			note(`runtimes.%s is not configured`, Handler)
		}
		// dockerd's reload (SIGHUP) applies only the keys the file sets
		// (daemon/reload_unix.go: IsValueSet("runtimes"), a non-empty
		// DefaultRuntime): a deleted key would keep the old value until a
		// restart. So "runc" is written, and "runtimes" stays, maybe empty.
		if current == Handler {
			if err := setRaw(cfg, "default-runtime", "runc"); err != nil {
				return nil, err
			}
			note(`"default-runtime": "runc" (was %q): new containers run under runc again; containers created with %s keep Runtime=%s and must be recreated`, Handler, Handler, Handler)
		}
		if _, ok := cfg["runtimes"]; ok {
			if err := setRaw(cfg, "runtimes", runtimes); err != nil {
				return nil, err
			}
		}
		return finishJSON(cfg, before, res)
	}

	entry := map[string]json.RawMessage{}
	if raw, ok := runtimes[Handler]; ok {
		if err := json.Unmarshal(raw, &entry); err != nil {
			return nil, fmt.Errorf(`"runtimes": {%q: …} is not an object: %w`, Handler, err)
		}
	}
	if err := setRaw(entry, "path", opt.binary()); err != nil {
		return nil, err
	}
	if err := setRaw(runtimes, Handler, entry); err != nil {
		return nil, err
	}
	if err := setRaw(cfg, "runtimes", runtimes); err != nil {
		return nil, err
	}
	note(`runtimes.%s.path = %q: docker run --runtime %s uses runc-nokmem`, Handler, opt.binary(), Handler)
	if opt.Default && current != Handler {
		if err := setRaw(cfg, "default-runtime", Handler); err != nil {
			return nil, err
		}
		was := current
		if was == "" {
			was = "runc, dockerd's default"
		}
		note(`"default-runtime": %q (was %s): new containers run under runc-nokmem; existing ones keep the runtime they were created with (docker inspect -f '{{.HostConfig.Runtime}}')`, Handler, was)
	}
	if raw, ok := cfg["exec-opts"]; ok && strings.Contains(string(raw), "native.cgroupdriver=systemd") {
		note("exec-opts selects the systemd cgroup driver: docker passes --systemd-cgroup to runc-nokmem; static runc rc2 … rc9 builds lack that driver (use rc10 or later there)")
	}
	return finishJSON(cfg, before, res)
}

func encodeJSON(cfg map[string]json.RawMessage) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(cfg); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func finishJSON(cfg map[string]json.RawMessage, before []byte, res *Result) (*Result, error) {
	out, err := encodeJSON(cfg)
	if err != nil {
		return nil, err
	}
	res.Config, res.Changed = out, !bytes.Equal(out, before)
	return res, nil
}
