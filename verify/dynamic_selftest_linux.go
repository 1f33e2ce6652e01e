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
func SelfTest(ctx context.Context, mount string, opt DynamicOptions) ([]DetectorCheck, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("self-test cancelled before it started: %w", context.Cause(ctx))
	}
	dir := filepath.Join(mount, ownedName("nokmem-selftest-"))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("self-test cgroup: %w", err)
	}
	defer removeCgroup(dir)
	tmp, err := os.MkdirTemp(opt.TempDir, ownedTempPattern("nokmem-canary-"))
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	canary := filepath.Join(tmp, "canary")
	if err := writeExecutable(canary, canaryCode); err != nil {
		return nil, err
	}
	fan, err := startFan(mount, opt)
	if err != nil {
		return nil, err
	}
	if fan != nil {
		defer fan.close()
		fan.collect(func(p string) bool { return strings.HasPrefix(p, dir+"/") })
	}
	opt.at("self-test")
	cmd := exec.Command(canary, dir)
	pt, end, err := traceIfEnabled(ctx, cmd, opt, time.Now().Add(30*time.Second), nil)
	if err != nil {
		return nil, fmt.Errorf("self-test canary: %w", err)
	}
	opt.at("self-test-done")
	if ctx.Err() != nil {
		return nil, fmt.Errorf("self-test cancelled: %w", context.Cause(ctx))
	}
	if !end.finished() || end.code != 0 {
		return nil, fmt.Errorf("self-test canary failed to write %s: %s", filepath.Join(dir, KmemFile), end)
	}
	var fe []Event
	if fan != nil {
		if fe, err = fan.stop(); err != nil {
			return nil, err
		}
	}
	return []DetectorCheck{
		{Detector: "ptrace", Caught: len(pt) > 0 && !disabled(opt, "ptrace"), Events: pt},
		{Detector: "fanotify", Caught: len(fe) > 0 && !disabled(opt, "fanotify"), Events: fe},
	}, nil
}
