package pipeline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nokmem/nokmem/internal/build"
	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/internal/testenv"
	"github.com/nokmem/nokmem/matrix"
	"github.com/nokmem/nokmem/verify/container"
)

// buildImage makes a real build image the way a user would for container
// mode: a Debian root (debootstrap) with what runc's static build needs,
// the release's Go at /usr/local/go, imported FROM scratch (as
// golang:<era> with libseccomp-dev added would be). It returns the tag;
// the image goes when the test ends.
func buildImage(t *testing.T, goroot string) string {
	t.Helper()
	root := testenv.DebianRoot(t, "gcc", "libc6-dev", "libseccomp-dev", "pkg-config")
	for _, d := range []string{"usr/share/doc", "usr/share/locale", "usr/share/man"} {
		os.RemoveAll(filepath.Join(root, d))
	}
	if out, err := exec.Command("cp", "-a", goroot, filepath.Join(root, "usr/local/go")).CombinedOutput(); err != nil {
		t.Fatalf("copy the Go into the image root: %v\n%s", err, out)
	}
	suffix := make([]byte, 4)
	rand.Read(suffix)
	tag := "nokmem-test/golang-seccomp:" + hex.EncodeToString(suffix)
	tar := exec.Command("tar", "-C", root, "-c", ".")
	imp := exec.Command("docker", "import", "-c", "ENV PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "-", tag)
	pipe, err := tar.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	imp.Stdin = pipe
	if err := tar.Start(); err != nil {
		t.Fatal(err)
	}
	out, err := imp.CombinedOutput()
	if werr := tar.Wait(); err != nil || werr != nil {
		t.Fatalf("docker import: %v %v\n%s", err, werr, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", tag).Run() })
	return tag
}

// derivedImage builds FROM base with a RUN step, through the classic
// builder (no registry is needed for a local base).
func derivedImage(t *testing.T, base, run string) string {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM "+base+"\nRUN "+run+"\n"), 0o644)
	tag := base + "-derived"
	cmd := exec.Command("docker", "build", "-q", "-t", tag, dir)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", tag).Run() })
	return tag
}

func imageID(t *testing.T, tag string) string {
	t.Helper()
	out, err := exec.Command("docker", "image", "inspect", "--format", "{{.Id}}", tag).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// Container mode in a real image: what the image holds (its Go, C
// compiler and libseccomp) is read from it and recorded, the build runs
// the checked image by ID, and the result is static, gated and verified.
// An image that lacks the static archives is refused before anything is
// fetched, naming what to add, and a tag moved to such an image is not
// served from the cache.
func TestContainerModeBuildsInARealImage(t *testing.T) {
	if !container.Available(context.Background(), run.Local{}, "") {
		if testenv.InCI() {
			t.Fatalf("CI=true but no Docker engine answers (DOCKER_HOST=%q): .ci/run starts one", os.Getenv("DOCKER_HOST"))
		}
		t.Skip("no Docker engine answers (start one and set DOCKER_HOST to run this test)")
	}
	ctx := context.Background()
	r := repo(t)
	c := newConfig(t, r)
	m, err := matrix.Load("runc", c.MatrixDir, c.MatrixOverlay)
	if err != nil {
		t.Fatal(err)
	}
	rel, _ := m.Lookup("v1.0.0-rc9")
	tc, err := build.ResolveToolchain(ctx, run.Local{}, build.ToolchainRequest{Mode: build.ModeHost, Toolchain: build.SourceEra, Era: rel.Go, CacheDir: c.CacheDir})
	if err != nil {
		t.Fatal(err)
	}
	tag := buildImage(t, tc.GOROOT)
	id := imageID(t, tag)

	c.Mode, c.BuildImage = build.ModeContainer, tag
	res, err := BuildRunc(ctx, c, "v1.0.0-rc9")
	if err != nil {
		t.Fatal(err)
	}
	var prov dist.Provenance
	b, err := os.ReadFile(filepath.Join(res.Dir, dist.ProvenanceFile))
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(b, &prov)
	bi := prov.Build
	if bi.Mode != "container" || bi.Image != tag || bi.ImageID != id || bi.GoUsed != tc.Version {
		t.Errorf("provenance: mode %q image %q id %q go %q; want container, %s, %s, %s", bi.Mode, bi.Image, bi.ImageID, bi.GoUsed, tag, id, tc.Version)
	}
	if !strings.HasPrefix(bi.Cgo.CC, "gcc ") || bi.Cgo.Libseccomp == "" || !strings.HasSuffix(bi.Cgo.LibseccompStatic, "/libseccomp.a") {
		t.Errorf("the image's C toolchain is not recorded: %+v", bi.Cgo)
	}
	if slices.Contains(bi.Args, tag) || !slices.Contains(bi.Args, id) {
		t.Errorf("the build ran the tag, not the checked image's ID: %v", bi.Args)
	}
	var rep struct {
		Passed bool `json:"passed"`
		Target struct {
			OK      bool   `json:"ok"`
			Linkage string `json:"linkage"`
		} `json:"target"`
	}
	b, _ = os.ReadFile(filepath.Join(res.Dir, dist.ReportFile))
	json.Unmarshal(b, &rep)
	if !rep.Passed || !rep.Target.OK || rep.Target.Linkage != "static" {
		t.Errorf("the container build's report: %s", b)
	}
	t.Logf("built in %s (%s): %s, %s, libseccomp %s", tag, id, tc.Version, bi.Cgo.CC, bi.Cgo.Libseccomp)

	// Cancelled while the container compiles: the build fails as
	// cancelled and its container does not go on.
	cc := *c
	cc.DistDir = filepath.Join(t.TempDir(), "dist")
	cc.CacheDir = filepath.Join(t.TempDir(), "cache")
	cctx, cancel := context.WithCancel(ctx)
	cc.Runner = cancelInGoBuild{run.Local{}, cancel}
	if _, err := BuildRunc(cctx, &cc, "v1.0.0-rc9"); err == nil {
		t.Fatal("a cancelled container build succeeded")
	}
	if out, _ := exec.Command("docker", "ps", "-aq", "--filter", "name="+build.ContainerPrefix).Output(); strings.TrimSpace(string(out)) != "" {
		t.Errorf("the cancelled build left its container: %s", out)
	}

	// The tag now names an image without the static archives.
	bad := derivedImage(t, tag, "rm -f /usr/lib/x86_64-linux-gnu/libseccomp.a")
	if out, err := exec.Command("docker", "tag", bad, tag).CombinedOutput(); err != nil {
		t.Fatalf("docker tag: %v\n%s", err, out)
	}
	before := tree(t, c.DistDir)
	_, err = BuildRunc(ctx, c, "v1.0.0-rc9")
	if err == nil || !IsUserError(err) || !strings.Contains(err.Error(), "libseccomp.a") || !strings.Contains(err.Error(), "apt-get install -y libseccomp-dev pkg-config") {
		t.Fatalf("a tag moved to an image without libseccomp.a: %v", err)
	}
	if after := tree(t, c.DistDir); after != before {
		t.Errorf("the refused build changed dist/:\n%s\n---\n%s", before, after)
	}
	t.Logf("refused: %v", err)
}

// cancelInGoBuild cancels the build two seconds into the container's go
// build.
type cancelInGoBuild struct {
	run.Runner
	cancel context.CancelFunc
}

func (c cancelInGoBuild) Run(ctx context.Context, cmd run.Cmd) ([]byte, error) {
	if len(cmd.Args) > 1 && cmd.Args[1] == "run" && slices.Contains(cmd.Args, "build") {
		time.AfterFunc(2*time.Second, c.cancel)
	}
	return c.Runner.Run(ctx, cmd)
}
