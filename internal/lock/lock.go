// Package lock serialises work on one thing (a build of one version) among
// the processes of this machine with flock(2), and records in the lock file
// who holds it, so that a run that has to wait can say whom it waits for.
// The kernel drops the lock when its holder dies, however it dies, so a
// lock is never stale; the record is only information.
package lock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nokmem/nokmem/internal/owner"
)

// Holder is what the lock file says about the process holding the lock:
//
//	{"pid":1234,"owner":"<internal/owner ID>","what":"build runc v1.0.0-rc9 into /srv/dist","since":"2026-11-23T17:50:01Z"}
type Holder struct {
	PID   int       `json:"pid"`
	Owner string    `json:"owner"`
	What  string    `json:"what"`
	Since time.Time `json:"since"`
}

// String describes the holder for a waiting user.
func (h *Holder) String() string {
	if h == nil || h.PID == 0 {
		return "another nokmem run"
	}
	return fmt.Sprintf("pid %d (%s, since %s, %s ago)", h.PID, h.What,
		h.Since.Local().Format("15:04:05"), time.Since(h.Since).Round(time.Second))
}

// poll is how often a waiting run tries the lock again; it also bounds how
// late a cancelled wait notices.
const poll = 100 * time.Millisecond

// Acquire takes the exclusive lock at path for what (e.g. "build runc
// v1.0.0-rc9 into /srv/dist"). When another process holds it, waiting is
// called once with what the file says about that holder (nil if it says
// nothing readable), and Acquire waits until the lock is free or ctx is
// done. release drops the lock and clears the record.
func Acquire(ctx context.Context, path, what string, waiting func(holder *Holder)) (release func(), err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	told := false
	start := time.Now()
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !told {
			// The holder writes its record just after it takes the lock:
			// give it a moment before saying "another run".
			if h := read(path); h != nil || time.Since(start) > time.Second {
				told = true
				if waiting != nil {
					waiting(h)
				}
			}
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(poll):
		}
	}
	b, _ := json.Marshal(Holder{PID: os.Getpid(), Owner: owner.Self().String(), What: what, Since: time.Now().UTC().Truncate(time.Second)})
	if _, err := f.WriteAt(b, 0); err == nil {
		f.Truncate(int64(len(b)))
	}
	return func() {
		f.Truncate(0)
		f.Close() // drops the flock
	}, nil
}

// read returns the record in the lock file at path, if it holds one.
func read(path string) *Holder {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var h Holder
	if json.Unmarshal(b, &h) != nil || h.PID == 0 {
		return nil
	}
	return &h
}
