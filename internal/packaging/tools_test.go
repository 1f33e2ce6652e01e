package packaging

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nokmem/nokmem/internal/nodetools"
	"github.com/nokmem/nokmem/internal/packaging/packagingtest"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/internal/signing"
	"github.com/nokmem/nokmem/internal/signing/signingtest"
	"github.com/nokmem/nokmem/internal/testenv"
)

// buildTools builds the node tool from this checkout as the package target
// does, and packages it.
func buildTools(t *testing.T) (*nodetools.Binary, map[string]string) {
	t.Helper()
	testenv.RequireTools(t, "go", "git")
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, ".git")); err != nil {
		t.Skip("not a git checkout: the node tool's version comes from the commit")
	}
	d := t.TempDir()
	bin, err := (&nodetools.Builder{Runner: run.Local{}}).Publish(context.Background(), root, d, "el7")
	if err != nil {
		t.Fatal(err)
	}
	s := loadSigner(t)
	pub, err := s.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(t.TempDir(), "key.asc")
	os.WriteFile(key, pub, 0o644)
	paths, err := BuildTools(d, ToolsFrom(bin, "el7"), Options{Signer: s})
	if err != nil {
		t.Fatal(err)
	}
	pkgs := map[string]string{".key": key, "dist": d}
	for _, p := range paths {
		pkgs[filepath.Ext(p)] = p
	}
	return bin, pkgs
}

// nokmem-tools installs /usr/bin/nokmem, which runs on the node as
// installed (in a root holding nothing else) and wires docker there.
func TestToolsPackageInstallsAWorkingNodeTool(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "rpm", "dpkg", "chroot")
	bin, pkgs := buildTools(t)
	if want := "nokmem-tools-" + bin.Version + "-1.nokmem.el7.x86_64.rpm"; filepath.Base(pkgs[".rpm"]) != want {
		t.Errorf("rpm %s, want %s", filepath.Base(pkgs[".rpm"]), want)
	}
	for _, c := range []struct{ name, pkg string }{{"rpm", pkgs[".rpm"]}, {"deb", pkgs[".deb"]}} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			if c.name == "rpm" {
				mustPM(t, "rpm", "--root", root, "-i", c.pkg)
			} else {
				dpkgRoot(t, root)
				mustPM(t, "dpkg", "--root", root, "-i", c.pkg)
			}
			if b, err := os.ReadFile(filepath.Join(root, "usr/share/doc/nokmem-tools/README")); err != nil || !strings.Contains(string(b), "nokmem runtime containerd") {
				t.Errorf("README: %v", err)
			}
			out := mustPM(t, "chroot", root, "/usr/bin/nokmem", "version")
			if !strings.Contains(out, bin.Commit) {
				t.Errorf("nokmem version in the installed root: %s", out)
			}
			out = mustPM(t, "chroot", root, "/usr/bin/nokmem", "runtime", "docker")
			b, err := os.ReadFile(filepath.Join(root, "etc/docker/daemon.json"))
			if err != nil || !strings.Contains(string(b), `"path": "/usr/bin/runc-nokmem"`) {
				t.Errorf("nokmem runtime docker in the installed root wrote %q (%v):\n%s", b, err, out)
			}
			t.Logf("installed %s; chroot nokmem version: %s", filepath.Base(c.pkg), strings.TrimSpace(mustPM(t, "chroot", root, "/usr/bin/nokmem", "version")))
		})
	}
	if _, err := exec.LookPath("lintian"); err == nil {
		out, _ := exec.Command("lintian", "--no-cfg", "--pedantic", "--allow-root", "--tag-display-limit", "0", pkgs[".deb"]).CombinedOutput()
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) >= 3 && len(l) > 2 && l[1] == ':' && strings.Contains("EW", l[:1]) && !slices.Contains(lintianAccepted, f[2]) {
				t.Errorf("lintian: %s", l)
			}
		}
	}
	if _, err := exec.LookPath("rpmlint"); err == nil {
		mustPM(t, "rpm", "--import", pkgs[".key"]) // rpmlint checks the signature against ~/.rpmdb (a temporary HOME)
		cfg := filepath.Join(t.TempDir(), "rpmlint.toml")
		os.WriteFile(cfg, []byte("ValidLicenses = [\"ASL 2.0\"]\n"), 0o644)
		out, _ := exec.Command("rpmlint", "--config", cfg, pkgs[".rpm"]).CombinedOutput()
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) >= 3 && strings.HasSuffix(f[0], ":") && (f[1] == "E:" || f[1] == "W:") && !slices.Contains(rpmlintAccepted, f[2]) {
				t.Errorf("rpmlint: %s", l)
			}
		}
	}
}

