package build

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nokmem/nokmem/internal/run"
)

// ImageInfo is what a container-mode build image holds, read from the
// image itself rather than from its name: a tag says nothing sure about the
// Go, the C compiler or the libseccomp inside.
type ImageInfo struct {
	// ID is the image's content-addressed ID (sha256:…). The build runs
	// this ID, so the image checked is the image that builds, even if the
	// tag moves meanwhile.
	ID        string
	GoVersion string // as `go version` prints it, e.g. go1.12.17
	Cgo       CgoInfo
}

// runcImageScript reports what a build image has for runc's build; $1 is
// "seccomp" when the tags need libseccomp, $2 "static" for a static build.
// It is a constant: the image name and the flags are arguments of docker
// run, never part of a shell string.
const runcImageScript = `if command -v go >/dev/null 2>&1; then echo "go: $(GOTOOLCHAIN=local GOFLAGS= go version 2>&1)"; else echo "missing: go"; fi
if command -v gcc >/dev/null 2>&1; then gcc --version 2>&1 | { read -r l; echo "cc: $l"; }; else echo "missing: gcc"; fi
if [ "$1" = seccomp ]; then
  if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists libseccomp; then
    echo "libseccomp: $(pkg-config --modversion libseccomp)"
    echo "pkgconfig: $(pkg-config --cflags --libs --static libseccomp)"
    if [ "$2" = static ]; then
      lib="$(pkg-config --variable=libdir libseccomp)/libseccomp.a"
      if [ -f "$lib" ]; then echo "libseccomp.a: $lib"; else echo "missing: libseccomp.a"; fi
    fi
  else echo "missing: libseccomp"; fi
fi
if [ "$2" = static ] && command -v gcc >/dev/null 2>&1; then
  libc=$(gcc -print-file-name=libc.a 2>/dev/null)
  if [ -f "$libc" ]; then echo "libc.a: $libc"; else echo "missing: libc.a"; fi
fi
true`

var imageFieldRE = regexp.MustCompile(`(?m)^(go|cc|libseccomp|pkgconfig|libseccomp\.a|libc\.a|missing): (.*)$`)

// imageNeeds says why runc's build needs what an image lacks, and which
// Debian package brings it (golang:<version> images are Debian-based).
var imageNeeds = map[string]string{
	"go":           "go (the Go toolchain)",
	"gcc":          "gcc (cgo; Debian: gcc)",
	"libseccomp":   "libseccomp and pkg-config (the seccomp build tag; Debian: libseccomp-dev pkg-config)",
	"libseccomp.a": "libseccomp.a (a static runc links it; Debian's libseccomp-dev ships it)",
	"libc.a":       "libc.a (a static runc links glibc's archive; Debian: libc6-dev)",
}

// ImageError says what a build image lacks.
type ImageError struct {
	Image   string
	Missing []string
}

func (e *ImageError) Error() string {
	return fmt.Sprintf("the build image %s (NOKMEM_BUILD_IMAGE) lacks what runc's build needs: %s. The golang:<version> images have no libseccomp: "+
		"build an image FROM the release's golang image with `RUN apt-get update && apt-get install -y libseccomp-dev pkg-config`, "+
		"or build in host mode (the default, which downloads the release's Go). Nothing was built",
		e.Image, strings.Join(e.Missing, "; "))
}

