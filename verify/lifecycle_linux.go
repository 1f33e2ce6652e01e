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

// Lifecycle runs `binary run` once, untraced, on a fresh bundle of the
// dynamic check (the 64 MiB memory limit every run has, no kernel-memory
// limit: what kubelet asks of runc for a pod's container), with the
// container's stdin at EOF so that it ends at once, and removes the
// container, its cgroups and files afterwards. It is the unit of the VM's
// leak reproducer (verify/guest): on a kernel that leaks, each lifecycle of
// a runc that enables kmem accounting leaves a memory cgroup behind.
func Lifecycle(ctx context.Context, binary, tempDir string, timeout time.Duration) error {
	id := ownedName("nokmem-verify-")
	tmp, err := os.MkdirTemp(tempDir, ownedTempPattern("nokmem-bundle-"))
	if err != nil {
		return err
	}
	bundle, state := filepath.Join(tmp, "bundle"), filepath.Join(tmp, "state")
	defer func() {
		if exists(filepath.Join(state, id)) {
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			exec.CommandContext(cctx, binary, "--root", state, "delete", "--force", id).Run()
			cancel()
		}
		removeCgroupEverywhere(id)
		os.RemoveAll(tmp)
	}()
	if err := writeBundle(bundle, "/"+id, 0); err != nil {
		return err
	}
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, binary, "--root", state, "run", "--bundle", bundle, id)
	cmd.Dir = bundle
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s run: %v: %s", filepath.Base(binary), err, firstLine(strings.TrimSpace(string(out))))
	}
	return nil
}
