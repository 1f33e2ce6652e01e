package verify

import (
	"encoding/json"
	"os"
	"path/filepath"
)

// The OCI bundle of a runc run: a tiny rootfs whose /init reads stdin until
// EOF, a 64 MiB memory limit (and a kernel-memory limit in the second run),
// the cgroupfs driver's cgroupsPath.

type bundleConfig struct {
	OCIVersion string `json:"ociVersion"`
	// Platform is required by runc before rc4 (spec 1.0.0-rc5) and ignored later.
	Platform map[string]string `json:"platform"`
	Process  map[string]any    `json:"process"`
	Root     map[string]any    `json:"root"`
	Hostname string            `json:"hostname"`
	Mounts   []any             `json:"mounts"`
	Linux    map[string]any    `json:"linux"`
}

func writeBundle(dir, cgroupsPath string, kernel int64) error {
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"dev", "proc", "sys", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return err
		}
	}
	if err := writeExecutable(filepath.Join(rootfs, "init"), initCode); err != nil {
		return err
	}
	mem := map[string]any{"limit": runMemoryLimit}
	if kernel != 0 {
		mem["kernel"] = kernel
	}
	cfg := bundleConfig{
		OCIVersion: "1.0.0",
		Platform:   map[string]string{"os": "linux", "arch": "amd64"},
		Process: map[string]any{
			"terminal": false, "user": map[string]any{"uid": 0, "gid": 0},
			"args": []string{"/init"}, "env": []string{"PATH=/"}, "cwd": "/",
			"noNewPrivileges": true,
		},
		Root:     map[string]any{"path": "rootfs", "readonly": true},
		Hostname: "nokmem-verify",
		Mounts: []any{
			map[string]any{"destination": "/proc", "type": "proc", "source": "proc"},
		},
		Linux: map[string]any{
			"cgroupsPath": cgroupsPath,
			"resources":   map[string]any{"memory": mem},
			"namespaces": []any{
				map[string]string{"type": "pid"}, map[string]string{"type": "ipc"},
				map[string]string{"type": "uts"}, map[string]string{"type": "mount"},
			},
		},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
}
