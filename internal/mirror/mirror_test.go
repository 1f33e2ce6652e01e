package mirror

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nokmem/nokmem/internal/build"
	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/fixture"
	"github.com/nokmem/nokmem/internal/packaging"
	"github.com/nokmem/nokmem/internal/pipeline"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/internal/testenv"
	"github.com/nokmem/nokmem/verify"
)

// needTools requires the real packaging tools; CI installs them.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if testenv.InCI() {
				t.Fatalf("CI=true but %s is missing (.ci/run installs it)", tool)
			}
			t.Skipf("needs %s", tool)
		}
	}
}

// verifiedDist builds the runc fixture through the real pipeline.
func verifiedDist(t *testing.T) string {
	t.Helper()
	r := fixture.NewRuncRepo(t)
	mo, po := r.Overlay(t)
	d := filepath.Join(t.TempDir(), "dist")
	c := &pipeline.Config{RepoURL: r.Dir, CacheDir: t.TempDir(), DistDir: d, MatrixDir: "../../matrix", PatchesDir: "../../patches",
		MatrixOverlay: mo, PatchesOverlay: po, Mode: build.ModeHost, Runner: run.Local{}, Verifier: pipeline.DefaultVerifier{},
		AllowStaticOnly: verify.HostProblem() != "" && !testenv.InCI()}
	if _, err := pipeline.BuildRunc(context.Background(), c, "v1.0.0-rc9"); err != nil {
		t.Fatal(err)
	}
	return d
}

