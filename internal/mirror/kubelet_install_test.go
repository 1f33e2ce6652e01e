package mirror

// The nokmem kubelet package installs from the signed mirror with the real
// clients: dnf --installroot with the mirror's own nokmem.repo (gpgcheck=1,
// repo_gpgcheck=1), and apt with signed-by (no trusted=yes). A scratch root
// has none of kubelet's dependencies, so the mirror also carries empty,
// signed stub packages of those names.

import (
	"context"
	"encoding/json"
	"github.com/nokmem/nokmem/internal/packaging/packagingtest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/files"

	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/packaging"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/internal/signing"
	"github.com/nokmem/nokmem/internal/signing/signingtest"
)

const kubeletTestVersion = "v1.13.12"

// kubeletArtifact writes a verified kubelet artifact into the dist root d,
// in the layout packaging's own tests use (binary, passing verify.json,
// provenance.json, SHA256SUMS), and returns the binary's path.
func kubeletArtifact(t *testing.T, d string) string {
	t.Helper()
	dir := dist.Dir(d, "kubelet", kubeletTestVersion)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "kubelet")
	os.WriteFile(bin, []byte("#!/bin/sh\necho Kubernetes "+kubeletTestVersion+" nokmem\n"), 0o755)
	os.WriteFile(filepath.Join(dir, dist.ReportFile), []byte(`{"passed": true, "verdict": "nokmem", "target": {"target": "el7", "ok": true, "linkage": "static"}}`), 0o644)
	prov := dist.Provenance{Project: "kubelet", Version: kubeletTestVersion, Strategy: "tag", Verified: dist.VerifiedInfo{Passed: true, Verdict: "nokmem"},
		Build:  dist.BuildInfo{Tags: []string{"nokmem"}},
		Source: dist.SourceInfo{URL: "https://github.com/kubernetes/kubernetes.git", Tag: kubeletTestVersion, Commit: "a8b52209ee172232b6db7a6e0ce2adc77458829f", CommitDate: time.Date(2019, 10, 15, 0, 0, 0, 0, time.UTC)}}
	b, _ := json.Marshal(prov)
	os.WriteFile(filepath.Join(dir, dist.ProvenanceFile), b, 0o644)
	if err := dist.WriteSums(dir); err != nil {
		t.Fatal(err)
	}
	return bin
}

// kubeletDeps are the packages kubelet depends on (packaging.BuildWith),
// at versions that satisfy its version constraints.
var kubeletDeps = map[string]map[string]string{
	"rpm": {"iptables": "1.4.21", "kubernetes-cni": "0.8.7", "socat": "1.7.3.2", "util-linux": "2.23.2", "ethtool": "4.8", "iproute": "4.11.0", "ebtables": "2.0.10", "conntrack": "1.4.4"},
	"deb": {"iptables": "1.8.7", "kubernetes-cni": "0.8.7", "iproute2": "5.10.0", "socat": "1.7.4.1", "util-linux": "2.36.1", "mount": "2.36.1", "ebtables": "2.0.11", "ethtool": "5.9", "conntrack": "1.4.6"},
}

// depStub writes an empty package (a README only) named name at version
// into dir; RPMs are signed with the mirror's key.
func depStub(t *testing.T, dir, format, name, version string, signer *signing.Signer) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "README")
	os.WriteFile(src, []byte("empty stand-in for "+name+" in a test scratch root\n"), 0o644)
	info := nfpm.WithDefaults(&nfpm.Info{Name: name, Arch: "amd64", Platform: "linux", Version: version, Release: "1",
		Maintainer: "nokmem tests <tests@example.com>", Description: "test stub of " + name,
		Overridables: nfpm.Overridables{Contents: files.Contents{{Source: src, Destination: "/usr/share/doc/" + name + "-stub/README", FileInfo: &files.ContentFileInfo{Mode: 0o644}}}}})
	if format == "rpm" {
		info.RPM.Signature.SignFn = signer.SignBinary
	}
	return packagingtest.Write(t, dir, format, info)
}

