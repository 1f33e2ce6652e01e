package runtimecfg

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func backups(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.nokmem-backup-*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// The file is replaced in one rename with its mode kept; the previous bytes,
// comments included, stay in the backup the new file names; a second run
// writes nothing.
func TestApplyKeepsABackupAndIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	writeFile(t, path, userV2, 0o600)
	a, err := Apply(Containerd, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !a.Changed || a.Backup == "" {
		t.Fatalf("applied %+v", a)
	}
	if b, _ := os.ReadFile(a.Backup); string(b) != userV2 {
		t.Errorf("backup holds %q", b)
	}
	b, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(b), "# Written by nokmem runtime containerd; the previous file, comments included, is "+a.Backup+"\n") {
		t.Errorf("the written file does not name its backup:\n%s", b)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	again, err := Apply(Containerd, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if again.Changed || again.Backup != "" {
		t.Errorf("second run: %+v", again)
	}
	if n := len(backups(t, dir)); n != 1 {
		t.Errorf("%d backups, want 1", n)
	}
	// A change within the same second gets a numbered backup.
	third, err := Apply(Containerd, path, Options{Default: true})
	if err != nil {
		t.Fatal(err)
	}
	if third.Backup == a.Backup || len(backups(t, dir)) != 2 {
		t.Errorf("third run backup %q, backups %v", third.Backup, backups(t, dir))
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".config.toml.nokmem-*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// A symlinked config is written through the link, which stays a link.
func TestApplyWritesThroughSymlinks(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "managed", "daemon.json")
	writeFile(t, real, `{"debug": true}`, 0o644)
	link := filepath.Join(dir, "daemon.json")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	a, err := Apply(Docker, link, Options{Default: true})
	if err != nil {
		t.Fatal(err)
	}
	if a.Path != real {
		t.Errorf("wrote %s, want %s", a.Path, real)
	}
	if fi, _ := os.Lstat(link); fi.Mode()&os.ModeSymlink == 0 {
		t.Error("the link was replaced by a file")
	}
	if got := decodeJSON(t, must(os.ReadFile(real))); got["debug"] != true || got["default-runtime"] != "nokmem" {
		t.Errorf("wrote %v", got)
	}
	if a.Restart() != "systemctl reload docker" {
		t.Errorf("restart: %s", a.Restart())
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestApplyMissingFiles(t *testing.T) {
	dir := t.TempDir()
	_, err := Apply(Containerd, filepath.Join(dir, "config.toml"), Options{})
	if err == nil || !strings.Contains(err.Error(), "containerd config default >") {
		t.Errorf("missing config.toml: %v", err)
	}
	daemon := filepath.Join(dir, "docker", "daemon.json")
	a, err := Apply(Docker, daemon, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Backup != "" || !a.Changed {
		t.Errorf("new daemon.json: %+v", a)
	}
	if got := decodeJSON(t, must(os.ReadFile(daemon))); dig(got, "runtimes", "nokmem", "path") != DefaultBinary {
		t.Errorf("wrote %v", got)
	}
	if a, err := Apply(Docker, filepath.Join(dir, "none.json"), Options{Remove: true}); err != nil || a.Changed {
		t.Errorf("remove from a missing file: %+v %v", a, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "none.json")); err == nil {
		t.Error("remove created a file")
	}
}

// Imports that define the CRI table would drop what is merged into the
// main file: refuse, and name the file to run on (or the old snippet to
// delete).
func TestApplyRefusesImportsThatReplaceTheCRITable(t *testing.T) {
	for _, tc := range []struct {
		name, imported, want string
	}{
		{"old snippet", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  BinaryName = \"/usr/bin/runc-nokmem\"\n", "the snippet older runc-nokmem packages shipped"},
		{"cri table", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"x\"\n", "run this on "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "config.toml")
			writeFile(t, path, "imports = [\"conf.d/*.toml\"]\n"+userV2, 0o644)
			writeFile(t, filepath.Join(dir, "conf.d", "10-x.toml"), tc.imported, 0o644)
			_, err := Apply(Containerd, path, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), filepath.Join(dir, "conf.d", "10-x.toml")) {
				t.Fatalf("error %v, want %q and the file", err, tc.want)
			}
			if b, _ := os.ReadFile(path); !strings.HasPrefix(string(b), "imports") {
				t.Error("the refused file was written")
			}
		})
	}
	// An import of other plugins is fine.
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	writeFile(t, path, "imports = [\"conf.d/*.toml\"]\n"+userV2, 0o644)
	writeFile(t, filepath.Join(dir, "conf.d", "10-opt.toml"), "version = 2\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"/opt/x\"\n", 0o644)
	if _, err := Apply(Containerd, path, Options{}); err != nil {
		t.Fatal(err)
	}
}