func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestPackagesAndMirror(t *testing.T) {
	needTools(t, "rpm", "dpkg-deb", "createrepo_c", "dpkg-scanpackages", "dnf")
	d := verifiedDist(t)
	pkgs, err := packaging.Build(d, "runc", "v1.0.0-rc9", "")
	if err != nil {
		t.Fatal(err)
	}
	var rpmPath, debPath string
	for _, p := range pkgs {
		switch filepath.Ext(p) {
		case ".rpm":
			rpmPath = p
		case ".deb":
			debPath = p
		}
	}
	if filepath.Base(rpmPath) != "runc-nokmem-1.0.0~rc9-1.nokmem.x86_64.rpm" || filepath.Base(debPath) != "runc-nokmem_1.0.0~rc9-1.nokmem_amd64.deb" {
		t.Fatalf("package names: %v", pkgs)
	}
	info := sh(t, "rpm", "-qpi", rpmPath)
	for _, want := range []string{"Name        : runc-nokmem", "Version     : 1.0.0~rc9", "Release     : 1.nokmem"} {
		if !strings.Contains(info, want) {
			t.Errorf("rpm -qpi lacks %q:\n%s", want, info)
		}
	}
	files := sh(t, "rpm", "-qpl", rpmPath)
	for _, want := range []string{"/usr/bin/runc-nokmem", "/usr/share/doc/runc-nokmem/provenance.json", "/usr/share/doc/runc-nokmem/verify.json", "/usr/share/runc-nokmem/docker-daemon.json"} {
		if !strings.Contains(files, want) {
			t.Errorf("rpm -qpl lacks %s:\n%s", want, files)
		}
	}
	if strings.Contains(files, "/usr/bin/runc\n") {
		t.Error("the package would conflict with the distribution's /usr/bin/runc")
	}
	if c := sh(t, "dpkg-deb", "-c", debPath); !strings.Contains(c, "./usr/bin/runc-nokmem") {
		t.Errorf("dpkg-deb -c:\n%s", c)
	}
	if f := sh(t, "dpkg-deb", "-f", debPath, "Version"); strings.TrimSpace(f) != "1.0.0~rc9-1.nokmem" {
		t.Errorf("deb version %q", f)
	}
	// Version order against upstream-style versions.
	sh(t, "dpkg", "--compare-versions", "1.0.0~rc9-1.nokmem", "gt", "1.0.0~rc9-0")
	sh(t, "dpkg", "--compare-versions", "1.0.0~rc9-1.nokmem", "lt", "1.0.0-1")
	sh(t, "dpkg", "--compare-versions", "1.13.12-1.nokmem", "gt", "1.13.12-00")
	if got := strings.TrimSpace(sh(t, "rpm", "--eval", `%{lua: print(rpm.vercmp("1.13.12-1.nokmem", "1.13.12-0"))}`)); got != "1" {
		t.Errorf("rpm vercmp kubelet = %s", got)
	}
	if got := strings.TrimSpace(sh(t, "rpm", "--eval", `%{lua: print(rpm.vercmp("1.0.0~rc9", "1.0.0"))}`)); got != "-1" {
		t.Errorf("rpm vercmp rc = %s", got)
	}

	m := filepath.Join(t.TempDir(), "mirror")
	signed := 0
	p := &Publisher{Runner: run.Local{}, Sign: func(b []byte) ([]byte, error) { signed++; return []byte("sig of " + dist.SHA256Hex(b)), nil }}
	res, err := p.Publish(context.Background(), packaging.Dir(d), m)
	if err != nil {
		t.Fatal(err)
	}
	sums, _ := os.ReadFile(filepath.Join(m, "SHA256SUMS"))
	sig, _ := os.ReadFile(filepath.Join(m, "SHA256SUMS.asc"))
	if signed != 1 || string(sig) != "sig of "+dist.SHA256Hex(sums) || !strings.Contains(string(sums), "yum/el7/x86_64/repodata/repomd.xml") {
		t.Errorf("mirror SHA256SUMS not covered or not signed:\n%s\n%s", sums, sig)
	}
	if len(res.Added) != 2 {
		t.Fatalf("added %v", res.Added)
	}
	repomd := filepath.Join(m, YumDir, "repodata", "repomd.xml")
	before, _ := os.ReadFile(repomd)
	time.Sleep(1100 * time.Millisecond)
	// A second publish adds nothing and keeps the metadata.
	res, err = p.Publish(context.Background(), packaging.Dir(d), m)
	if err != nil || len(res.Added) != 0 || len(res.Skipped) != 2 {
		t.Fatalf("re-publish: %+v %v", res, err)
	}
	if idx := sh(t, "cat", filepath.Join(m, AptDir, "Packages")); !strings.Contains(idx, "Package: runc-nokmem") || strings.Contains(idx, "dpkg-scanpackages") {
		t.Errorf("apt index:\n%s", idx)
	}
	// The metadata lists the same packages: createrepo_c rewrites
	// repomd.xml with new timestamps (hence the second's pause above), but
	// the uncompressed primary, filelists and other are the same.
	after, _ := os.ReadFile(repomd)
	if b, a := repoContent(t, before), repoContent(t, after); a != b {
		t.Errorf("a publish that added nothing changed the yum metadata: %s, then %s", b, a)
	}

	// A real dnf client installs the package from the repository into a scratch root.
	root := t.TempDir()
	out, err := exec.Command("dnf", "-y", "-q", "--installroot="+root, "--releasever=7", "--setopt=reposdir=/dev/null",
		"--setopt=install_weak_deps=False", "--disableplugin=*", "--nogpgcheck",
		"--repofrompath=nokmem,file://"+filepath.Join(m, YumDir), "--repo=nokmem", "install", "runc-nokmem").CombinedOutput()
	if err != nil {
		t.Fatalf("dnf install: %v\n%s", err, out)
	}
	installed := filepath.Join(root, "usr/bin/runc-nokmem")
	if sum, _ := exec.Command("sha256sum", installed).Output(); !strings.HasPrefix(string(sum), strings.Fields(sh(t, "sha256sum", filepath.Join(d, "runc/v1.0.0-rc9/runc")))[0]) {
		t.Errorf("installed binary differs from the verified artifact")
	}

	// A package rebuilt with other bytes under the same name is refused.
	os.WriteFile(rpmPath, []byte("different"), 0o644)
	_, err = p.Publish(context.Background(), packaging.Dir(d), m)
	var changed *ChangedError
	if !errors.As(err, &changed) {
		t.Fatalf("rewrite not refused: %v", err)
	}
}

