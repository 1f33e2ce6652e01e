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
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nokmem/nokmem/internal/owner"
)

// What a dynamic check creates carries the identity of the process that
// created it (internal/owner: host, boot, pid namespace, pid, start time),
// so that a later run can tell an abandoned leftover (its owner was killed
// with SIGKILL, or Mage's cleanup timeout cut it short) from the scratch
// space of a check still under way, in this or another process:
//
//	nokmem-verify-<owner>-<random>     cgroup, in every hierarchy
//	nokmem-selftest-<owner>-<random>   cgroup, memory hierarchy
//	nokmem-bundle-<owner>-<random>     directory, in the temp dir
//	nokmem-canary-<owner>-<random>     directory, in the temp dir
//
// A pid alone is not enough: pids are reused, and the verifier container
// (verify/Dockerfile) runs in its own pid namespace (and UTS namespace)
// while it creates cgroups on the host's hierarchy, where its pid means
// another process.
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

// ownedName returns prefix + this process's identity + a random suffix.
func ownedName(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + owner.Self().String() + "-" + hex.EncodeToString(b)
}

// ownedTempPattern is the os.MkdirTemp pattern of an owned directory.
func ownedTempPattern(prefix string) string { return prefix + owner.Self().String() + "-" }

// parseOwner reads the owner from the part of a name after its prefix:
// <owner>-<random>.
func parseOwner(rest string) (owner.ID, bool) {
	i := strings.LastIndexByte(rest, '-')
	if i < 0 || i == len(rest)-1 {
		return owner.ID{}, false
	}
	return owner.Parse(rest[:i])
}

func pidNamespace(pid string) (uint64, error) {
	fi, err := os.Stat("/proc/" + pid + "/ns/pid")
	if err != nil {
		return 0, err
	}
	return fi.Sys().(*syscall.Stat_t).Ino, nil
}

// ownerGone reports whether id is certainly no longer running: what
// owner.Check says, and one case more. A check in another pid namespace on
// this boot (the verifier container; its hostname differs too) is gone
// when we are in the initial pid namespace, which sees every process, and
// no process is left in that namespace. Anything uncertain counts as alive.
func ownerGone(id owner.ID) bool {
	switch id.Check() {
	case owner.Gone:
		return true
	case owner.Alive:
		return false
	}
	me := owner.Self()
	if id.NS == me.NS || me.NS != initPidNS || id.NS == 0 || me.Boot == "00" || id.Boot != me.Boot {
		return false
	}
	return !pidNamespaceInUse(id.NS)
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