// Every nokmem command the bundled READMEs and guidance name is one the
// nokmem-tools package's binary knows; the old nokmem-verify is gone.
func TestBundledDocsNameOnlyShippedCommands(t *testing.T) {
	_, pkgs := buildTools(t)
	dir := t.TempDir()
	mustPM(t, "dpkg-deb", "-x", pkgs[".deb"], dir)
	help := mustPM(t, filepath.Join(dir, "usr/bin/nokmem"), "help")
	docs := map[string]string{"runc README": runtimeReadme, "kubelet README": kubeletGuide, "nokmem-tools README": toolsReadme,
		"containerd snippet": runtimeFiles["containerd-nokmem.toml"]}
	cmdRE := regexp.MustCompile(`\bnokmem (verify|version|runtime (containerd|docker))\b`)
	for name, text := range docs {
		if strings.Contains(text, "nokmem-verify") {
			t.Errorf("%s names nokmem-verify, which no package ships", name)
		}
		for _, m := range cmdRE.FindAllString(text, -1) {
			if !strings.Contains(help, m) {
				t.Errorf("%s names %q, which nokmem help does not list:\n%s", name, m, help)
			}
		}
	}
	if n := len(cmdRE.FindAllString(runtimeReadme, -1)); n < 5 {
		t.Errorf("the runc README names %d nokmem commands", n)
	}
}

// A mirror or release admits the nokmem-tools packages of the published,
// gated node tool, and nothing else by that name.
func TestToolsPackagesAreAdmittedOnlyWithTheirGatedBinary(t *testing.T) {
	bin, pkgs := buildTools(t)
	arts, skipped := LoadArtifacts(pkgs["dist"])
	if len(skipped) > 0 {
		t.Errorf("skipped: %v", skipped)
	}
	for _, ext := range []string{".rpm", ".deb"} {
		art, err := arts.Check(pkgs[ext])
		if err != nil || art.Package != ToolsPackage || art.SHA256 != bin.SHA256 {
			t.Errorf("%s: %+v %v", filepath.Base(pkgs[ext]), art, err)
		}
	}
	// package again: the same bytes, or the same package and a newer
	// signature, keep what is there.
	before := map[string][]byte{}
	for _, ext := range []string{".rpm", ".deb"} {
		before[ext], _ = os.ReadFile(pkgs[ext])
	}
	if _, err := BuildTools(pkgs["dist"], ToolsFrom(bin, "el7"), Options{Signer: loadSigner(t)}); err != nil {
		t.Fatal(err)
	}
	for _, ext := range []string{".rpm", ".deb"} {
		if b, _ := os.ReadFile(pkgs[ext]); !bytes.Equal(b, before[ext]) {
			t.Errorf("%s changed on a second package run", filepath.Base(pkgs[ext]))
		}
	}
	stray := packagingtest.Stray(t, t.TempDir(), "deb", ToolsPackage, bin.Version, ToolsBinary, []byte("#!/bin/sh\necho not nokmem\n"))
	if _, err := arts.Check(stray); err == nil {
		t.Error("a nokmem-tools package with other bytes was admitted")
	}
}

func loadSigner(t *testing.T) *signing.Signer {
	t.Helper()
	s, err := signing.Load(signingtest.KeyFile(t, "packager"), "")
	if err != nil {
		t.Fatal(err)
	}
	return s
}
