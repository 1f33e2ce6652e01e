// Package owner names the process that owns something on disk (a staging
// directory in dist/, a lock) in a form that outlives it, so that a later
// run can tell the leftovers of a dead run from the work of a live one.
// A pid alone is not enough: pids are reused, survive no reboot, and mean
// another process in another pid namespace or on another host sharing the
// directory.
package owner

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// ID identifies a process: host (a hash of its name), boot (of that host),
// pid namespace, pid and start time (clock ticks after boot,
// /proc/<pid>/stat field 22).
type ID struct {
	Host, Boot string
	NS         uint64
	PID        int
	Start      uint64
}

// String is the form Parse reads: <host>-<boot>-<ns>-<pid>-<start>.
func (id ID) String() string {
	return fmt.Sprintf("%s-%s-%d-%d-%d", id.Host, id.Boot, id.NS, id.PID, id.Start)
}

// Parse reads an ID written by String.
func Parse(s string) (ID, bool) {
	f := strings.Split(s, "-")
	if len(f) != 5 || !isHex(f[0]) || !isHex(f[1]) {
		return ID{}, false
	}
	ns, err1 := strconv.ParseUint(f[2], 10, 64)
	pid, err2 := strconv.Atoi(f[3])
	start, err3 := strconv.ParseUint(f[4], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || pid <= 0 {
		return ID{}, false
	}
	return ID{Host: f[0], Boot: f[1], NS: ns, PID: pid, Start: start}, true
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil && s != ""
}

// Self is this process.
var Self = sync.OnceValue(func() ID {
	id := ID{PID: os.Getpid(), Host: "00", Boot: "00"}
	if h, err := os.Hostname(); err == nil {
		s := sha256.Sum256([]byte(h))
		id.Host = hex.EncodeToString(s[:4])
	}
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		if boot := strings.ReplaceAll(strings.TrimSpace(string(b)), "-", ""); len(boot) >= 8 && isHex(boot[:8]) {
			id.Boot = boot[:8]
		}
	}
	if fi, err := os.Stat("/proc/self/ns/pid"); err == nil {
		id.NS = fi.Sys().(*syscall.Stat_t).Ino
	}
	id.Start, _ = StartTime(id.PID)
	return id
})

// State is what can be said about an owner from here.
type State int

const (
	// Alive: the owner runs.
	Alive State = iota
	// Gone: the owner certainly no longer runs.
	Gone
	// Unknown: the owner cannot be checked from here (another host or pid
	// namespace, or no /proc).
	Unknown
)

func (s State) String() string {
	return [...]string{"alive", "gone", "unknown"}[s]
}

// Check says whether id still runs. On this host: gone after a reboot; in
// this pid namespace: gone when /proc/<pid> is missing, a zombie, or a
// process that started at another time (the pid was reused).
func (id ID) Check() State {
	me := Self()
	switch {
	case id.Host != me.Host:
		return Unknown
	case me.Boot != "00" && id.Boot != me.Boot:
		return Gone
	case id.NS != me.NS:
		return Unknown
	}
	start, state, err := stat(id.PID)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH):
		return Gone
	case err != nil:
		if unix.Kill(id.PID, 0) == unix.ESRCH {
			return Gone
		}
		return Unknown
	case start != id.Start || state == "Z" || state == "X":
		return Gone
	}
	return Alive
}

// StartTime returns the start time of pid in clock ticks after boot.
func StartTime(pid int) (uint64, error) {
	start, _, err := stat(pid)
	return start, err
}

// stat reads the state (field 3) and start time (field 22) of
// /proc/<pid>/stat.
func stat(pid int) (start uint64, state string, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, "", err
	}
	// comm (field 2) may hold spaces and parentheses: fields 3… follow the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, "", fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, "", fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	return start, f[0], err
}