// CheckRuncImage runs image once to read what runc's build will find in
// it (the Go, the C compiler, libseccomp and the static archives the tags
// and static need), reports everything missing at once, and returns the
// image's ID for the build to run.
func (b *Builder) CheckRuncImage(ctx context.Context, image string, tags []string, static bool) (*ImageInfo, error) {
	seccomp, st := "-", "-"
	if slices.Contains(tags, "seccomp") {
		seccomp = "seccomp"
	}
	if static {
		st = "static"
	}
	// docker run pulls an image that is not here yet; the ID is read after.
	out, err := b.Runner.Run(ctx, run.Cmd{Args: []string{b.docker(), "run", "--rm", "--network=none", "--entrypoint", "sh", image, "-c", runcImageScript, "sh", seccomp, st}})
	if err != nil {
		return nil, fmt.Errorf("cannot run the build image %s (NOKMEM_BUILD_IMAGE) to check it: %w", image, err)
	}
	info := &ImageInfo{}
	var missing []string
	for _, m := range imageFieldRE.FindAllStringSubmatch(string(out), -1) {
		v := strings.TrimSpace(m[2])
		switch m[1] {
		case "missing":
			missing = append(missing, imageNeeds[v])
		case "go":
			if info.GoVersion, err = ParseGoVersion(v); err != nil {
				return nil, fmt.Errorf("build image %s: %w", image, err)
			}
		case "cc":
			info.Cgo.CC = v
		case "libseccomp":
			info.Cgo.Libseccomp = v
		case "pkgconfig":
			info.Cgo.PkgConfig = strings.Join(strings.Fields(v), " ")
		case "libseccomp.a":
			info.Cgo.LibseccompStatic = v
		}
	}
	if len(missing) > 0 {
		return nil, &ImageError{Image: image, Missing: missing}
	}
	if info.GoVersion == "" {
		return nil, fmt.Errorf("build image %s: its check printed no Go version:\n%s", image, strings.TrimSpace(string(out)))
	}
	if info.ID, err = b.ImageID(ctx, image); err != nil {
		return nil, err
	}
	return info, nil
}

// ImageID is the content-addressed ID of a local image.
func (b *Builder) ImageID(ctx context.Context, image string) (string, error) {
	out, err := b.Runner.Run(ctx, run.Cmd{Args: []string{b.docker(), "image", "inspect", "--format", "{{.Id}}", image}})
	id := strings.TrimSpace(string(out))
	if err != nil || !strings.HasPrefix(id, "sha256:") {
		return "", fmt.Errorf("cannot read the ID of the build image %s: %v %s", image, err, id)
	}
	return id, nil
}

// dockerRun is every container-mode build command: no network, the given
// directories bind-mounted at their own paths (so -trimpath output is the
// same as in host mode), run as the user who owns the work tree and the
// output (what it writes stays theirs, and git inside finds the tree owned
// by its user), in workdir, with env and nothing else of this process's.
//
// The container is named (ContainerPrefix and a random suffix) so that a
// cancelled build can remove it: killing the docker client does not stop
// its container (runBuild).
func dockerRun(docker string, mounts []string, workdir string, env map[string]string, image string, command ...string) run.Cmd {
	suffix := make([]byte, 8)
	rand.Read(suffix)
	c := []string{docker, "run", "--rm", "--network=none", "--name", ContainerPrefix + hex.EncodeToString(suffix)}
	for _, m := range mounts {
		c = append(c, "-v", m+":"+m)
	}
	c = append(c, "--user", fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid()), "-e", "HOME=/tmp", "-w", workdir)
	for _, k := range sortedKeys(env) {
		c = append(c, "-e", k+"="+env[k])
	}
	return run.Cmd{Args: append(append(c, image), command...)}
}

// ContainerPrefix starts the name of every container-mode build container.
const ContainerPrefix = "nokmem-build-"

// runBuild runs a build command; when it is a container build (dockerRun)
// that fails or is cancelled, the container is removed: the docker client
// exits (or is killed with the context) while its container would go on
// compiling into the work tree and the staging directory.
func (b *Builder) runBuild(ctx context.Context, cmd run.Cmd) ([]byte, error) {
	out, err := b.Runner.Run(ctx, cmd)
	if err == nil || len(cmd.Args) < 2 || cmd.Args[1] != "run" {
		return out, err
	}
	if i := slices.Index(cmd.Args, "--name"); i > 0 && i+1 < len(cmd.Args) && strings.HasPrefix(cmd.Args[i+1], ContainerPrefix) {
		rm, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		// Fails harmlessly when --rm has removed it already.
		b.Runner.Run(rm, run.Cmd{Args: []string{cmd.Args[0], "rm", "-f", cmd.Args[i+1]}})
	}
	return out, err
}
