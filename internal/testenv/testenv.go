// Package testenv gates tests that need this project's CI machine: root and
// a cgroup v1 memory hierarchy. Under CI=true a missing prerequisite fails
// the test loudly; elsewhere the test is skipped with the reason.
package testenv

import (
	"os"
	"testing"

	"github.com/nokmem/nokmem/verify"
)

// InCI reports whether the tests run in CI.
func InCI() bool { return os.Getenv("CI") == "true" }

// RequireDynamic needs what the dynamic verifier needs.
func RequireDynamic(t testing.TB) {
	t.Helper()
	if p := verify.HostProblem(); p != "" {
		if InCI() {
			t.Fatalf("CI=true but this host cannot run the dynamic check: %s", p)
		}
		t.Skipf("needs root and a cgroup v1 memory hierarchy: %s", p)
	}
}
