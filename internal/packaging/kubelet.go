package packaging

// What makes the kubelet package a drop-in for upstream's: it owns the
// files upstream's kubelet package owns (kubernetes/release rpm/kubelet.spec
// of the 1.13 line: /usr/bin/kubelet, the unit, /etc/kubernetes/manifests/,
// %config(noreplace) /etc/sysconfig/kubelet; the deb: /etc/default/kubelet
// as a conffile), with the same default content, so that rpm -U and dpkg -i
// over upstream's keep an edited file as it is (no .rpmsave, no .rpmnew, no
// conffile prompt). It also ships what stops upstream's repository from
// swapping it back: its 1.13.13-0 sorts above 1.13.12-1.nokmem.

import (
	"fmt"
	"os"
	"path/filepath"
)

// KubeletGuideDir holds the guidance and the ready snippets.
const KubeletGuideDir = "/usr/share/kubelet-nokmem"

// kubeletEnv is upstream's default /etc/sysconfig/kubelet and
// /etc/default/kubelet, byte for byte: rpm and dpkg then see the new
// package's file as unchanged and leave an edited one alone.
const kubeletEnv = "KUBELET_EXTRA_ARGS=\n"

const kubeletGuide = `kubelet %[1]s, nokmem build: keeping it installed
=================================================

This kubelet replaces the upstream kubelet package: the same name and files,
and your /etc/sysconfig/kubelet (RPM) or /etc/default/kubelet (DEB) is kept
as you edited it. Check the binary with nokmem's verifier (nokmem-tools); a
kubelet alone has only static evidence (the dynamic check of its build is in
/usr/share/doc/kubelet/verify.json):
    nokmem verify -allow-static-only kubelet /usr/bin/kubelet

The upstream repository has newer kubelet builds that still leak kernel
memory, and they sort above this one (1.13.13-0 > 1.13.12-1.nokmem): a plain
"yum update" or "apt-get upgrade" would swap it back. On every node, do one
of these.

yum (EL7): exclude kubelet from the upstream repository, so that only the
nokmem repository updates it:
    yum-config-manager --save --setopt=kubernetes.exclude=kubelet
  (yum-utils; or add "exclude=kubelet" to the [kubernetes] section of
  /etc/yum.repos.d/kubernetes.repo by hand; the section name is the repo id).
dnf: dnf config-manager --save --setopt=kubernetes.excludepkgs=kubelet

Or lock this exact build (it then also stays put when nokmem publishes a
newer one):
    yum (yum-plugin-versionlock):
      cat %[2]s/yum-versionlock.list >> /etc/yum/pluginconf.d/versionlock.list
    dnf (python3-dnf-plugin-versionlock):
      cat %[2]s/dnf-versionlock.list >> /etc/dnf/plugins/versionlock.list

apt: prefer any nokmem build of kubelet over upstream's, newer ones included:
    cp %[2]s/apt-preferences /etc/apt/preferences.d/kubelet-nokmem
  or hold this exact version: apt-mark hold kubelet (apt-mark unhold to update).

Back to upstream's kubelet: undo the exclude, lock, pin or hold, then install
upstream's version explicitly (yum downgrade/install kubelet-VERSION, or
apt-get install kubelet=VERSION).
`

// kubeletFiles are the drop-in's configuration files and guidance;
// rpmRelease is the full RPM release (with its dist tag), for the
// version locks.
func kubeletFiles(tmp, version, rpmRelease, debRelease string) ([]file, error) {
	v := PackageVersion(version)
	texts := map[string]string{
		"kubelet.env": kubeletEnv,
		"README":      fmt.Sprintf(kubeletGuide, version, KubeletGuideDir),
		// yum-plugin-versionlock: EPOCH:NAME-VERSION-RELEASE.ARCH.
		"yum-versionlock.list": fmt.Sprintf("0:kubelet-%s-%s.*\n", v, rpmRelease),
		// dnf versionlock: NAME-EPOCH:VERSION-RELEASE.ARCH.
		"dnf-versionlock.list": fmt.Sprintf("kubelet-0:%s-%s.*\n", v, rpmRelease),
		"apt-preferences": "Explanation: prefer nokmem builds of kubelet (" + v + "-" + debRelease + " and later) over upstream's\n" +
			"Explanation: install as /etc/apt/preferences.d/kubelet-nokmem\nPackage: kubelet\nPin: version *nokmem*\nPin-Priority: 1001\n",
	}
	src := map[string]string{}
	for name, content := range texts {
		p := filepath.Join(tmp, "kubelet-"+name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return nil, err
		}
		src[name] = p
	}
	fs := []file{
		{Src: src["kubelet.env"], Dst: "/etc/sysconfig/kubelet", Packager: "rpm", Type: "config|noreplace", Mode: "0644"},
		{Src: src["kubelet.env"], Dst: "/etc/default/kubelet", Packager: "deb", Type: "config|noreplace", Mode: "0644"},
		{Dst: "/etc/kubernetes/manifests", Type: "dir", Mode: "0755"},
		{Src: src["README"], Dst: KubeletGuideDir + "/README", Mode: "0644"},
		{Src: src["yum-versionlock.list"], Dst: KubeletGuideDir + "/yum-versionlock.list", Packager: "rpm", Mode: "0644"},
		{Src: src["dnf-versionlock.list"], Dst: KubeletGuideDir + "/dnf-versionlock.list", Packager: "rpm", Mode: "0644"},
		{Src: src["apt-preferences"], Dst: KubeletGuideDir + "/apt-preferences", Packager: "deb", Mode: "0644"},
	}
	return fs, nil
}
