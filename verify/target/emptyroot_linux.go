package target

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nokmem/nokmem/internal/fileutil"
)

// nobody is the unprivileged user the binary under test runs as.
const nobody = 65534

// Empty-root run statuses.
const (
	EmptyRootOK          = "ok"          // started and exited 0 with output
	EmptyRootFailed      = "failed"      // could not start, or exited non-zero
	EmptyRootUnavailable = "unavailable" // this host cannot chroot (no root, no user namespaces)
)

// EmptyRootRun is the result of starting a binary chrooted into a
// directory that holds nothing but the binary: no libc, no /lib, no /proc.
// A self-contained binary prints its version there; a dynamically linked
// one cannot even be loaded.
type EmptyRootRun struct {
	Args   []string `json:"args"`
	Status string   `json:"status"`
	Output string   `json:"output,omitempty"`
	Error  string   `json:"error,omitempty"`
	// Via says how the chroot was allowed: "root" or "user-namespace".
	Via string `json:"via,omitempty"`
}

// RunEmptyRoot copies binary into a fresh empty directory under tmpDir and
// runs it there with args (for instance --version), chrooted, with an
// empty environment and a time limit.
func RunEmptyRoot(ctx context.Context, binary, tmpDir string, args ...string) *EmptyRootRun {
	res := &EmptyRootRun{Args: append([]string{filepath.Base(binary)}, args...)}
	fail := func(status string, err error) *EmptyRootRun {
		res.Status, res.Error = status, err.Error()
		return res
	}
	root, err := os.MkdirTemp(tmpDir, "nokmem-emptyroot-")
	if err != nil {
		return fail(EmptyRootFailed, err)
	}
	defer os.RemoveAll(root)
	if err := os.Chmod(root, 0o755); err != nil {
		return fail(EmptyRootFailed, err)
	}
	inside := "/" + filepath.Base(binary)
	if err := copyFile(binary, filepath.Join(root, inside)); err != nil {
		return fail(EmptyRootFailed, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	attempt := func(attr *syscall.SysProcAttr) (string, error) {
		var out bytes.Buffer
		cmd := exec.CommandContext(ctx, inside, args...)
		cmd.SysProcAttr = attr
		cmd.Dir = "/"
		cmd.Env = []string{}
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return strings.TrimSpace(out.String()), err
	}
	// As root: the binary under test runs as nobody in new mount, pid,
	// network, ipc and uts namespaces, so it holds no capability (it cannot
	// chroot again to escape the empty root) and reaches nothing of the host.
	res.Via = "root"
	attr := &syscall.SysProcAttr{
		Chroot:     root,
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS,
		Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}},
		Setpgid:    true,
	}
	if os.Geteuid() != 0 {
		// An unprivileged user may chroot inside a user namespace of its own.
		res.Via = "user-namespace"
		attr.Cloneflags = syscall.CLONE_NEWUSER
		attr.Credential = nil
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
	}
	out, err := attempt(attr)
	res.Output = tail(out, 1000)
	switch {
	case err == nil && out != "":
		res.Status = EmptyRootOK
	case err == nil:
		res.Status, res.Error = EmptyRootFailed, "exited 0 but printed nothing"
	case res.Via == "user-namespace" && isPermission(err):
		res.Status, res.Error = EmptyRootUnavailable, "cannot chroot here (not root, and user namespaces are not allowed): "+err.Error()
	case errors.Is(err, syscall.ENOENT):
		// execve reports ENOENT when the ELF interpreter is missing.
		res.Status, res.Error = EmptyRootFailed, fmt.Sprintf("cannot start without the host's files (%v): it needs a dynamic loader or libraries the empty root lacks", err)
	default:
		res.Status, res.Error = EmptyRootFailed, err.Error()
	}
	if ctx.Err() != nil && res.Status != EmptyRootOK {
		res.Status, res.Error = EmptyRootFailed, "interrupted or timed out: "+ctx.Err().Error()
	}
	return res
}

func isPermission(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EINVAL)
}

func copyFile(src, dst string) error {
	return fileutil.Copy(src, dst, 0o755, os.O_EXCL)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
