package verify

import (
	"context"
	"os/exec"
	"time"
)

// Test-only access for the external tests (package verify_test).

// WithPhaseHook returns opt with f called as the dynamic check reaches each
// phase: "self-test", "self-test-done", "run-started:<run>",
// "run-done:<run>", "verdict".
func WithPhaseHook(opt DynamicOptions, f func(phase string)) DynamicOptions {
	opt.hook = f
	return opt
}

// Watched is what both detectors saw of one command run by WatchCommand.
type Watched struct {
	Events   []Event  // both detectors' kmem-file events
	Untraced []string // syscalls the ptrace detector cannot see through
	Stops    int      // ptrace stops
	Finished bool
	ExitCode int
	End      string
}

// WatchCommand runs cmd under both detectors, as a run of the dynamic check
// does (fanotify on the memory mount keeping the paths keep accepts,
// ptrace through the seccomp launcher written into dir).
func WatchCommand(ctx context.Context, cmd *exec.Cmd, mount, dir string, keep func(string) bool) (Watched, error) {
	w, err := watch(ctx, "test", cmd, DynamicOptions{}, mount, dir, keep, time.Now().Add(time.Minute), nil)
	return Watched{Events: w.events, Untraced: w.untraced, Stops: w.stops, Finished: w.end.finished(), ExitCode: w.end.code, End: w.end.String()}, err
}

// TinyELF wraps x86-64 code in the verifier's minimal static ELF.
func TinyELF(code []byte) []byte { return tinyELF(code) }
