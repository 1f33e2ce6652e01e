package verify

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// What a dynamic check creates carries the identity of the process that
// created it, so that a later run can tell an abandoned leftover (its owner
// was killed with SIGKILL, or Mage's cleanup timeout cut it short) from the
// scratch space of a check still under way, in this or another process:
//
//	nokmem-verify-<pidns>-<pid>-<start>-<random>     cgroup, in every hierarchy
//	nokmem-selftest-<pidns>-<pid>-<start>-<random>   cgroup, memory hierarchy
//	nokmem-bundle-<pidns>-<pid>-<start>-<random>     directory, in the temp dir
//	nokmem-canary-<pidns>-<pid>-<start>-<random>     directory, in the temp dir
//
// <pidns> is the inode of the owner's pid namespace and <start> its start
// time in clock ticks after boot (/proc/<pid>/stat field 22). A pid alone
// is not enough: pids are reused, and the verifier container
// (verify/Dockerfile) runs in its own pid namespace while it creates
// cgroups on the host's hierarchy, where its pid means another process.
var (
	cgroupPrefixes = []string{"nokmem-verify-", "nokmem-selftest-"}
	tempPrefixes   = []string{"nokmem-bundle-", "nokmem-canary-"}
)

// legacyAge is how old a leftover named before owners were recorded
// (nokmem-verify-<hex>, nokmem-bundle-<digits>) must be to count as
// abandoned: far longer than any check runs (self-test plus two runs, each
// bounded by DynamicOptions.Timeout, 60 s by default).
const legacyAge = time.Hour

// initPidNS is the inode of the initial pid namespace (PROC_PID_INIT_INO,
// fixed since Linux 3.8).
const initPidNS = 0xEFFFFFFC

// owner identifies a process across pid reuse and pid namespaces.
type owner struct {
	ns    uint64
	pid   int
	start uint64
}

func (o owner) String() string { return fmt.Sprintf("%d-%d-%d", o.ns, o.pid, o.start) }

// self is this process's identity, as it appears in the names above.
var self = sync.OnceValue(func() owner {
	o := owner{pid: os.Getpid()}
	o.ns, _ = pidNamespace("self")
	o.start, _ = procStartTime(strconv.Itoa(o.pid))
	return o
})

// ownedName returns prefix + this process's identity + a random suffix.
func ownedName(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + self().String() + "-" + hex.EncodeToString(b)
}

// ownedTempPattern is the os.MkdirTemp pattern of an owned directory.
func ownedTempPattern(prefix string) string { return prefix + self().String() + "-" }

// parseOwner reads the owner from the part of a name after its prefix.
func parseOwner(rest string) (owner, bool) {
	f := strings.Split(rest, "-")
	if len(f) != 4 || f[3] == "" {
		return owner{}, false
	}
	ns, err1 := strconv.ParseUint(f[0], 10, 64)
	pid, err2 := strconv.Atoi(f[1])
	start, err3 := strconv.ParseUint(f[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || pid <= 0 {
		return owner{}, false
	}
	return owner{ns: ns, pid: pid, start: start}, true
}

// procStartTime returns field 22 of /proc/<pid>/stat.
func procStartTime(pid string) (uint64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	// comm (field 2) may hold spaces and parentheses: fields 3… follow the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, errors.New("malformed /proc/" + pid + "/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, errors.New("malformed /proc/" + pid + "/stat")
	}
	return strconv.ParseUint(f[19], 10, 64)
}

func pidNamespace(pid string) (uint64, error) {
	fi, err := os.Stat("/proc/" + pid + "/ns/pid")
	if err != nil {
		return 0, err
	}
	return fi.Sys().(*syscall.Stat_t).Ino, nil
}

// ownerGone reports whether o is certainly no longer running. In our own
// pid namespace: /proc/<pid> is gone, or holds a process that started at
// another time (the pid was reused). In another namespace we can only
// tell from the initial one, which sees every process: gone when no
// process is left in that namespace. Anything uncertain counts as alive.
func ownerGone(o owner) bool {
	me := self()
	if o.ns == me.ns {
		start, err := procStartTime(strconv.Itoa(o.pid))
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			return true
		}
		return err == nil && start != o.start
	}
	if me.ns != initPidNS || o.ns == 0 {
		return false
	}
	return !pidNamespaceInUse(o.ns)
}

