package targets

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// mage runs `go tool mage` in the project root, as a user would.
func mage(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("go", append([]string{"tool", "mage"}, args...)...)
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestMageListsEveryTarget(t *testing.T) {
	out, err := mage(t, nil, "-l")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, target := range []string{"build:runc", "verify:runc", "verify:file", "verify:host", "package", "publish:mirror", "release", "build:kubelet", "verify:kubelet", "matrix:list", "matrix:json", "settings", "test", "bench", "clean"} {
		if !strings.Contains(out, "  "+target+" ") {
			t.Errorf("mage -l lacks %s:\n%s", target, out)
		}
	}
}

func TestMageBadInputIsOneClearMessage(t *testing.T) {
	dist := filepath.Join(t.TempDir(), "dist")
	env := []string{"NOKMEM_DIST=" + dist, "NOKMEM_CACHE=" + t.TempDir()}
	for _, c := range []struct{ arg, want string }{
		{"v9.9.9", "runc v9.9.9 is not in the matrix"},
		{"v1.0.0-rc9$(touch /tmp/x)", "is not a release tag"},
		{"v1.0.1", "nothing to do"},
	} {
		out, err := mage(t, env, "build:runc", c.arg)
		if err == nil {
			t.Fatalf("%s: exit status 0", c.arg)
		}
		if !strings.Contains(out, c.want) || strings.Contains(out, "goroutine ") {
			t.Errorf("%s: output:\n%s", c.arg, out)
		}
	}
	if _, err := os.Stat(dist); !os.IsNotExist(err) {
		t.Error("bad input created dist/")
	}
	out, err := mage(t, []string{"NOKMEM_BUILD_MODE=vm"}, "build:runc", "v1.0.0-rc9")
	if err == nil || !strings.Contains(out, "NOKMEM_BUILD_MODE") {
		t.Errorf("bad setting: %v\n%s", err, out)
	}
}

func TestMatrixJSON(t *testing.T) {
	out, err := mage(t, nil, "matrix:json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out, `{"project":"runc","version":"v1.0.0-rc9","strategy":"tag"}`) || strings.Contains(out, "v1.0.3") {
		t.Errorf("matrix:json:\n%s", out)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
