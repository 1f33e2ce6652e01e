package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExitStatusAndOutput(t *testing.T) {
	dir := t.TempDir()
	daemon := filepath.Join(dir, "daemon.json")
	os.WriteFile(daemon, []byte(`{"debug": true}`), 0o644)
	missing := filepath.Join(dir, "config.toml")
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{nil, 2, "", "usage:"},
		{[]string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{[]string{"help"}, 0, "nokmem runtime docker", ""},
		{[]string{"version"}, 0, "nokmem ", ""},
		{[]string{"verify", "runc"}, 2, "", "usage:"},
		{[]string{"verify", "crun", "/bin/true"}, 2, "", "usage:"},
		{[]string{"runtime"}, 2, "", "usage:"},
		{[]string{"runtime", "podman"}, 2, "", `unknown runtime "podman"`},
		{[]string{"runtime", "docker", "a", "b"}, 2, "", "usage:"},
		{[]string{"runtime", "docker", "--systemd-cgroup", "true", daemon}, 2, "", "flag provided but not defined"},
		{[]string{"runtime", "docker", "--default", "--remove", daemon}, 1, "", "exclude each other"},
		{[]string{"runtime", "docker", daemon}, 0, "written; the previous file is " + daemon + ".nokmem-backup-", ""},
		{[]string{"runtime", "docker", daemon}, 0, "nothing to change, nothing written", ""},
		{[]string{"runtime", "containerd", missing}, 1, "", "containerd config default > " + missing},
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errOut)
		if code != tc.code || !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errOut.String(), tc.stderr) {
			t.Errorf("nokmem %s: exit %d (want %d)\nstdout: %s\nstderr: %s", strings.Join(tc.args, " "), code, tc.code, out.String(), errOut.String())
		}
	}
}