func pidNamespaceInUse(ns uint64) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return true
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if n, err := pidNamespace(e.Name()); err == nil && n == ns {
			return true
		}
	}
	return false
}

// abandoned decides whether the entry called name, under one of prefixes,
// is a dead run's leftover.
func abandoned(name string, prefixes []string, fi os.FileInfo, now time.Time) bool {
	for _, p := range prefixes {
		rest, ok := strings.CutPrefix(name, p)
		if !ok {
			continue
		}
		if o, ok := parseOwner(rest); ok {
			return ownerGone(o)
		}
		return now.Sub(fi.ModTime()) > legacyAge
	}
	return false
}

// findLeftovers lists the abandoned cgroups (top level of every cgroup
// hierarchy) and temporary directories (in tempDir).
func findLeftovers(tempDir string) (cgroups, dirs []string) {
	now := time.Now()
	for _, m := range cgroupMounts() {
		entries, _ := os.ReadDir(m)
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			if fi, err := e.Info(); err == nil && abandoned(e.Name(), cgroupPrefixes, fi, now) {
				cgroups = append(cgroups, filepath.Join(m, e.Name()))
			}
		}
	}
	if tempDir == "" {
		tempDir = os.TempDir()
	}
	entries, _ := os.ReadDir(tempDir)
	for _, e := range entries {
		// Directories only: never follow a symlink someone put in /tmp.
		if e.Type()&fs.ModeType != fs.ModeDir {
			continue
		}
		if fi, err := e.Info(); err == nil && abandoned(e.Name(), tempPrefixes, fi, now) {
			dirs = append(dirs, filepath.Join(tempDir, e.Name()))
		}
	}
	return cgroups, dirs
}

// Leftovers lists what dead dynamic checks left behind: nokmem-verify-* and
// nokmem-selftest-* cgroups in every cgroup hierarchy and nokmem-bundle-* /
// nokmem-canary-* directories in the temp directory whose owner process is
// gone (see ReapLeftovers). Those of checks still running are not listed.
func Leftovers() []string {
	cg, dirs := findLeftovers("")
	return append(cg, dirs...)
}

// ReapLeftovers removes what Leftovers lists: it kills any process left in
// an abandoned cgroup (the verified binary's own container), removes the
// cgroup from its hierarchy, and removes the abandoned directories. It
// returns what it removed; err joins what it could not remove. Every
// dynamic check calls it first.
func ReapLeftovers() (reaped []string, err error) { return reapLeftovers("") }

func reapLeftovers(tempDir string) (reaped []string, err error) {
	cgroups, dirs := findLeftovers(tempDir)
	var errs []error
	for _, cg := range cgroups {
		killCgroupProcs(cg)
		if e := removeCgroup(cg); e != nil {
			errs = append(errs, e)
			continue
		}
		reaped = append(reaped, cg)
	}
	for _, d := range dirs {
		if e := os.RemoveAll(d); e != nil {
			errs = append(errs, e)
			continue
		}
		reaped = append(reaped, d)
	}
	return reaped, errors.Join(errs...)
}

// killCgroupProcs sends SIGKILL to every process in cg and its children.
func killCgroupProcs(cg string) {
	filepath.WalkDir(cg, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
				unix.Kill(pid, unix.SIGKILL)
			}
		}
		return nil
	})
}

// removeCgroup removes a cgroup directory and its children, retrying for a
// second while the kernel finishes tearing down exited tasks.
func removeCgroup(dir string) error {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			removeCgroup(filepath.Join(dir, e.Name()))
		}
	}
	var err error
	for i := 0; i < 50; i++ {
		if err = unix.Rmdir(dir); err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("remove cgroup %s: %w", dir, err)
}

// removeCgroupEverywhere removes /<name> from every cgroup hierarchy.
func removeCgroupEverywhere(name string) error {
	var errs []error
	for _, m := range cgroupMounts() {
		if p := filepath.Join(m, name); exists(p) {
			errs = append(errs, removeCgroup(p))
		}
	}
	return errors.Join(errs...)
}
