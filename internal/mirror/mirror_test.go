package mirror

import (
	"bytes"
	"compress/gzip"
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
	"github.com/nokmem/nokmem/internal/packaging/packagingtest"
	"github.com/nokmem/nokmem/internal/pipeline"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/internal/signing"
	"github.com/nokmem/nokmem/internal/signing/signingtest"
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

// signed is a dist/ with signed packages of the runc fixture, published
// into a signed mirror.
type signed struct {
	dist, mirror string
	signer       *signing.Signer
	pub          []byte
	publisher    *Publisher
	rpm, deb     string // in dist/packages
}

func admit(distRoot string) func(string) error {
	return func(p string) error {
		a, _ := packaging.LoadArtifacts(distRoot)
		_, err := a.Check(p)
		return err
	}
}

func signedMirror(t *testing.T) *signed {
	t.Helper()
	needTools(t, "createrepo_c", "dpkg-scanpackages")
	s := &signed{dist: verifiedDist(t), mirror: filepath.Join(t.TempDir(), "mirror")}
	var err error
	if s.signer, err = signing.Load(signingtest.KeyFile(t, "mirror"), ""); err != nil {
		t.Fatal(err)
	}
	s.pub, _ = s.signer.PublicKey()
	pkgs, err := packaging.BuildWith(s.dist, "runc", "v1.0.0-rc9", packaging.Options{Signer: s.signer})
	if err != nil {
		t.Fatal(err)
	}
	s.rpm, s.deb = pkgs[0], pkgs[1]
	s.publisher = &Publisher{Runner: run.Local{}, Signer: s.signer, Admit: admit(s.dist)}
	res, err := s.publisher.Publish(context.Background(), packaging.Dir(s.dist), s.mirror)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Added) != 2 || res.Fingerprint != s.signer.Fingerprint() {
		t.Fatalf("publish: %+v", res)
	}
	return s
}

// clone copies a published mirror for a tampering test, with its client
// configuration pointing at the copy.
func clone(t *testing.T, m string) string {
	t.Helper()
	c := filepath.Join(t.TempDir(), "mirror")
	sh(t, "cp", "-a", m, c)
	for _, f := range []string{"nokmem.repo", "nokmem.sources", "nokmem.list"} {
		b, err := os.ReadFile(filepath.Join(c, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(c, f), bytes.ReplaceAll(b, []byte("file://"+m+"/"), []byte("file://"+c+"/")), 0o644)
	}
	return c
}

// regenerate rewrites the yum metadata from the packages as an attacker
// would: in full, not with --update, whose cache keeps a package's old
// checksum when its size and mtime second are unchanged (a byte flipped in
// the second the mirror was cloned).
func regenerate(t *testing.T, yum string) {
	t.Helper()
	sh(t, "createrepo_c", "--quiet", "--simple-md-filenames", yum)
}

func flipByte(t *testing.T, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-200] ^= 1 // in the payload
	os.WriteFile(p, b, 0o644)
}

