package packaging

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/testenv"
	"github.com/nokmem/nokmem/verify/target"
)

func TestPackageVersion(t *testing.T) {
	for in, want := range map[string]string{"v1.0.0-rc9": "1.0.0~rc9", "v1.13.12": "1.13.12", "v1.0.0-rc10": "1.0.0~rc10"} {
		if got := PackageVersion(in); got != want {
			t.Errorf("%s → %s, want %s", in, got, want)
		}
	}
}

// A kubelet artifact is packaged as a drop-in for upstream's kubelet.
func TestKubeletPackageIsADropIn(t *testing.T) {
	for _, tool := range []string{"rpm", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			if testenv.InCI() {
				t.Fatalf("CI=true but %s is missing", tool)
			}
			t.Skipf("needs %s", tool)
		}
	}
	d := t.TempDir()
	dir := dist.Dir(d, "kubelet", "v1.13.12")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "kubelet"), []byte("#!/bin/sh\necho Kubernetes v1.13.12\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "kmem-probe"), []byte("probe"), 0o755)
	os.WriteFile(filepath.Join(dir, dist.ReportFile), []byte(`{"passed": true, "target": {"target": "el7", "ok": true, "linkage": "static"}}`), 0o644)
	b, _ := json.Marshal(dist.Provenance{Project: "kubelet", Version: "v1.13.12", Verified: dist.VerifiedInfo{Passed: true},
		Source: dist.SourceInfo{CommitDate: time.Date(2019, 10, 15, 0, 0, 0, 0, time.UTC)}})
	os.WriteFile(filepath.Join(dir, dist.ProvenanceFile), b, 0o644)
	dist.WriteSums(dir)
	paths, err := Build(d, "kubelet", "v1.13.12", "")
	if err != nil {
		t.Fatal(err)
	}
	rpm := paths[0]
	if filepath.Base(rpm) != "kubelet-1.13.12-1.nokmem.el7.x86_64.rpm" {
		t.Fatalf("rpm name %s", rpm)
	}
	files, _ := exec.Command("rpm", "-qpl", rpm).Output()
	for _, want := range []string{"/usr/bin/kubelet", "/usr/lib/systemd/system/kubelet.service", "/usr/share/doc/kubelet/provenance.json"} {
		if !strings.Contains(string(files), want) {
			t.Errorf("rpm lacks %s:\n%s", want, files)
		}
	}
	if strings.Contains(string(files), "kmem-probe") {
		t.Error("the probe is not for nodes")
	}
	req, _ := exec.Command("rpm", "-qp", "--requires", rpm).Output()
	if !strings.Contains(string(req), "kubernetes-cni >= 0.7.5") || !strings.Contains(string(req), "conntrack") {
		t.Errorf("requires:\n%s", req)
	}
	ctl, _ := exec.Command("dpkg-deb", "-f", paths[1], "Package", "Version", "Depends").Output()
	if !strings.Contains(string(ctl), "Package: kubelet\nVersion: 1.13.12-1.nokmem") || !strings.Contains(string(ctl), "kubernetes-cni (>= 0.7.5)") {
		t.Errorf("deb control:\n%s", ctl)
	}
}

// A static binary needs nothing from the node; a dynamic one declares the
// glibc of its newest imported symbol version and libseccomp if it links it.
func TestNeedsFollowsTheTargetGate(t *testing.T) {
	if rpm, deb := Needs(&target.Result{Linkage: "static"}); rpm != nil || deb != nil {
		t.Errorf("static binary declares %v %v", rpm, deb)
	}
	rpm, deb := Needs(&target.Result{Linkage: "dynamic", MaxGlibc: "GLIBC_2.14", Needed: []string{"libc.so.6", "libseccomp.so.2"}})
	if strings.Join(rpm, ",") != "glibc >= 2.14,libseccomp" || strings.Join(deb, ",") != "libc6 (>= 2.14),libseccomp2" {
		t.Errorf("dynamic binary declares %v %v", rpm, deb)
	}
}
