package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// RequireRoot needs root: the tests that start containerd or dockerd, or
// install packages into a scratch root, run as root on the CI machine.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		if InCI() {
			t.Fatal("CI=true but the tests do not run as root")
		}
		t.Skip("needs root")
	}
}

// RequireTools needs every program in tools on PATH (.ci/run installs
// them on the CI machine) and returns their paths in the same order.
func RequireTools(t testing.TB, tools ...string) []string {
	t.Helper()
	paths := make([]string, len(tools))
	for i, tool := range tools {
		p, err := exec.LookPath(tool)
		if err != nil {
			if InCI() {
				t.Fatalf("CI=true but %s is missing (.ci/run installs it)", tool)
			}
			t.Skipf("needs %s", tool)
		}
		paths[i] = p
	}
	return paths
}
