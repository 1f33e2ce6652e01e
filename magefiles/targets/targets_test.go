package targets

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nokmem/nokmem/internal/pipeline"
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
	for _, target := range []string{"build:runc", "verify:runc", "verify:file", "verify:host", "verify:dist", "package", "publish:mirror", "release", "build:kubelet", "verify:kubelet", "matrix:list", "matrix:json", "matrix:pin", "settings", "test", "bench", "clean"} {
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

// "Nothing to do" is not an error: no "Error:", and its own exit status, so
// that a CI script can tell it from a failure.
func TestNothingToDoHasItsOwnExitStatus(t *testing.T) {
	env := []string{"NOKMEM_DIST=" + filepath.Join(t.TempDir(), "dist"), "NOKMEM_CACHE=" + t.TempDir()}
	for _, args := range [][]string{{"build:runc", "v1.0.3"}, {"build:runc", "v1.0.0-rc94"}} {
		out, err := mage(t, env, args...)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != ExitNothingToDo {
			t.Errorf("%v: %v, want exit status %d\n%s", args, err, ExitNothingToDo, out)
		}
		if !strings.Contains(out, "nothing to do") || strings.Contains(out, "Error") {
			t.Errorf("%v: output:\n%s", args, out)
		}
	}
	// A real failure stays exit status 1.
	out, err := mage(t, env, "build:runc", "v9.9.9")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("unknown version: %v\n%s", err, out)
	}
}

func TestFailRendersNothingToDoWithoutError(t *testing.T) {
	var buf strings.Builder
	code := -1
	exit, stderr = func(c int) { code = c }, &buf
	t.Cleanup(func() { exit, stderr = os.Exit, os.Stderr })
	err := fail(fmt.Errorf("build runc v1.0.3: %w", &pipeline.NothingToDoError{Project: "runc", Version: "v1.0.3", Why: "no kmem code"}))
	if err != nil || code != ExitNothingToDo || !strings.HasPrefix(buf.String(), "nokmem: nothing to do: runc v1.0.3") {
		t.Errorf("err %v, exit %d, output %q", err, code, buf.String())
	}
	code = -1
	if err := fail(errors.New("boom")); err == nil || code != -1 {
		t.Errorf("a failure: err %v, exit %d", err, code)
	}
}
