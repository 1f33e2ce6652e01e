package packaging

// Installing over upstream-shaped packages and removing runc-nokmem with
// the real rpm and dpkg, into scratch roots (rpm --root, dpkg --root):
// never the host's package databases.

import (
	"context"
	"debug/elf"
	"github.com/nokmem/nokmem/internal/packaging/packagingtest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/files"
	"golang.org/x/sys/unix"

	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/internal/runtimecfg"
	"github.com/nokmem/nokmem/internal/testenv"
)

// pm runs rpm or dpkg; failures return the output for the caller to judge.
func pm(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := (run.Local{}).Run(ctx, run.Cmd{Args: args, Env: env})
	return string(out), err
}

func mustPM(t *testing.T, args ...string) string {
	t.Helper()
	out, err := pm(t, nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// upstreamFile is one entry of an upstream-shaped package.
type upstreamFile struct {
	dst, content, typ string
}

// upstreamPackage writes a package shaped like one of the Kubernetes
// project's (kubernetes/release rpm/kubelet.spec of the 1.13 line, and its
// debs), built with nfpm.
func upstreamPackage(t *testing.T, format, name, version, release string, fs []upstreamFile) string {
	t.Helper()
	dir := t.TempDir()
	var contents files.Contents
	for i, f := range fs {
		c := &files.Content{Destination: f.dst, Type: f.typ, FileInfo: &files.ContentFileInfo{Mode: 0o644}}
		if f.typ == files.TypeDir {
			c.FileInfo.Mode = 0o755
		} else {
			c.Source = filepath.Join(dir, "f"+string(rune('a'+i)))
			if err := os.WriteFile(c.Source, []byte(f.content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if strings.HasPrefix(f.dst, "/usr/bin/") {
			c.FileInfo.Mode = 0o755
		}
		contents = append(contents, c)
	}
	info := nfpm.WithDefaults(&nfpm.Info{Name: name, Arch: "amd64", Platform: "linux", Version: version, Release: release,
		Maintainer: "Kubernetes Authors <kubernetes-dev@googlegroups.com>", Description: "upstream-shaped " + name,
		Overridables: nfpm.Overridables{Contents: contents}})
	return packagingtest.Write(t, dir, format, info)
}

// dpkgRoot makes an empty dpkg database under root.
func dpkgRoot(t *testing.T, root string) {
	t.Helper()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "var/lib/dpkg/alternatives"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// leftovers lists the files package managers set aside: what a drop-in
// must not cause.
func leftovers(root string) []string {
	var found []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			for _, suffix := range []string{".rpmsave", ".rpmnew", ".rpmorig", ".dpkg-old", ".dpkg-new", ".dpkg-dist"} {
				if strings.HasSuffix(p, suffix) {
					found = append(found, strings.TrimPrefix(p, root))
				}
			}
		}
		return nil
	})
	return found
}

const editedArgs = "KUBELET_EXTRA_ARGS=--node-labels=pool=edited --cgroup-driver=cgroupfs\n"

// The nokmem kubelet replaces an upstream-shaped kubelet whose environment
// file was edited: rpm -U and dpkg -i keep the edit, set nothing aside, and
// the nokmem package owns what upstream's owned (the manifests directory,
// the environment file as a noreplace config file); kubeadm's drop-in stays.
func TestKubeletReplacesAnUpstreamKubeletKeepingTheEditedConfig(t *testing.T) {
	testenv.RequireRoot(t)
	d := t.TempDir()
	fakeArtifact(t, d, "kubelet", "v1.13.12", []byte("#!/bin/sh\necho Kubernetes v1.13.12\n"))
	paths, err := Build(d, "kubelet", "v1.13.12", "")
	if err != nil {
		t.Fatal(err)
	}
	ours := map[string]string{}
	for _, p := range paths {
		ours[filepath.Ext(p)] = p
	}
	upstreamBinary := "#!/bin/sh\necho upstream Kubernetes v1.13.12\n"

	t.Run("rpm", func(t *testing.T) {
		testenv.RequireTools(t, "rpm")
		kubelet := upstreamPackage(t, "rpm", "kubelet", "1.13.12", "0", []upstreamFile{
			{dst: "/usr/bin/kubelet", content: upstreamBinary},
			{dst: "/usr/lib/systemd/system/kubelet.service", content: kubeletUnit},
			{dst: "/etc/kubernetes/manifests", typ: files.TypeDir},
			{dst: "/etc/sysconfig/kubelet", content: kubeletEnv, typ: files.TypeConfigNoReplace},
		})
		kubeadm := upstreamPackage(t, "rpm", "kubeadm", "1.13.12", "0", []upstreamFile{
			{dst: "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf", content: "[Service]\nEnvironmentFile=-/etc/sysconfig/kubelet\n"},
		})
		root := t.TempDir()
		// --nodeps: the scratch root has no iptables, socat, kubernetes-cni.
		mustPM(t, "rpm", "--root", root, "-i", "--nodeps", kubelet, kubeadm)
		writeTestFile(t, filepath.Join(root, "etc/sysconfig/kubelet"), editedArgs)
		out := mustPM(t, "rpm", "--root", root, "-U", "--nodeps", "-v", ours[".rpm"])
		t.Logf("rpm -U %s:\n%s", filepath.Base(ours[".rpm"]), out)
		if strings.Contains(out, "warning") {
			t.Errorf("rpm -U warned:\n%s", out)
		}
		checkDropIn(t, root, "etc/sysconfig/kubelet", "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf")
		if q := mustPM(t, "rpm", "--root", root, "-q", "kubelet"); !strings.HasPrefix(q, "kubelet-1.13.12-1.nokmem") {
			t.Errorf("installed: %s", q)
		}
		for path, want := range map[string]string{"/etc/kubernetes/manifests": "kubelet", "/etc/sysconfig/kubelet": "kubelet"} {
			if q := mustPM(t, "rpm", "--root", root, "-qf", "--qf", "%{NAME}\n", path); strings.TrimSpace(q) != want {
				t.Errorf("%s is owned by %q", path, q)
			}
		}
		if c := mustPM(t, "rpm", "--root", root, "-qc", "kubelet"); !strings.Contains(c, "/etc/sysconfig/kubelet") {
			t.Errorf("config files of kubelet: %s", c)
		}
	})

	t.Run("deb", func(t *testing.T) {
		testenv.RequireTools(t, "dpkg")
		kubelet := upstreamPackage(t, "deb", "kubelet", "1.13.12", "00", []upstreamFile{
			{dst: "/usr/bin/kubelet", content: upstreamBinary},
			{dst: "/lib/systemd/system/kubelet.service", content: kubeletUnit},
			{dst: "/etc/default/kubelet", content: kubeletEnv, typ: files.TypeConfigNoReplace},
		})
		kubeadm := upstreamPackage(t, "deb", "kubeadm", "1.13.12", "00", []upstreamFile{
			{dst: "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf", content: "[Service]\nEnvironmentFile=-/etc/default/kubelet\n"},
		})
		root := t.TempDir()
		dpkgRoot(t, root)
		mustPM(t, "dpkg", "--root", root, "-i", kubelet, kubeadm)
		writeTestFile(t, filepath.Join(root, "etc/default/kubelet"), editedArgs)
		// --force-depends: the scratch root has no iptables, socat,
		// kubernetes-cni. No --force-conf*: a conffile prompt fails here.
		out, err := pm(t, nil, "dpkg", "--root", root, "--force-depends", "-i", ours[".deb"])
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("dpkg -i %s:\n%s", filepath.Base(ours[".deb"]), out)
		checkDropIn(t, root, "etc/default/kubelet", "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf")
		if v := mustPM(t, "dpkg-query", "--admindir", filepath.Join(root, "var/lib/dpkg"), "-W", "-f", "${Version}", "kubelet"); v != "1.13.12-1.nokmem" {
			t.Errorf("installed: %s", v)
		}
		if c := mustPM(t, "dpkg-query", "--admindir", filepath.Join(root, "var/lib/dpkg"), "-W", "-f", "${Conffiles}", "kubelet"); !strings.Contains(c, "/etc/default/kubelet") {
			t.Errorf("conffiles of kubelet: %s", c)
		}
	})
}

// Upstream's repository has a newer kubelet (1.13.13) that sorts above the
// nokmem one; the snippets the kubelet package ships keep dnf and apt on
// the nokmem build: exclude=kubelet in the [kubernetes] repo, and the apt
// pin.
func TestUpstreamRepositoryCannotSwapTheKubeletBack(t *testing.T) {
	d := t.TempDir()
	fakeArtifact(t, d, "kubelet", "v1.13.12", []byte("#!/bin/sh\necho Kubernetes v1.13.12\n"))
	paths, err := Build(d, "kubelet", "v1.13.12", "")
	if err != nil {
		t.Fatal(err)
	}
	ours := map[string]string{}
	for _, p := range paths {
		ours[filepath.Ext(p)] = p
	}
	repo := func(t *testing.T, pkgs ...string) string {
		t.Helper()
		dir := t.TempDir()
		for _, p := range pkgs {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			writeTestFile(t, filepath.Join(dir, filepath.Base(p)), string(b))
		}
		return dir
	}
	newer := []upstreamFile{{dst: "/usr/bin/kubelet", content: "#!/bin/sh\necho upstream v1.13.13\n"}}

	t.Run("dnf exclude", func(t *testing.T) {
		testenv.RequireTools(t, "dnf", "createrepo_c")
		upstream := repo(t, upstreamPackage(t, "rpm", "kubelet", "1.13.13", "0", newer))
		nokmem := repo(t, ours[".rpm"])
		for _, r := range []string{upstream, nokmem} {
			mustPM(t, "createrepo_c", "-q", r)
		}
		best := func(exclude string) string {
			t.Helper()
			reposDir := t.TempDir()
			writeTestFile(t, filepath.Join(reposDir, "kubernetes.repo"), "[kubernetes]\nname=Kubernetes\nbaseurl=file://"+upstream+"\ngpgcheck=0\n"+exclude)
			writeTestFile(t, filepath.Join(reposDir, "nokmem.repo"), "[nokmem]\nname=nokmem\nbaseurl=file://"+nokmem+"\ngpgcheck=0\n")
			out := mustPM(t, "dnf", "-q", "--installroot", t.TempDir(), "--releasever", "7", "--setopt=reposdir="+reposDir, "--setopt=cachedir="+t.TempDir(),
				"repoquery", "--latest-limit", "1", "--qf", "%{name}-%{version}-%{release}", "kubelet")
			return strings.TrimSpace(out)
		}
		if got := best(""); got != "kubelet-1.13.13-0" {
			t.Errorf("without the exclude dnf picks %q; the premise (upstream sorts above) is wrong", got)
		}
		got := best("exclude=kubelet\n")
		if got != "kubelet-1.13.12-1.nokmem.el7" {
			t.Errorf("with exclude=kubelet in [kubernetes] dnf picks %q", got)
		}
		t.Logf("dnf repoquery --latest-limit 1 kubelet: %s without the exclude, %s with exclude=kubelet", best(""), got)
	})

	t.Run("apt pin", func(t *testing.T) {
		testenv.RequireTools(t, "apt-get", "apt-cache", "dpkg-scanpackages")
		upstream := repo(t, upstreamPackage(t, "deb", "kubelet", "1.13.13", "00", newer))
		nokmem := repo(t, ours[".deb"])
		for _, r := range []string{upstream, nokmem} {
			// run merges stderr, where dpkg-scanpackages reports.
			var idx []string
			for _, l := range strings.SplitAfter(mustPM(t, "dpkg-scanpackages", "-m", r, "/dev/null"), "\n") {
				if !strings.HasPrefix(l, "dpkg-scanpackages:") {
					// Filenames relative to the flat repository.
					idx = append(idx, strings.Replace(l, "Filename: "+r+"/", "Filename: ./", 1))
				}
			}
			writeTestFile(t, filepath.Join(r, "Packages"), strings.Join(idx, ""))
		}
		candidate := func(pin bool) string {
			t.Helper()
			root := t.TempDir()
			for _, dir := range []string{"etc/apt/preferences.d", "etc/apt/apt.conf.d", "var/lib/apt/lists/partial", "var/cache/apt/archives/partial", "var/lib/dpkg"} {
				os.MkdirAll(filepath.Join(root, dir), 0o755)
			}
			writeTestFile(t, filepath.Join(root, "var/lib/dpkg/status"), "")
			writeTestFile(t, filepath.Join(root, "etc/apt/sources.list"), "deb [trusted=yes] file:"+upstream+" ./\ndeb [trusted=yes] file:"+nokmem+" ./\n")
			if pin {
				b, err := os.ReadFile(filepath.Join(d, "pin"))
				if err != nil {
					t.Fatal(err)
				}
				writeTestFile(t, filepath.Join(root, "etc/apt/preferences.d/kubelet-nokmem"), string(b))
			}
			opts := []string{"-o", "Dir=" + root, "-o", "Dir::State::status=" + filepath.Join(root, "var/lib/dpkg/status"), "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root"}
			mustPM(t, append(append([]string{"apt-get", "-q"}, opts...), "update")...)
			out := mustPM(t, append(append([]string{"apt-cache"}, opts...), "policy", "kubelet")...)
			for _, l := range strings.Split(out, "\n") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Candidate: "); ok {
					return v
				}
			}
			t.Fatalf("apt-cache policy kubelet:\n%s", out)
			return ""
		}
		// The pin file as the package ships it.
		pin := extractFromDeb(t, ours[".deb"], KubeletGuideDir+"/apt-preferences")
		writeTestFile(t, filepath.Join(d, "pin"), pin)
		if got := candidate(false); got != "1.13.13-00" {
			t.Errorf("without the pin apt's candidate is %q; the premise is wrong", got)
		}
		got := candidate(true)
		if got != "1.13.12-1.nokmem" {
			t.Errorf("with the shipped pin apt's candidate is %q", got)
		}
		t.Logf("apt-cache policy kubelet: candidate %s without the pin, %s with %s", candidate(false), got, KubeletGuideDir+"/apt-preferences")
	})
}

// extractFromDeb returns one file of a .deb's payload.
func extractFromDeb(t *testing.T, deb, path string) string {
	t.Helper()
	dir := t.TempDir()
	mustPM(t, "dpkg-deb", "-x", deb, dir)
	b, err := os.ReadFile(filepath.Join(dir, path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func checkDropIn(t *testing.T, root, envFile, kubeadmDropIn string) {
	t.Helper()
	if b, err := os.ReadFile(filepath.Join(root, envFile)); err != nil || string(b) != editedArgs {
		t.Errorf("/%s after the upgrade: %q (%v), want the edit %q", envFile, b, err, editedArgs)
	} else {
		t.Logf("/%s after the upgrade: %s", envFile, strings.TrimSpace(string(b)))
	}
	if l := leftovers(root); len(l) > 0 {
		t.Errorf("set aside: %v", l)
	}
	if fi, err := os.Stat(filepath.Join(root, "etc/kubernetes/manifests")); err != nil || !fi.IsDir() {
		t.Errorf("/etc/kubernetes/manifests: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, kubeadmDropIn)); err != nil {
		t.Errorf("kubeadm's drop-in: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "usr/bin/kubelet")); !strings.Contains(string(b), "echo Kubernetes v1.13.12") {
		t.Errorf("/usr/bin/kubelet is not the nokmem one: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(root, KubeletGuideDir, "README")); !strings.Contains(string(b), "exclude=kubelet") {
		t.Error("the guidance is not installed")
	}
}

// shellRoot copies /bin/sh (and sha256sum) with the libraries they load
// into root: rpm and dpkg run maintainer scripts chrooted into --root.
func shellRoot(t *testing.T, root string) {
	t.Helper()
	for _, prog := range []string{"/bin/sh", "/usr/bin/sha256sum"} {
		real, err := filepath.EvalSymlinks(prog)
		if err != nil {
			t.Fatal(err)
		}
		copyInto(t, root, real, prog)
		f, err := elf.Open(real)
		if err != nil {
			t.Fatal(err)
		}
		libs, _ := f.ImportedLibraries()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				b := make([]byte, p.Filesz)
				p.ReadAt(b, 0)
				interp := strings.TrimRight(string(b), "\x00")
				r, err := filepath.EvalSymlinks(interp)
				if err != nil {
					t.Fatal(err)
				}
				copyInto(t, root, r, interp)
			}
		}
		f.Close()
		for _, lib := range libs {
			for _, dir := range []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64"} {
				if r, err := filepath.EvalSymlinks(filepath.Join(dir, lib)); err == nil {
					copyInto(t, root, r, filepath.Join(dir, lib))
					break
				}
			}
		}
	}
	for _, d := range []string{"tmp", "var/tmp", "dev"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o1777); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mknod(filepath.Join(root, "dev/null"), syscall.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(root, "dev/null"), 0o666)
}

func copyInto(t *testing.T, root, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, dst)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// Removing runc-nokmem while docker's daemon.json still names it is
// refused with the rollback command; after that command (or with
// NOKMEM_FORCE_REMOVE=1) it goes; another runc line taking over the binary
// removes the old one without a fuss.
func TestRuncRemovalIsRefusedWhileARuntimeUsesIt(t *testing.T) {
	testenv.RequireRoot(t)
	d := t.TempDir()
	fakeArtifact(t, d, "runc", "v1.0.0-rc9", []byte("#!/bin/sh\necho runc rc9\n"))
	fakeArtifact(t, d, "runc", "v1.0.0-rc93", []byte("#!/bin/sh\necho runc rc93\n"))
	pkgs := map[string]string{}
	for _, v := range []string{"v1.0.0-rc9", "v1.0.0-rc93"} {
		paths, err := Build(d, "runc", v, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			pkgs[v+filepath.Ext(p)] = p
		}
	}
	configure := func(root string) string {
		t.Helper()
		daemon := filepath.Join(root, "etc/docker/daemon.json")
		if _, err := runtimecfg.Apply(runtimecfg.Docker, daemon, runtimecfg.Options{Default: true}); err != nil {
			t.Fatal(err)
		}
		return daemon
	}
	refused := func(t *testing.T, out string, err error, installed func() bool) {
		t.Helper()
		if err == nil {
			t.Fatalf("removed while docker names it:\n%s", out)
		}
		for _, want := range []string{"runc-nokmem-rc9 is NOT removed", "/etc/docker/daemon.json", "nokmem runtime docker --remove && systemctl reload docker", "NOKMEM_FORCE_REMOVE=1"} {
			if !strings.Contains(out, want) {
				t.Errorf("the refusal does not say %q:\n%s", want, out)
			}
		}
		if !installed() {
			t.Error("the package is gone after the refusal")
		}
		t.Logf("refused:\n%s", out)
	}

	t.Run("rpm", func(t *testing.T) {
		testenv.RequireTools(t, "rpm")
		root := t.TempDir()
		shellRoot(t, root)
		rpm := func(env []string, args ...string) (string, error) {
			return pm(t, env, append([]string{"rpm", "--root", root, "--nodeps"}, args...)...)
		}
		installed := func() bool { _, err := pm(t, nil, "rpm", "--root", root, "-q", "runc-nokmem-rc9"); return err == nil }
		install := func() {
			t.Helper()
			if out, err := rpm(nil, "-i", pkgs["v1.0.0-rc9.rpm"]); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		}
		install()
		daemon := configure(root)
		out, err := rpm(nil, "-e", "runc-nokmem-rc9")
		refused(t, out, err, installed)
		if _, err := runtimecfg.Apply(runtimecfg.Docker, daemon, runtimecfg.Options{Remove: true}); err != nil {
			t.Fatal(err)
		}
		if out, err := rpm(nil, "-e", "runc-nokmem-rc9"); err != nil || installed() {
			t.Fatalf("not removed after the rollback: %v\n%s", err, out)
		}

		install()
		configure(root)
		if out, err := rpm([]string{"NOKMEM_FORCE_REMOVE=1"}, "-e", "runc-nokmem-rc9"); err != nil || installed() {
			t.Fatalf("NOKMEM_FORCE_REMOVE=1 did not remove it: %v\n%s", err, out)
		}

		// yum swap runc-nokmem-rc9 runc-nokmem-rc93: the new line's binary
		// is in place when the old line's %preun runs.
		install()
		if out, err := rpm(nil, "-i", "--replacefiles", pkgs["v1.0.0-rc93.rpm"]); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if out, err := rpm(nil, "-e", "runc-nokmem-rc9"); err != nil {
			t.Fatalf("the old line was not removed after the new one took over: %v\n%s", err, out)
		}
		if b, _ := os.ReadFile(filepath.Join(root, "usr/bin/runc-nokmem")); !strings.Contains(string(b), "rc93") {
			t.Errorf("/usr/bin/runc-nokmem after the swap: %q", b)
		}
	})

	// The client an EL node runs: dnf refuses the removal and keeps the
	// package; dnf swap to another runc line goes through.
	t.Run("dnf", func(t *testing.T) {
		testenv.RequireTools(t, "dnf", "createrepo_c")
		repo := t.TempDir()
		for _, v := range []string{"v1.0.0-rc9.rpm", "v1.0.0-rc93.rpm"} {
			b, err := os.ReadFile(pkgs[v])
			if err != nil {
				t.Fatal(err)
			}
			writeTestFile(t, filepath.Join(repo, filepath.Base(pkgs[v])), string(b))
		}
		mustPM(t, "createrepo_c", "-q", repo)
		root, cache, reposDir := t.TempDir(), t.TempDir(), t.TempDir()
		shellRoot(t, root)
		dnf := func(args ...string) (string, error) {
			return pm(t, nil, append([]string{"dnf", "-y", "--installroot", root, "--releasever", "7", "--setopt=reposdir=" + reposDir,
				"--setopt=cachedir=" + cache, "--repofrompath=nokmem,file://" + repo, "--nogpgcheck"}, args...)...)
		}
		if out, err := dnf("install", "runc-nokmem-rc9"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		configure(root)
		out, err := dnf("remove", "runc-nokmem-rc9")
		refused(t, out, err, func() bool { _, err := pm(t, nil, "rpm", "--root", root, "-q", "runc-nokmem-rc9"); return err == nil })
		out, err = dnf("swap", "runc-nokmem-rc9", "runc-nokmem-rc93")
		if err != nil {
			t.Fatalf("dnf swap with docker configured: %v\n%s", err, out)
		}
		if q, _ := pm(t, nil, "rpm", "--root", root, "-qa"); strings.TrimSpace(q) != "runc-nokmem-rc93-1.0.0~rc93-1.nokmem.el7.x86_64" {
			t.Errorf("after dnf swap: %s", q)
		}
		t.Logf("dnf swap runc-nokmem-rc9 runc-nokmem-rc93, docker configured: passed; /usr/bin/runc-nokmem is rc93's")
	})

	t.Run("deb", func(t *testing.T) {
		testenv.RequireTools(t, "dpkg")
		root := t.TempDir()
		shellRoot(t, root)
		dpkgRoot(t, root)
		dpkg := func(env []string, args ...string) (string, error) {
			return pm(t, env, append([]string{"dpkg", "--root", root, "--force-depends"}, args...)...)
		}
		installed := func() bool {
			out, err := pm(t, nil, "dpkg-query", "--admindir", filepath.Join(root, "var/lib/dpkg"), "-W", "-f", "${Status}", "runc-nokmem-rc9")
			return err == nil && strings.Contains(out, "install ok installed")
		}
		install := func() {
			t.Helper()
			if out, err := dpkg(nil, "-i", pkgs["v1.0.0-rc9.deb"]); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		}
		install()
		daemon := configure(root)
		out, err := dpkg(nil, "--remove", "runc-nokmem-rc9")
		refused(t, out, err, installed)
		if _, err := runtimecfg.Apply(runtimecfg.Docker, daemon, runtimecfg.Options{Remove: true}); err != nil {
			t.Fatal(err)
		}
		if out, err := dpkg(nil, "--remove", "runc-nokmem-rc9"); err != nil || installed() {
			t.Fatalf("not removed after the rollback: %v\n%s", err, out)
		}

		install()
		configure(root)
		if out, err := dpkg([]string{"NOKMEM_FORCE_REMOVE=1"}, "--remove", "runc-nokmem-rc9"); err != nil || installed() {
			t.Fatalf("NOKMEM_FORCE_REMOVE=1 did not remove it: %v\n%s", err, out)
		}

		// containerd: a commented-out mention does not count, a runtime does.
		install()
		os.Remove(daemon)
		prerm := "/var/lib/dpkg/info/runc-nokmem-rc9.prerm"
		toml := filepath.Join(root, "etc/containerd/config.toml")
		writeTestFile(t, toml, "version = 2\n  # BinaryName = \"/usr/bin/runc-nokmem\"\n")
		if out, err := pm(t, nil, "chroot", root, prerm, "remove"); err != nil {
			t.Errorf("a comment blocked the removal: %v\n%s", err, out)
		}
		if _, err := runtimecfg.Apply(runtimecfg.Containerd, toml, runtimecfg.Options{}); err != nil {
			t.Fatal(err)
		}
		out, err = pm(t, nil, "chroot", root, prerm, "remove")
		if err == nil || !strings.Contains(out, "/etc/containerd/config.toml") || !strings.Contains(out, "nokmem runtime containerd --remove && systemctl restart containerd") {
			t.Errorf("containerd's runtime did not block the removal: %v\n%s", err, out)
		}
		os.Remove(toml)

		// dpkg passes "remove in-favour" when another line replaces it.
		configure(root)
		if out, err := pm(t, nil, "chroot", root, "/var/lib/dpkg/info/runc-nokmem-rc9.prerm", "remove", "in-favour", "runc-nokmem-rc93", "1.0.0~rc93-1.nokmem"); err != nil {
			t.Errorf("prerm remove in-favour refused: %v\n%s", err, out)
		}
	})
}
