package verify

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// spawnerSource makes threads and processes without pause: a run cut short
// (timed out, cancelled) kills its tasks while some are in the stop of the
// clone or fork event that made a new one.
const spawnerSource = `package main

import (
	"os/exec"
	"runtime"
)

func main() {
	for i := 0; i < 4; i++ {
		go func() {
			for {
				exec.Command("/bin/true").Run()
			}
		}()
	}
	for {
		done := make(chan bool)
		// A goroutine that ends locked to its thread takes the thread
		// with it: the runtime makes new ones all the time.
		go func() { runtime.LockOSThread(); done <- true }()
		<-done
	}
}
`

// A traced run cut short while its tasks make new threads and processes
// ends, and reaps every task, within seconds: a task the tracer never
// heard of (born in the kill) must not keep it waiting for the thread
// group's leader.
func TestPtraceCutShortReapsTasksBornDuringTheKill(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true but not root: ptrace of the spawner's tree needs root here")
		}
		t.Skip("needs root")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte(spawnerSource), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "spawner")
	build := exec.Command("go", "build", "-o", bin, src)
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	launcher := testLauncher(t)
	for i := 0; i < 5; i++ {
		cmd := exec.Command(bin)
		start := time.Now()
		got, err := ptraceRun(context.Background(), cmd, launcher, time.Now().Add(300*time.Millisecond), make(chan struct{}), nil)
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if got.end.cut != "timed out" {
			t.Fatalf("run %d: end %s", i, got.end)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("run %d took %s to end", i, d)
		}
	}
}
