package build

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/nokmem/nokmem/internal/run"
)

// ToolchainRequest says which Go to use.
type ToolchainRequest struct {
	Mode Mode
	// Era is the Go minor of the release, e.g. "1.12".
	Era string
	// GoBin, if set, is an explicit go binary (NOKMEM_GO).
	GoBin string
	// Toolchain, if set, is a GOTOOLCHAIN name such as go1.22.12 to
	// download through the module proxy (NOKMEM_GO_TOOLCHAIN).
	Toolchain string
	// Image overrides the container image (NOKMEM_BUILD_IMAGE).
	Image string
}

var toolchainRE = regexp.MustCompile(`^go1\.[0-9]+(\.[0-9]+)?$`)

// ResolveToolchain finds the Go to build with and its exact version.
//
// GOTOOLCHAIN is ignored in GOPATH mode (GO111MODULE=off), so a requested
// toolchain is resolved once, from a module-mode scratch directory, to its
// GOROOT, and that GOROOT's bin/go is run directly.
func ResolveToolchain(ctx context.Context, r run.Runner, req ToolchainRequest) (Toolchain, error) {
	if req.Mode == ModeContainer {
		img := req.Image
		if img == "" {
			img = "golang:" + req.Era
		}
		return Toolchain{GoBin: "go", Version: "go" + req.Era, Image: img}, nil
	}
	gobin := req.GoBin
	if gobin == "" {
		gobin = "go"
	}
	if req.Toolchain != "" {
		if !toolchainRE.MatchString(req.Toolchain) {
			return Toolchain{}, fmt.Errorf("NOKMEM_GO_TOOLCHAIN=%q is not a Go toolchain name such as go1.22.12", req.Toolchain)
		}
		scratch, err := os.MkdirTemp("", "nokmem-toolchain-*")
		if err != nil {
			return Toolchain{}, err
		}
		defer os.RemoveAll(scratch)
		if err := os.WriteFile(filepath.Join(scratch, "go.mod"), []byte("module scratch\n"), 0o644); err != nil {
			return Toolchain{}, err
		}
		out, err := r.Run(ctx, run.Cmd{Args: []string{gobin, "env", "GOROOT"}, Dir: scratch, Env: []string{"GOTOOLCHAIN=" + req.Toolchain, "GOFLAGS="}})
		if err != nil {
			return Toolchain{}, fmt.Errorf("cannot get Go toolchain %s (it is downloaded through the Go module proxy): %w", req.Toolchain, err)
		}
		gobin = filepath.Join(strings.TrimSpace(lastLine(out)), "bin", "go")
	}
	out, err := r.Run(ctx, run.Cmd{Args: []string{gobin, "env", "GOVERSION"}, Env: []string{"GOTOOLCHAIN=local", "GOFLAGS="}})
	if err != nil {
		return Toolchain{}, fmt.Errorf("no usable Go toolchain (%s); install Go or set NOKMEM_GO: %w", gobin, err)
	}
	v := strings.TrimSpace(lastLine(out))
	if !strings.HasPrefix(v, "go1.") {
		return Toolchain{}, fmt.Errorf("%s reports version %q", gobin, v)
	}
	return Toolchain{GoBin: gobin, Version: v}, nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// CheckCgoDeps makes sure the C libraries the tags need are installed
// before a long build fails on them (host mode only).
func CheckCgoDeps(ctx context.Context, r run.Runner, tags []string) error {
	for _, t := range tags {
		if t != "seccomp" {
			continue
		}
		if _, err := r.Run(ctx, run.Cmd{Args: []string{"pkg-config", "--exists", "libseccomp"}}); err != nil {
			return fmt.Errorf("the seccomp build tag needs libseccomp and pkg-config: install them " +
				"(Debian/Ubuntu: apt-get install libseccomp-dev pkg-config; RHEL/CentOS: yum install libseccomp-devel pkgconfig), " +
				"or build in container mode (NOKMEM_BUILD_MODE=container)")
		}
	}
	return nil
}
