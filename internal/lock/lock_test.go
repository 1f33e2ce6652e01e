package lock

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWaiterIsToldWhoHoldsTheLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "locks", "runc-v1.lock")
	release, err := Acquire(context.Background(), path, "build runc v1 into /d", nil)
	if err != nil {
		t.Fatal(err)
	}
	told := make(chan *Holder, 1)
	got := make(chan error, 1)
	go func() {
		r, err := Acquire(context.Background(), path, "build runc v1 into /e", func(h *Holder) { told <- h })
		if err == nil {
			r()
		}
		got <- err
	}()
	var h *Holder
	select {
	case h = <-told:
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter was not told")
	}
	if h == nil || h.PID != os.Getpid() || h.What != "build runc v1 into /d" || time.Since(h.Since) > time.Minute {
		t.Fatalf("holder: %+v", h)
	}
	if s := h.String(); !strings.Contains(s, "pid ") || !strings.Contains(s, "build runc v1 into /d") || !strings.Contains(s, ", since ") {
		t.Errorf("message: %s", s)
	}
	select {
	case err := <-got:
		t.Fatalf("acquired while held: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	release()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter did not get the released lock")
	}
	if b, _ := os.ReadFile(path); len(b) != 0 {
		t.Errorf("record left after release: %s", b)
	}
}

func TestWaitEndsWithTheContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	release, err := Acquire(context.Background(), path, "first", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := Acquire(ctx, path, "second", nil); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("err %v after %v", err, time.Since(start))
	}
	if h := read(path); h == nil || h.What != "first" {
		t.Errorf("the waiter changed the record: %+v", h)
	}
}
