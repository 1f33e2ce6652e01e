package verify

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// ptraceRun reaps the traced process itself, so exec.Cmd must have nothing
// left to wait for: output copied by exec's goroutines would still be
// written while the caller reads it (the data race go test -race found),
// and exec.CommandContext's watcher could signal a reused pid.
func TestPtraceRunRefusesCommandsExecWouldStillServe(t *testing.T) {
	var buf bytes.Buffer
	withBuffer := exec.Command("/bin/true")
	withBuffer.Stdout = &buf
	withContext := exec.CommandContext(context.Background(), "/bin/true")
	withReader := exec.Command("/bin/true")
	withReader.Stdin = strings.NewReader("x")
	for name, cmd := range map[string]*exec.Cmd{"stdout buffer": withBuffer, "CommandContext": withContext, "stdin reader": withReader} {
		t.Run(name, func(t *testing.T) {
			ready := make(chan struct{})
			_, err := ptraceRun(context.Background(), cmd, testLauncher(t), time.Now().Add(10*time.Second), ready, nil)
			<-ready
			if err == nil || cmd.Process != nil {
				t.Fatalf("ptraceRun ran a command exec would still serve: err=%v", err)
			}
		})
	}
}

// ptraceRun follows the processes the command starts and returns once all
// are done, so the output is complete when it returns.
func TestPtraceRunOutputIsCompleteOnReturn(t *testing.T) {
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command("/bin/sh", "-c", "i=0; while [ $i -lt 200 ]; do echo line$i; i=$((i+1)); done; (sleep 0.1; echo from-a-child) & wait")
	cmd.Stdout, cmd.Stderr = out, out
	got, err := ptraceRun(context.Background(), cmd, testLauncher(t), time.Now().Add(30*time.Second), make(chan struct{}), nil)
	if err != nil || !got.end.finished() || got.end.code != 0 {
		t.Fatalf("traced run: end=%s err=%v", got.end, err)
	}
	b, _ := os.ReadFile(out.Name())
	if !strings.Contains(string(b), "line199\n") || !strings.HasSuffix(string(b), "from-a-child\n") {
		t.Fatalf("output incomplete when ptraceRun returned: %q", b)
	}
}

// testLauncher writes the seccomp launcher for a test.
func testLauncher(t testing.TB) string {
	t.Helper()
	p, err := writeLauncher(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return p
}