func TestKubeletInstallsFromSignedMirror(t *testing.T) {
	needTools(t, "createrepo_c", "dpkg-scanpackages", "dnf", "apt-get", "rpm", "gpg")
	d := filepath.Join(t.TempDir(), "dist")
	bin := kubeletArtifact(t, d)
	want := fileSum(t, bin)
	signer, err := signing.Load(signingtest.KeyFile(t, "mirror"), "")
	if err != nil {
		t.Fatal(err)
	}
	pkgs, err := packaging.BuildWith(d, "kubelet", kubeletTestVersion, packaging.Options{Signer: signer})
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
	if filepath.Base(rpmPath) != "kubelet-1.13.12-1.nokmem.el7.x86_64.rpm" || filepath.Base(debPath) != "kubelet_1.13.12-1.nokmem_amd64.deb" {
		t.Fatalf("kubelet packages: %v", pkgs)
	}
	t.Logf("kubelet requires:\n%s", sh(t, "rpm", "-qpR", "--nosignature", rpmPath))

	// The stubs go through the same publish as the kubelet packages; the
	// package check admits them by path, everything else as publish does.
	stubs := map[string]bool{}
	for format, deps := range kubeletDeps {
		for name, version := range deps {
			stubs[depStub(t, packaging.Dir(d), format, name, version, signer)] = true
		}
	}
	check := admit(d)
	m := filepath.Join(t.TempDir(), "mirror")
	res, err := (&Publisher{Runner: run.Local{}, Signer: signer, Admit: func(p string) error {
		if stubs[p] {
			return nil
		}
		return check(p)
	}}).Publish(context.Background(), packaging.Dir(d), m)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Added) != 2+len(stubs) || len(res.Refused) != 0 || res.Fingerprint != signer.Fingerprint() {
		t.Fatalf("publish: %+v", res)
	}

	t.Run("dnf", func(t *testing.T) {
		root, repos := t.TempDir(), t.TempDir()
		repo, err := os.ReadFile(filepath.Join(m, "nokmem.repo"))
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []string{"gpgcheck=1\n", "repo_gpgcheck=1\n", "gpgkey=file://" + m + "/nokmem.asc\n"} {
			if !strings.Contains(string(repo), w) {
				t.Fatalf("nokmem.repo lacks %q:\n%s", w, repo)
			}
		}
		os.WriteFile(filepath.Join(repos, "nokmem.repo"), repo, 0o644)
		conf := filepath.Join(repos, "dnf.conf")
		os.WriteFile(conf, []byte("[main]\n"), 0o644)
		args := []string{"-y", "--config=" + conf, "--installroot=" + root, "--releasever=7", "--setopt=reposdir=" + repos,
			"--setopt=install_weak_deps=False", "--noplugins", "--setopt=gpgcheck=1", "--setopt=repo_gpgcheck=1", "install", "kubelet"}
		t.Logf("dnf %s", strings.Join(args, " "))
		out, err := exec.Command("dnf", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("dnf install kubelet: %v\n%s", err, out)
		}
		t.Logf("dnf:\n%s", out)
		if !strings.Contains(string(out), "Key imported successfully") || !strings.Contains(string(out), "kubelet-1.13.12-1.nokmem.el7.x86_64") {
			t.Errorf("dnf output:\n%s", out)
		}
		if q := strings.TrimSpace(sh(t, "rpm", "--root", root, "-q", "kubelet")); q != "kubelet-1.13.12-1.nokmem.el7.x86_64" {
			t.Errorf("rpm -q kubelet: %s", q)
		}
		if sum, _ := dist.FileSHA256(filepath.Join(root, "usr/bin/kubelet")); sum != want {
			t.Errorf("installed /usr/bin/kubelet has sha256 %q, the verified artifact %s", sum, want)
		}
		if sig := sh(t, "rpm", "--root", root, "-q", "--qf", "%{SIGPGP:pgpsig}", "kubelet"); !strings.Contains(sig, "RSA/SHA256") || !strings.HasSuffix(strings.ToUpper(sig), signer.Fingerprint()[24:]) {
			t.Errorf("installed kubelet signature: %s", sig)
		}
		t.Logf("rpm -q kubelet: %s; /usr/bin/kubelet sha256 %s", strings.TrimSpace(sh(t, "rpm", "--root", root, "-q", "kubelet")), want)
	})

	t.Run("apt", func(t *testing.T) {
		a := newAptRoot(t, m)
		if out, err := a.run("update"); err != nil || !strings.Contains(out, "InRelease") {
			t.Fatalf("apt-get update: %v\n%s", err, out)
		} else {
			t.Logf("apt-get update:\n%s", out)
		}
		out, err := a.run("install", "-y", "--download-only", "kubelet")
		if err != nil || !strings.Contains(out, "Download complete") {
			t.Fatalf("apt-get install --download-only kubelet: %v\n%s", err, out)
		}
		t.Logf("apt-get install -y --download-only kubelet:\n%s", out)
		// file: sources are used in place, not copied to the archives:
		// fetch the package itself, as apt does for a file: URI.
		if out, err := a.run("download", "kubelet"); err != nil {
			t.Fatalf("apt-get download kubelet: %v\n%s", err, out)
		} else {
			t.Logf("apt-get download kubelet:\n%s", out)
		}
		got := filepath.Join(a.dir, "download", filepath.Base(debPath))
		c, err := packaging.ReadPackage(got)
		if err != nil {
			t.Fatalf("apt did not fetch %s: %v", filepath.Base(debPath), err)
		}
		if c.Name != "kubelet" || c.Version != "1.13.12" {
			t.Errorf("fetched %s %s", c.Name, c.Version)
		}
		if c.Files["/usr/bin/kubelet"] != want {
			t.Errorf("the kubelet apt fetched has /usr/bin/kubelet sha256 %q, the verified artifact %s", c.Files["/usr/bin/kubelet"], want)
		}
		t.Logf("apt fetched %s: /usr/bin/kubelet sha256 %s", filepath.Base(got), c.Files["/usr/bin/kubelet"])
	})
}
