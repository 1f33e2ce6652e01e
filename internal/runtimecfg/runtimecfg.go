// Package runtimecfg wires runc-nokmem into a node's container runtime: it
// merges a runtime named "nokmem" into containerd's config.toml (the CRI
// runtime handler that a Kubernetes RuntimeClass names) or docker's
// daemon.json, optionally as the default runtime, and takes it out again.
//
// Merging, not importing: containerd 1.x replaces the whole
// plugins."io.containerd.grpc.v1.cri" table of the main file with the one of
// an imported file (config.mergeConfig, mergo.WithOverride on the Plugins
// map), so a snippet under imports drops the user's sandbox_image, registry
// mirrors and the runc runtime's runtime_type, and every pod fails. The
// merge keeps every other setting; comments do not survive a TOML round
// trip, so the previous file is kept as a backup next to it and the written
// file names it.
package runtimecfg

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Handler is the runtime's name: the containerd CRI runtime handler (what a
// RuntimeClass's handler names) and the docker runtime name.
const Handler = "nokmem"

// DefaultBinary is where the runc-nokmem package installs runc.
const DefaultBinary = "/usr/bin/runc-nokmem"

// Kind is the container runtime whose configuration is merged.
type Kind string

// The runtimes nokmem can wire.
const (
	Containerd Kind = "containerd"
	Docker     Kind = "docker"
)

// DefaultPath is the configuration file a runtime reads unless told
// otherwise.
func (k Kind) DefaultPath() string {
	if k == Docker {
		return "/etc/docker/daemon.json"
	}
	return "/etc/containerd/config.toml"
}

// ParseKind accepts "containerd" or "docker".
func ParseKind(s string) (Kind, error) {
	switch Kind(s) {
	case Containerd, Docker:
		return Kind(s), nil
	}
	return "", fmt.Errorf("unknown runtime %q: want containerd or docker", s)
}

// Options say what to change.
type Options struct {
	// Binary is runc-nokmem's path; empty means DefaultBinary.
	Binary string
	// Default also makes nokmem the default runtime (containerd:
	// default_runtime_name, docker: default-runtime).
	Default bool
	// Remove takes the runtime out, and the default back to runc if it
	// was nokmem. It excludes Default.
	Remove bool
	// SystemdCgroup is containerd's runc.v2 SystemdCgroup option for the
	// nokmem runtime: "auto" (or empty) copies the current default
	// runtime's driver, "true" or "false" set it.
	SystemdCgroup string
}

func (o Options) binary() string {
	if o.Binary == "" {
		return DefaultBinary
	}
	return o.Binary
}

func (o Options) check() error {
	if o.Remove && o.Default {
		return errors.New("--remove and --default exclude each other")
	}
	if !filepath.IsAbs(o.binary()) {
		return fmt.Errorf("the runtime binary must be an absolute path, not %q", o.binary())
	}
	switch o.SystemdCgroup {
	case "", "auto", "true", "false":
	default:
		return fmt.Errorf("systemd cgroup setting %q: want auto, true or false", o.SystemdCgroup)
	}
	return nil
}

// Result is a merged configuration.
type Result struct {
	Config  []byte
	Changed bool
	// Notes say what was done and why, one line each.
	Notes []string
}

// Merge merges (or removes) the nokmem runtime in one runtime's
// configuration text.
func Merge(kind Kind, in []byte, opt Options) (*Result, error) {
	if err := opt.check(); err != nil {
		return nil, err
	}
	switch kind {
	case Containerd:
		return mergeContainerd(in, opt)
	case Docker:
		return mergeDocker(in, opt)
	}
	return nil, fmt.Errorf("unknown runtime %q", kind)
}

// Applied is what Apply did to a file.
type Applied struct {
	Kind Kind
	// Path is the file written: the configuration path with symlinks
	// resolved.
	Path string
	// Backup holds the previous content; empty when nothing was written or
	// the file did not exist.
	Backup  string
	Changed bool
	Notes   []string
}

// Restart is the command that makes the runtime read the written file.
func (a *Applied) Restart() string {
	if a.Kind == Docker {
		// dockerd reloads runtimes and default-runtime on SIGHUP.
		return "systemctl reload docker"
	}
	return "systemctl restart containerd"
}

// Apply merges the nokmem runtime into the configuration file at path and,
// if that changes anything, writes it in one rename after keeping the
// previous file as <path>.nokmem-backup-<UTC time>. A second run with the
// same options changes nothing and writes nothing.
func Apply(kind Kind, path string, opt Options) (*Applied, error) {
	if err := opt.check(); err != nil {
		return nil, err
	}
	target, err := filepath.EvalSymlinks(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		target = path
	case err != nil:
		return nil, err
	}
	old, err := os.ReadFile(target)
	exists := err == nil
	switch {
	case errors.Is(err, fs.ErrNotExist) && kind == Containerd:
		// A config.toml holding only the nokmem runtime would drop
		// containerd's default runc runtime: start from the full default.
		return nil, fmt.Errorf("%s does not exist: write containerd's defaults first (containerd config default > %s), then run this again", path, path)
	case errors.Is(err, fs.ErrNotExist) && opt.Remove:
		return &Applied{Kind: kind, Path: target, Notes: []string{target + " does not exist: nothing to remove"}}, nil
	case errors.Is(err, fs.ErrNotExist):
		// docker's defaults are an empty daemon.json.
	case err != nil:
		return nil, err
	}
	if kind == Containerd {
		if err := checkImports(target, old); err != nil {
			return nil, err
		}
	}
	res, err := Merge(kind, old, opt)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", target, err)
	}
	a := &Applied{Kind: kind, Path: target, Changed: res.Changed, Notes: res.Notes}
	if !res.Changed {
		return a, nil
	}
	out := res.Config
	if exists {
		a.Backup = target + ".nokmem-backup-" + time.Now().UTC().Format("20060102T150405Z")
		if kind == Containerd {
			out = append([]byte(fmt.Sprintf("# Written by nokmem runtime containerd; the previous file, comments included, is %s\n", a.Backup)), out...)
		}
	}
	backup, err := writeAtomic(target, out, exists, a.Backup)
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", target, err)
	}
	a.Backup = backup
	return a, nil
}

// writeAtomic replaces path with data in one rename, keeping the owner and
// mode of the file it replaces. If the file exists, it is hard-linked to
// backup (a numbered name if that is taken) first, so the previous content
// stays on disk under that name.
func writeAtomic(path string, data []byte, exists bool, backup string) (string, error) {
	dir := filepath.Dir(path)
	mode, uid, gid := os.FileMode(0o644), -1, -1
	if exists {
		fi, err := os.Stat(path)
		if err != nil {
			return "", err
		}
		mode = fi.Mode().Perm()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(st.Uid), int(st.Gid)
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".nokmem-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return "", err
	}
	if uid >= 0 && (uid != os.Getuid() || gid != os.Getgid()) {
		if err := tmp.Chown(uid, gid); err != nil {
			tmp.Close()
			return "", fmt.Errorf("keep the owner %d:%d: %w", uid, gid, err)
		}
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if exists {
		if backup, err = keepBackup(path, backup); err != nil {
			return "", fmt.Errorf("keep a backup: %w", err)
		}
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return backup, nil
}

func keepBackup(path, backup string) (string, error) {
	for i := 0; i < 100; i++ {
		name := backup
		if i > 0 {
			name = fmt.Sprintf("%s.%d", backup, i)
		}
		err := os.Link(path, name)
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", err
		}
	}
	return "", fmt.Errorf("%s and 99 numbered names exist", backup)
}

// quoteList renders names for a message.
func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}