// dnf installs runc-nokmem from the mirror into a scratch root with the
// mirror's own nokmem.repo (gpgcheck=1 repo_gpgcheck=1, gpgkey=the
// published key), nothing of the host's dnf configuration, and returns
// its output and the root.
func dnf(t *testing.T, mirror string, opts ...string) (string, string, error) {
	t.Helper()
	root, repos := t.TempDir(), t.TempDir()
	repo, err := os.ReadFile(filepath.Join(mirror, "nokmem.repo"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(repos, "nokmem.repo"), repo, 0o644)
	conf := filepath.Join(repos, "dnf.conf")
	os.WriteFile(conf, []byte("[main]\n"), 0o644)
	args := append([]string{"-y", "--config=" + conf, "--installroot=" + root, "--releasever=7", "--setopt=reposdir=" + repos,
		"--setopt=install_weak_deps=False", "--noplugins"}, opts...)
	out, err := exec.Command("dnf", append(args, "install", "runc-nokmem")...).CombinedOutput()
	return string(out), root, err
}

// aptRoot is a scratch apt state: its own sources (the mirror's published
// nokmem.sources, with the keyring path pointing into the scratch
// directory), lists, cache and dpkg status; nothing of the host's apt
// state is read or written but the programs.
type aptRoot struct{ dir string }

func newAptRoot(t *testing.T, mirror string) *aptRoot {
	t.Helper()
	a := &aptRoot{dir: t.TempDir()}
	for _, d := range []string{"etc/apt/sources.list.d", "etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/trusted.gpg.d",
		"var/lib/apt/lists/partial", "var/cache/apt/archives/partial", "var/lib/dpkg", "keyrings", "download"} {
		os.MkdirAll(filepath.Join(a.dir, d), 0o755)
	}
	os.WriteFile(filepath.Join(a.dir, "var/lib/dpkg/status"), nil, 0o644)
	ring, err := os.ReadFile(filepath.Join(mirror, "nokmem.gpg"))
	if err != nil {
		t.Fatal(err)
	}
	keyring := filepath.Join(a.dir, "keyrings/nokmem.gpg")
	os.WriteFile(keyring, ring, 0o644)
	src, err := os.ReadFile(filepath.Join(mirror, "nokmem.sources"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(src, []byte("Signed-By: "+Keyring+"\n")) || bytes.Contains(src, []byte("Trusted")) {
		t.Fatalf("published apt source:\n%s", src)
	}
	os.WriteFile(filepath.Join(a.dir, "etc/apt/sources.list.d/nokmem.sources"), bytes.ReplaceAll(src, []byte(Keyring), []byte(keyring)), 0o644)
	return a
}

func (a *aptRoot) run(args ...string) (string, error) {
	c := exec.Command("apt-get", append([]string{"-o", "Dir=" + a.dir, "-o", "Dir::State::status=" + filepath.Join(a.dir, "var/lib/dpkg/status"),
		"-o", "APT::Sandbox::User=root", "-o", "Acquire::Languages=none"}, args...)...)
	c.Dir = filepath.Join(a.dir, "download")
	out, err := c.CombinedOutput()
	return string(out), err
}

func TestPackagesAndMirror(t *testing.T) {
	needTools(t, "rpm", "dpkg-deb", "createrepo_c", "dpkg-scanpackages", "dnf", "gpg")
	s := signedMirror(t)
	if filepath.Base(s.rpm) != "runc-nokmem-rc9-1.0.0~rc9-1.nokmem.el7.x86_64.rpm" || filepath.Base(s.deb) != "runc-nokmem-rc9_1.0.0~rc9-1.nokmem_amd64.deb" {
		t.Fatalf("package names: %s %s", s.rpm, s.deb)
	}
	files := sh(t, "rpm", "-qpl", s.rpm)
	for _, want := range []string{"/usr/bin/runc-nokmem", "/usr/share/doc/runc-nokmem-rc9/provenance.json", "/usr/share/doc/runc-nokmem-rc9/verify.json"} {
		if !strings.Contains(files, want) {
			t.Errorf("rpm -qpl lacks %s:\n%s", want, files)
		}
	}
	if strings.Contains(files, "/usr/bin/runc\n") {
		t.Error("the package would conflict with the distribution's /usr/bin/runc")
	}
	// Version order against upstream-style versions.
	sh(t, "dpkg", "--compare-versions", "1.0.0~rc9-1.nokmem", "gt", "1.0.0~rc9-0")
	sh(t, "dpkg", "--compare-versions", "1.0.0~rc9-1.nokmem", "lt", "1.0.0-1")
	sh(t, "dpkg", "--compare-versions", "1.13.12-1.nokmem", "gt", "1.13.12-00")
	if got := strings.TrimSpace(sh(t, "rpm", "--eval", `%{lua: print(rpm.vercmp("1.13.12-1.nokmem.el7", "1.13.12-0"))}`)); got != "1" {
		t.Errorf("rpm vercmp kubelet = %s", got)
	}
	if got := strings.TrimSpace(sh(t, "rpm", "--eval", `%{lua: print(rpm.vercmp("1.0.0~rc9", "1.0.0"))}`)); got != "-1" {
		t.Errorf("rpm vercmp rc = %s", got)
	}

	// The mirror's own checksums and every signature check out with gpg.
	m := s.mirror
	sums, _ := os.ReadFile(filepath.Join(m, "SHA256SUMS"))
	for _, want := range []string{"yum/el7/x86_64/repodata/repomd.xml\n", "yum/el7/x86_64/repodata/repomd.xml.asc\n", "apt/InRelease\n", "apt/Release.gpg\n", "nokmem.asc\n", "nokmem.gpg\n", "nokmem.repo\n"} {
		if !strings.Contains(string(sums), want) {
			t.Errorf("mirror SHA256SUMS lacks %s", want)
		}
	}
	home := filepath.Join(t.TempDir(), "gnupg")
	os.Mkdir(home, 0o700)
	gpg := func(args ...string) string {
		return sh(t, "gpg", append([]string{"--batch", "--homedir", home}, args...)...)
	}
	gpg("--import", filepath.Join(m, "nokmem.asc"))
	for _, sig := range []string{"SHA256SUMS.asc", YumDir + "/repodata/repomd.xml.asc", AptDir + "/Release.gpg"} {
		gpg("--verify", filepath.Join(m, sig), filepath.Join(m, strings.TrimSuffix(strings.TrimSuffix(sig, ".asc"), ".gpg")))
	}
	gpg("--verify", filepath.Join(m, AptDir, "InRelease"))
	// nokmem.gpg is the same key, unarmored (what signed-by reads).
	if out := sh(t, "gpg", "--batch", "--homedir", home, "--show-keys", "--with-colons", filepath.Join(m, "nokmem.gpg")); !strings.Contains(out, "fpr:::::::::"+s.signer.Fingerprint()+":") {
		t.Errorf("nokmem.gpg:\n%s", out)
	}
	repo, _ := os.ReadFile(filepath.Join(m, "nokmem.repo"))
	for _, want := range []string{"baseurl=file://" + m + "/yum/el7/x86_64\n", "gpgcheck=1\n", "repo_gpgcheck=1\n", "gpgkey=file://" + m + "/nokmem.asc\n", s.signer.Fingerprint()} {
		if !strings.Contains(string(repo), want) {
			t.Errorf("nokmem.repo lacks %q:\n%s", want, repo)
		}
	}
	if l, _ := os.ReadFile(filepath.Join(m, "nokmem.list")); string(l) != "deb [signed-by=/usr/share/keyrings/nokmem.gpg] file://"+m+"/apt ./\n" {
		t.Errorf("nokmem.list: %s", l)
	}

	// Packages built again (as publish:mirror does on every run, a second
	// later: new signatures) and published again add nothing and keep the
	// metadata.
	repomd := filepath.Join(m, YumDir, "repodata", "repomd.xml")
	before, _ := os.ReadFile(repomd)
	time.Sleep(1100 * time.Millisecond)
	if _, err := packaging.BuildWith(s.dist, "runc", "v1.0.0-rc9", packaging.Options{Signer: s.signer}); err != nil {
		t.Fatal(err)
	}
	res, err := s.publisher.Publish(context.Background(), packaging.Dir(s.dist), m)
	if err != nil || len(res.Added) != 0 || len(res.Skipped) != 2 {
		t.Fatalf("re-publish: %+v %v", res, err)
	}
	if idx := sh(t, "cat", filepath.Join(m, AptDir, "Packages")); !strings.Contains(idx, "Package: runc-nokmem-rc9") || strings.Contains(idx, "dpkg-scanpackages") {
		t.Errorf("apt index:\n%s", idx)
	}
	// createrepo_c rewrites repomd.xml with new timestamps (hence the
	// second's pause above), but the uncompressed primary, filelists and
	// other are the same.
	after, _ := os.ReadFile(repomd)
	if b, a := repoContent(t, before), repoContent(t, after); a != b {
		t.Errorf("a publish that added nothing changed the yum metadata: %s, then %s", b, a)
	}

	// Real dnf, signatures on, installs it into a scratch root.
	out, root, err := dnf(t, m)
	if err != nil {
		t.Fatalf("dnf install with gpgcheck=1 repo_gpgcheck=1: %v\n%s", err, out)
	}
	t.Logf("dnf:\n%s", out)
	if !strings.Contains(out, "Key imported successfully") || !strings.Contains(out, "runc-nokmem-rc9-1.0.0~rc9-1.nokmem.el7.x86_64") {
		t.Errorf("dnf output:\n%s", out)
	}
	if sum, _ := dist.FileSHA256(filepath.Join(root, "usr/bin/runc-nokmem")); sum != fileSum(t, filepath.Join(s.dist, "runc/v1.0.0-rc9/runc")) {
		t.Errorf("installed binary differs from the verified artifact")
	}
	if sig := sh(t, "rpm", "--root", root, "-q", "--qf", "%{SIGPGP:pgpsig}", "runc-nokmem-rc9"); !strings.Contains(sig, "RSA/SHA256") || !strings.HasSuffix(strings.ToUpper(sig), s.signer.Fingerprint()[24:]) {
		t.Errorf("installed package signature: %s", sig)
	}

	// A package rebuilt with other bytes under the same name is refused.
	if _, err := packaging.BuildWith(s.dist, "runc", "v1.0.0-rc9", packaging.Options{Signer: s.signer, Maintainer: "Someone Else <else@example.com>"}); err != nil {
		t.Fatal(err)
	}
	_, err = s.publisher.Publish(context.Background(), packaging.Dir(s.dist), m)
	var changed *ChangedError
	if !errors.As(err, &changed) {
		t.Fatalf("rewrite not refused: %v", err)
	}
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	s, err := dist.FileSHA256(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dnf with the published configuration refuses a mirror that was tampered
// with: every layer (package checksum in the metadata, the metadata's
// signature, the package's own signature) on its own.
func TestDnfRefusesTampering(t *testing.T) {
	needTools(t, "dnf", "createrepo_c")
	s := signedMirror(t)
	rpmIn := func(m string) string { return filepath.Join(m, YumDir, filepath.Base(s.rpm)) }
	yum := func(m string) string { return filepath.Join(m, YumDir) }
	for _, c := range []struct {
		name   string
		tamper func(m string)
		opts   []string
		want   string
	}{
		{"flipped byte in the published rpm", func(m string) { flipByte(t, rpmIn(m)) }, nil, "has incorrect checksum"},
		{"edited primary.xml", func(m string) {
			p := filepath.Join(yum(m), "repodata", "primary.xml.gz")
			edited := bytes.Replace(gunzip(t, p), []byte("without kernel-memory"), []byte("WITH kernel-memory"), 1)
			os.WriteFile(p, gzipBytes(edited), 0o644)
		}, nil, "checksum doesn't match"},
		{"tampered rpm with regenerated metadata (repomd.xml.asc no longer matches)", func(m string) {
			flipByte(t, rpmIn(m))
			regenerate(t, yum(m))
		}, nil, "repomd.xml GPG signature verification error"},
		{"the same with repo_gpgcheck off: the package signature alone", func(m string) {
			flipByte(t, rpmIn(m))
			regenerate(t, yum(m))
		}, []string{"--setopt=nokmem.repo_gpgcheck=0"}, "GPG check FAILED"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := clone(t, s.mirror)
			c.tamper(m)
			out, root, err := dnf(t, m, c.opts...)
			if err == nil || !strings.Contains(out, c.want) {
				t.Fatalf("dnf did not refuse with %q (err %v):\n%s", c.want, err, out)
			}
			if _, err := os.Stat(filepath.Join(root, "usr/bin/runc-nokmem")); err == nil {
				t.Fatal("installed anyway")
			}
			t.Logf("refused: %s", lastLines(out, c.want))
		})
	}
}

// Real apt with signed-by and no trusted=yes fetches the package, and
// refuses a tampered package, index or Release.
func TestAptSignedBy(t *testing.T) {
	needTools(t, "apt-get", "dpkg-scanpackages", "createrepo_c")
	s := signedMirror(t)
	a := newAptRoot(t, s.mirror)
	out, err := a.run("update")
	if err != nil || !strings.Contains(out, "InRelease") {
		t.Fatalf("apt-get update: %v\n%s", err, out)
	}
	t.Logf("apt-get update:\n%s", out)
	// install resolves the virtual runc-nokmem to the one provider.
	if out, err := a.run("install", "-y", "--download-only", "runc-nokmem"); err != nil || !strings.Contains(out, "runc-nokmem-rc9") || !strings.Contains(out, "Download complete") {
		t.Fatalf("apt-get install --download-only: %v\n%s", err, out)
	} else {
		t.Logf("apt-get install --download-only runc-nokmem:\n%s", out)
	}
	out, err = a.run("download", "runc-nokmem-rc9")
	if err != nil {
		t.Fatalf("apt-get download: %v\n%s", err, out)
	}
	got, err := packaging.ReadPackage(filepath.Join(a.dir, "download", filepath.Base(s.deb)))
	if err != nil {
		t.Fatal(err)
	}
	if got.Files["/usr/bin/runc-nokmem"] != fileSum(t, filepath.Join(s.dist, "runc/v1.0.0-rc9/runc")) {
		t.Error("the package apt fetched does not hold the verified binary")
	}

	for _, c := range []struct {
		name   string
		tamper func(m string)
		update bool // the refusal comes at update, else at download
		want   string
	}{
		{"flipped byte in the published deb", func(m string) { flipByte(t, filepath.Join(m, AptDir, filepath.Base(s.deb))) }, false, "Hash Sum mismatch"},
		{"edited Packages", func(m string) {
			p := filepath.Join(m, AptDir, "Packages")
			b, _ := os.ReadFile(p)
			b = bytes.Replace(b, []byte("Version: 1.0.0~rc9-1.nokmem"), []byte("Version: 1.0.0~rc9-2.nokmem"), 1)
			os.WriteFile(p, b, 0o644)
			os.WriteFile(p+".gz", gzipBytes(b), 0o644)
		}, true, "Hash Sum mismatch"},
		{"forged InRelease", func(m string) {
			p := filepath.Join(m, AptDir, "InRelease")
			b, _ := os.ReadFile(p)
			b = regexp.MustCompile(`(?m)^ [0-9a-f]{64} (\d+ Packages.gz)$`).ReplaceAll(b, []byte(" "+strings.Repeat("0", 64)+" $1"))
			os.WriteFile(p, b, 0o644)
			os.Remove(filepath.Join(m, AptDir, "Release.gpg"))
		}, true, "BADSIG"},
		{"unsigned repository", func(m string) {
			os.Remove(filepath.Join(m, AptDir, "InRelease"))
			os.Remove(filepath.Join(m, AptDir, "Release.gpg"))
		}, true, "is not signed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := clone(t, s.mirror)
			a := newAptRoot(t, m)
			if !c.update {
				if out, err := a.run("update"); err != nil {
					t.Fatalf("apt-get update: %v\n%s", err, out)
				}
			}
			c.tamper(m)
			if c.update {
				out, err = a.run("update")
			} else {
				out, err = a.run("download", "runc-nokmem-rc9")
			}
			if err == nil || !strings.Contains(out, c.want) {
				t.Fatalf("apt did not refuse with %q (err %v):\n%s", c.want, err, out)
			}
			if _, err := os.Stat(filepath.Join(a.dir, "download", filepath.Base(s.deb))); err == nil {
				t.Fatal("downloaded anyway")
			}
			t.Logf("refused: %s", lastLines(out, c.want))
		})
	}
}

// Packages that carry no verified artifact stay out of the mirror.
func TestStrayPackagesAreNotPublished(t *testing.T) {
	needTools(t, "createrepo_c", "dpkg-scanpackages")
	d := verifiedDist(t)
	if _, err := packaging.Build(d, "runc", "v1.0.0-rc9", ""); err != nil {
		t.Fatal(err)
	}
	bin, _ := os.ReadFile(filepath.Join(d, "runc/v1.0.0-rc9/runc"))
	evil := packagingtest.Stray(t, packaging.Dir(d), "deb", "evil", "9.9.9", "/usr/bin/runc-nokmem", bin)
	m := filepath.Join(t.TempDir(), "mirror")
	res, err := (&Publisher{Runner: run.Local{}, Admit: admit(d)}).Publish(context.Background(), packaging.Dir(d), m)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Added) != 2 || len(res.Refused) != 1 || !strings.Contains(res.Refused[0], filepath.Base(evil)+": package evil 9.9.9 is not the package of any verified artifact") {
		t.Fatalf("publish: %+v", res)
	}
	if _, err := os.Stat(filepath.Join(m, AptDir, filepath.Base(evil))); err == nil {
		t.Fatal("stray package published")
	}
	// Unsigned: the configuration says so, and nothing claims a signature.
	repo, _ := os.ReadFile(filepath.Join(m, "nokmem.repo"))
	list, _ := os.ReadFile(filepath.Join(m, "nokmem.list"))
	if !strings.Contains(string(repo), "UNSIGNED") || !strings.Contains(string(repo), "gpgcheck=0") || !strings.Contains(string(list), "[trusted=yes]") {
		t.Errorf("unsigned mirror configuration:\n%s\n%s", repo, list)
	}
	for _, f := range []string{"nokmem.asc", AptDir + "/InRelease", YumDir + "/repodata/repomd.xml.asc", "SHA256SUMS.asc"} {
		if _, err := os.Stat(filepath.Join(m, f)); err == nil {
			t.Errorf("unsigned mirror has %s", f)
		}
	}
	// Only strays: nothing to publish, and the error says why.
	only := t.TempDir()
	packagingtest.Stray(t, only, "rpm", "evil", "9.9.9", "/usr/bin/evil", bin)
	if _, err := (&Publisher{Runner: run.Local{}, Admit: admit(d)}).Publish(context.Background(), only, filepath.Join(t.TempDir(), "m")); err == nil || !strings.Contains(err.Error(), "carries a verified artifact") {
		t.Fatalf("only strays: %v", err)
	}
	if _, err := (&Publisher{Runner: run.Local{}}).Publish(context.Background(), packaging.Dir(d), m); err == nil {
		t.Fatal("published without a package check")
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
	p := &Publisher{Runner: r, Admit: admit(d)}
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

func gunzip(t *testing.T, p string) []byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := b.ReadFrom(zr); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func gzipBytes(b []byte) []byte {
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}

// lastLines returns the output lines that mention what was wanted.
func lastLines(out, want string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, want) {
			keep = append(keep, strings.TrimSpace(l))
		}
	}
	return strings.Join(keep, " | ")
}
