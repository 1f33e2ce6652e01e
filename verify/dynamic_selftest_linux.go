package verify

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// SelfTest proves that every enabled detector sees a real write to the
// kmem file, made by a canary process in a scratch cgroup of our own. A
// cancelled ctx, or a canary that did not finish its write, is an error,
// never a result.
//
// It is not cached across checks: a check runs it beside its first run,
// where it costs no wall time, and what it proves (this process's fanotify
// mark on this mount, its ptrace and seccomp filter under its confinement)
// can change within one boot and one verifier build (docs/verifier.md,
// "Why the self-test is not cached").
func SelfTest(ctx context.Context, mount string, opt DynamicOptions) ([]DetectorCheck, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("self-test cancelled before it started: %w", context.Cause(ctx))
	}
	endSetup := opt.tl.span("self-test/setup")
	dir := filepath.Join(mount, ownedName("nokmem-selftest-"))
	if err := os.Mkdir(dir, 0o755); err != nil {
		endSetup()
		return nil, fmt.Errorf("self-test cgroup: %w", err)
	}
	tmp, err := os.MkdirTemp(opt.TempDir, ownedTempPattern("nokmem-canary-"))
	defer func() {
		end := opt.tl.span("self-test/cleanup")
		removeCgroup(dir)
		if tmp != "" {
			os.RemoveAll(tmp)
		}
		end()
	}()
	if err != nil {
		endSetup()
		return nil, err
	}
	canary := filepath.Join(tmp, "canary")
	err = writeExecutable(canary, canaryCode)
	endSetup()
	if err != nil {
		return nil, err
	}
	opt.at("self-test")
	cmd := exec.Command(canary, dir)
	keep := func(p string) bool { return strings.HasPrefix(p, dir+"/") }
	w, err := watch(ctx, "self-test", cmd, opt, mount, tmp, keep, time.Now().Add(30*time.Second), nil)
	opt.at("self-test-done")
	if ctx.Err() != nil {
		return nil, fmt.Errorf("self-test cancelled: %w", context.Cause(ctx))
	}
	if err != nil {
		return nil, fmt.Errorf("self-test canary: %w", err)
	}
	if !w.end.finished() || w.end.code != 0 {
		return nil, fmt.Errorf("self-test canary failed to write %s: %s", filepath.Join(dir, KmemFile), w.end)
	}
	var pt, fe []Event
	for _, e := range w.events {
		if e.Detector == "ptrace" {
			pt = append(pt, e)
		} else {
			fe = append(fe, e)
		}
	}
	return []DetectorCheck{
		{Detector: "ptrace", Caught: len(pt) > 0 && !disabled(opt, "ptrace"), Events: pt},
		{Detector: "fanotify", Caught: len(fe) > 0 && !disabled(opt, "fanotify"), Events: fe},
	}, nil
}
