package verify

import (
	"strings"
	"testing"
)

// A binary that prints nothing (verify:file runc /usr/bin/true) gets a
// reason that ends in what it did, not in a dangling colon.
func TestReasonsOfSilentRunsEndInWords(t *testing.T) {
	for name, reason := range map[string]string{
		"no cgroup":       runcRunProblem(RunResult{Finished: true}),
		"failed":          runcRunProblem(RunResult{Finished: true, ExitCode: 1, ExitError: "exit status 1"}),
		"probe no cgroup": func() string { _, r := judgeProbe(RunResult{Finished: true}); return r }(),
	} {
		if strings.HasSuffix(strings.TrimSpace(reason), ":") || !strings.HasSuffix(reason, "it printed nothing") {
			t.Errorf("%s: %q", name, reason)
		}
	}
	if got := runcRunProblem(RunResult{Finished: true, Output: "\nrunc version 1.0.0\n"}); !strings.HasSuffix(got, "code path: runc version 1.0.0") {
		t.Errorf("with output: %q", got)
	}
}