// failingIndex fails the index step once: an interrupted publish.
type failingIndex struct {
	run.Runner
	fail bool
}

func (f *failingIndex) Run(ctx context.Context, c run.Cmd) ([]byte, error) {
	if f.fail && c.Args[0] == "createrepo_c" {
		f.fail = false
		return nil, errors.New("interrupted")
	}
	return f.Runner.Run(ctx, c)
}

func TestInterruptedPublishCompletesOnRerun(t *testing.T) {
	needTools(t, "createrepo_c", "dpkg-scanpackages")
	d := verifiedDist(t)
	if _, err := packaging.Build(d, "runc", "v1.0.0-rc9", ""); err != nil {
		t.Fatal(err)
	}
	m := filepath.Join(t.TempDir(), "mirror")
	r := &failingIndex{Runner: run.Local{}, fail: true}
	p := &Publisher{Runner: r}
	if _, err := p.Publish(context.Background(), packaging.Dir(d), m); err == nil {
		t.Fatal("interrupted publish reported success")
	}
	// Packages are complete files; no metadata claims anything yet.
	if _, err := os.Stat(filepath.Join(m, YumDir, "repodata", "repomd.xml")); err == nil {
		t.Fatal("metadata written by an interrupted publish")
	}
	if tmp, _ := filepath.Glob(filepath.Join(m, YumDir, ".tmp-*")); len(tmp) > 0 {
		t.Fatalf("partial files: %v", tmp)
	}
	res, err := p.Publish(context.Background(), packaging.Dir(d), m)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Skipped) != 2 {
		t.Fatalf("re-run: %+v", res)
	}
	if _, err := os.Stat(filepath.Join(m, YumDir, "repodata", "repomd.xml")); err != nil {
		t.Fatal("re-run did not complete the metadata")
	}
}

func TestRefusesUnverifiedArtifact(t *testing.T) {
	d := verifiedDist(t)
	rep := filepath.Join(d, "runc", "v1.0.0-rc9", "verify.json")
	b, _ := os.ReadFile(rep)
	os.WriteFile(rep, []byte(strings.Replace(string(b), `"passed": true`, `"passed": false`, 1)), 0o644)
	// A modified artifact fails its checksums …
	if _, err := packaging.Build(d, "runc", "v1.0.0-rc9", ""); err == nil || !strings.Contains(err.Error(), "modified") {
		t.Fatalf("tampered artifact: %v", err)
	}
	// … and one whose checksums agree but whose report failed is refused too.
	dist.WriteSums(filepath.Dir(rep))
	if _, err := packaging.Build(d, "runc", "v1.0.0-rc9", ""); err == nil || !strings.Contains(err.Error(), "without a passing verification report") {
		t.Fatalf("unverified artifact: %v", err)
	}
}

var repoData = regexp.MustCompile(`<data type="(primary|filelists|other)">\s*<checksum[^>]*>[0-9a-f]+</checksum>\s*<open-checksum type="sha256">([0-9a-f]{64})</open-checksum>`)

// repoContent names what repomd.xml says the repository holds: the sha256
// of the uncompressed primary, filelists and other metadata.
func repoContent(t *testing.T, repomd []byte) string {
	t.Helper()
	m := repoData.FindAllSubmatch(repomd, -1)
	if len(m) != 3 {
		t.Fatalf("repomd.xml lacks primary, filelists or other:\n%s", repomd)
	}
	var out []string
	for _, d := range m {
		out = append(out, string(d[1])+"="+string(d[2]))
	}
	return strings.Join(out, " ")
}
