// Package container runs the verifier inside a minimal image (see
// verify/Dockerfile) with the host's cgroup v1 hierarchy, so that an
// operator can check a binary without installing anything but Docker.
package container

import (
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nokmem/nokmem/internal/fileutil"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/verify"
)

// Verifier runs nokmem-verify in a container.
type Verifier struct {
	Runner run.Runner
	Docker string // docker client (default "docker")
	// Root is the nokmem source tree (for verify/Dockerfile and the
	// verifier's main package).
	Root string
	// Privileged runs with --privileged (the usual choice on nodes);
	// otherwise with every capability but CAP_SYS_RESOURCE, for hosts
	// whose bounding set lacks it.
	Privileged bool
	// Options passed to the verifier.
	Dynamic         string
	AllowStaticOnly bool
}

func (v *Verifier) docker() string {
	if v.Docker == "" {
		return "docker"
	}
	return v.Docker
}

// Available reports whether a Docker engine answers.
func Available(ctx context.Context, r run.Runner, docker string) bool {
	if docker == "" {
		docker = "docker"
	}
	_, err := r.Run(ctx, run.Cmd{Args: []string{docker, "version", "--format", "{{.Server.Version}}"}})
	return err == nil
}

// RunArgs returns the docker run command for image.
func (v *Verifier) RunArgs(image, outDir, kind, name string) []string {
	args := []string{v.docker(), "run", "--rm", "--network=none"}
	if v.Privileged {
		args = append(args, "--privileged")
	} else {
		args = append(args, "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
			"--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
			"--security-opt", "systempaths=unconfined", "--device-cgroup-rule", "a *:* rwm")
	}
	args = append(args, "-v", "/sys/fs/cgroup:/sys/fs/cgroup", "--tmpfs", "/run:rw,exec", "--tmpfs", "/tmp:rw,exec,mode=1777",
		"-v", outDir+":/out", image, "-json", "/out/report.json")
	if v.Dynamic != "" {
		args = append(args, "-dynamic", v.Dynamic)
	}
	if v.AllowStaticOnly {
		args = append(args, "-allow-static-only")
	}
	return append(args, kind, "/artifact/"+name)
}

// Verify builds the image for binary and runs it.
func (v *Verifier) Verify(ctx context.Context, kind, binary string) (*verify.Report, error) {
	ctxDir, err := os.MkdirTemp("", "nokmem-verify-image-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(ctxDir)
	if _, err := v.Runner.Run(ctx, run.Cmd{
		Args: []string{"go", "build", "-trimpath", "-ldflags=-buildid=", "-o", filepath.Join(ctxDir, "nokmem-verify"), "./verify/cmd/nokmem-verify"},
		Dir:  v.Root, Env: []string{"CGO_ENABLED=0", "GOFLAGS="},
	}); err != nil {
		return nil, fmt.Errorf("build the verifier: %w", err)
	}
	name := filepath.Base(binary)
	if err := copyFile(binary, filepath.Join(ctxDir, "artifact", name), 0o755); err != nil {
		return nil, err
	}
	libs, err := SharedLibraries(binary)
	if err != nil {
		return nil, err
	}
	for _, l := range libs {
		if err := copyFile(l, filepath.Join(ctxDir, l), 0o755); err != nil {
			return nil, err
		}
	}
	sum, err := treeHash(ctxDir)
	if err != nil {
		return nil, err
	}
	image := "nokmem-verify:" + sum[:16]
	if _, err := v.Runner.Run(ctx, run.Cmd{Args: []string{v.docker(), "build", "-q", "-t", image, "-f", filepath.Join(v.Root, "verify", "Dockerfile"), ctxDir}}); err != nil {
		return nil, fmt.Errorf("build the verifier image: %w", err)
	}
	defer v.Runner.Run(context.Background(), run.Cmd{Args: []string{v.docker(), "rmi", "-f", image}})
	outDir := filepath.Join(ctxDir, "out")
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	_, runErr := v.Runner.Run(ctx, run.Cmd{Args: v.RunArgs(image, outDir, kind, name)})
	b, err := os.ReadFile(filepath.Join(outDir, "report.json"))
	if err != nil {
		if runErr != nil {
			return nil, fmt.Errorf("the verifier container failed: %w", runErr)
		}
		return nil, err
	}
	var rep verify.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, fmt.Errorf("verifier report: %w", err)
	}
	rep.Binary = binary
	return &rep, nil
}

// SharedLibraries lists, from ELF headers alone (the binary is never run,
// unlike with ldd), the interpreter and every shared library binary needs,
// resolved in the usual directories.
func SharedLibraries(binary string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	var visit func(path string) error
	visit = func(path string) error {
		f, err := elf.Open(path)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				b, err := io.ReadAll(p.Open())
				if err == nil {
					interp := strings.TrimRight(string(b), "\x00")
					if !seen[interp] {
						seen[interp] = true
						out = append(out, interp)
					}
				}
			}
		}
		libs, err := f.ImportedLibraries()
		if err != nil {
			return nil // static
		}
		for _, soname := range libs {
			p, err := resolve(soname)
			if err != nil {
				return err
			}
			if seen[p] {
				continue
			}
			seen[p] = true
			out = append(out, p)
			if err := visit(p); err != nil {
				return err
			}
		}
		return nil
	}
	if err := visit(binary); err != nil {
		return nil, err
	}
	sort.Strings(out)
	return out, nil
}

var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

func resolve(soname string) (string, error) {
	for _, d := range libDirs {
		p := filepath.Join(d, soname)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("shared library %s not found in %s", soname, strings.Join(libDirs, ", "))
}

func copyFile(src, dst string, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return fileutil.Copy(src, dst, mode, os.O_TRUNC)
}

func treeHash(dir string) (string, error) {
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		io.WriteString(h, p[len(dir):]+"\x00")
		_, err = io.Copy(h, f)
		return err
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
