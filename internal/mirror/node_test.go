package mirror

// A real Debian node, end to end: debootstrap makes a minimal Debian root
// (its own apt, dpkg, dash and coreutils), which is then set up exactly as
// docs/shipping.md tells an administrator (the mirror's keyring in
// /usr/share/keyrings, its nokmem.sources in /etc/apt/sources.list.d) and
// driven with apt-get inside the root: install, pin, wire containerd,
// refused removal, rollback, removal. The root knows no repository but the
// signed mirror; kubelet's dependencies that minbase lacks are signed
// stand-in packages there (kubeletDeps), as in the dnf/apt scratch-root
// tests.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/nodetools"
	"github.com/nokmem/nokmem/internal/packaging"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/internal/signing"
	"github.com/nokmem/nokmem/internal/signing/signingtest"
	"github.com/nokmem/nokmem/internal/testenv"
)

// node runs commands inside a Debian root as its administrator would.
type node struct {
	t    *testing.T
	root string
}

func (n *node) run(args ...string) (string, error) {
	c := exec.Command("chroot", append([]string{n.root}, args...)...)
	c.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LC_ALL=C",
		"DEBIAN_FRONTEND=noninteractive"}
	out, err := c.CombinedOutput()
	return string(out), err
}

func (n *node) must(args ...string) string {
	n.t.Helper()
	out, err := n.run(args...)
	if err != nil {
		n.t.Fatalf("on the node: %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (n *node) path(p string) string { return filepath.Join(n.root, p) }

func TestDebianNodeInstallsPinsWiresAndRemoves(t *testing.T) {
	testenv.RequireRoot(t)
	needTools(t, "chroot", "createrepo_c", "dpkg-scanpackages", "go", "git")
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, ".git")); err != nil {
		t.Skip("not a git checkout: the node tool's version comes from the commit")
	}

	// What a release would publish: runc rc9 (built and verified by the
	// pipeline), kubelet, the node tool; plus the stand-ins, and an
	// upstream-versioned kubelet that the pin must keep away.
	d := verifiedDist(t)
	kubeletBin := kubeletArtifact(t, d)
	tool, err := (&nodetools.Builder{Runner: run.Local{}}).Publish(context.Background(), root, d, "el7")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := signing.Load(signingtest.KeyFile(t, "mirror"), "")
	if err != nil {
		t.Fatal(err)
	}
	opt := packaging.Options{Signer: signer}
	for _, p := range []string{"runc", "kubelet"} {
		v := map[string]string{"runc": "v1.0.0-rc9", "kubelet": kubeletTestVersion}[p]
		if _, err := packaging.BuildWith(d, p, v, opt); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := packaging.BuildTools(d, packaging.ToolsFrom(tool, "el7"), opt); err != nil {
		t.Fatal(err)
	}
	stubs := map[string]bool{}
	for name, version := range kubeletDeps["deb"] {
		stubs[depStub(t, packaging.Dir(d), "deb", name, version, signer)] = true
	}
	stubs[depStub(t, packaging.Dir(d), "deb", "kubelet", "1.13.13", signer)] = true

	n := &node{t: t, root: testenv.DebianRoot(t)}
	check := admit(d)
	if _, err := (&Publisher{Runner: run.Local{}, Signer: signer, URL: "file:///srv/nokmem", Admit: func(p string) error {
		if stubs[p] {
			return nil
		}
		return check(p)
	}}).Publish(context.Background(), packaging.Dir(d), n.path("srv/nokmem")); err != nil {
		t.Fatal(err)
	}

	// docs/shipping.md, "On a node", with cp for curl.
	n.must("cp", "/srv/nokmem/nokmem.gpg", Keyring)
	n.must("cp", "/srv/nokmem/nokmem.sources", "/etc/apt/sources.list.d/nokmem.sources")
	out := n.must("apt-get", "update")
	if !strings.Contains(out, "InRelease") || strings.Contains(out, "W:") {
		t.Fatalf("apt-get update on the node:\n%s", out)
	}
	t.Logf("apt-get update:\n%s", out)

	// runc: the virtual name resolves to the one line; the installed binary
	// is the verified one and starts in the node's userland.
	out = n.must("apt-get", "install", "-y", "runc-nokmem")
	if !strings.Contains(out, "Setting up runc-nokmem-rc9 (1.0.0~rc9-1.nokmem)") {
		t.Fatalf("apt-get install runc-nokmem:\n%s", out)
	}
	if got, want := fileSum(t, n.path("usr/bin/runc-nokmem")), fileSum(t, filepath.Join(dist.Dir(d, "runc", "v1.0.0-rc9"), "runc")); got != want {
		t.Errorf("installed /usr/bin/runc-nokmem has sha256 %s, the verified artifact %s", got, want)
	}
	if out := n.must("runc-nokmem", "--version"); !strings.Contains(out, "1.0.0-rc9") {
		t.Errorf("runc-nokmem --version on the node: %s", out)
	}

	// kubelet: the nokmem build, then the shipped pin keeps it against a
	// newer upstream-versioned kubelet in the same repository.
	out = n.must("apt-get", "install", "-y", "kubelet=1.13.12-1.nokmem")
	if !strings.Contains(out, "Setting up kubelet (1.13.12-1.nokmem)") {
		t.Fatalf("apt-get install kubelet:\n%s", out)
	}
	if got, want := fileSum(t, n.path("usr/bin/kubelet")), fileSum(t, kubeletBin); got != want {
		t.Errorf("installed /usr/bin/kubelet has sha256 %s, the verified artifact %s", got, want)
	}
	for _, f := range []string{"etc/default/kubelet", "lib/systemd/system/kubelet.service", "etc/kubernetes/manifests"} {
		if _, err := os.Stat(n.path(f)); err != nil {
			t.Errorf("kubelet package on the node: %v", err)
		}
	}
	if out := n.must("apt-get", "-s", "upgrade"); !strings.Contains(out, "Inst kubelet [1.13.12-1.nokmem] (1.13.13-1") {
		t.Fatalf("without the pin, upgrade should move kubelet to the upstream-versioned 1.13.13 (the control):\n%s", out)
	}
	n.must("cp", packaging.KubeletGuideDir+"/apt-preferences", "/etc/apt/preferences.d/kubelet-nokmem")
	out = n.must("apt-get", "-s", "upgrade")
	if strings.Contains(out, "Inst kubelet") {
		t.Errorf("with the shipped pin, upgrade still replaces the nokmem kubelet:\n%s", out)
	}
	if policy := n.must("apt-cache", "policy", "kubelet"); !strings.Contains(policy, "Candidate: 1.13.12-1.nokmem") {
		t.Errorf("apt-cache policy kubelet with the pin:\n%s", policy)
	}

	// nokmem-tools wires containerd to runc-nokmem; removing runc-nokmem is
	// then refused with the way back, which works; then removal succeeds.
	n.must("apt-get", "install", "-y", "nokmem-tools")
	os.MkdirAll(n.path("etc/containerd"), 0o755)
	userConfig := "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"registry.example.com/pause:3.6\"\n"
	os.WriteFile(n.path("etc/containerd/config.toml"), []byte(userConfig), 0o644)
	n.must("nokmem", "runtime", "containerd")
	if b, _ := os.ReadFile(n.path("etc/containerd/config.toml")); !strings.Contains(string(b), "/usr/bin/runc-nokmem") || !strings.Contains(string(b), "registry.example.com/pause:3.6") {
		t.Fatalf("nokmem runtime containerd on the node wrote:\n%s", b)
	}
	out, err = n.run("apt-get", "remove", "-y", "runc-nokmem-rc9")
	if err == nil || !strings.Contains(out, "runc-nokmem-rc9 is NOT removed") || !strings.Contains(out, "nokmem runtime containerd --remove") {
		t.Fatalf("apt-get remove runc-nokmem-rc9 while containerd runs containers with it: %v\n%s", err, out)
	}
	t.Logf("refused: %s", lastLines(out, "NOT removed"))
	if _, err := os.Stat(n.path("usr/bin/runc-nokmem")); err != nil {
		t.Fatalf("the refused removal removed the binary: %v", err)
	}
	if st := n.must("dpkg-query", "-W", "-f", "${Status}", "runc-nokmem-rc9"); st != "install ok installed" {
		t.Errorf("after the refused removal dpkg says %q", st)
	}
	n.must("nokmem", "runtime", "containerd", "--remove")
	out = n.must("apt-get", "remove", "-y", "runc-nokmem-rc9")
	if _, err := os.Stat(n.path("usr/bin/runc-nokmem")); !os.IsNotExist(err) {
		t.Errorf("runc-nokmem-rc9 removed, but /usr/bin/runc-nokmem: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(n.path("etc/containerd/config.toml")); !strings.Contains(string(b), "registry.example.com/pause:3.6") || strings.Contains(string(b), "runc-nokmem") {
		t.Errorf("containerd config after the rollback:\n%s", b)
	}
}
