package pipeline

// Opt-in tests against real upstream runc. They need a full local clone of
// runc (with tags) named by NOKMEM_TEST_RUNC_REPO, and read nothing else
// from it than git does; nothing from it is committed.
//
//	NOKMEM_TEST_RUNC_REPO=/path/to/runc.git go test -run Upstream -v ./internal/pipeline

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nokmem/nokmem/internal/build"
	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/fixture"
	"github.com/nokmem/nokmem/internal/kube"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/verify"
	"github.com/nokmem/nokmem/verify/target"
)

func upstreamRunc(t *testing.T) string {
	r := os.Getenv("NOKMEM_TEST_RUNC_REPO")
	if r == "" {
		t.Skip("set NOKMEM_TEST_RUNC_REPO to a full clone of upstream runc to run this test")
	}
	return r
}

// TestUpstreamRuncBuilds builds real runc releases statically for el7,
// with each toolchain named in NOKMEM_TEST_TOOLCHAINS (default "host era"),
// and logs one table row per build: the evidence behind each release's
// default toolchain in matrix/runc.yaml. NOKMEM_TEST_REPRO=1 also rebuilds
// each from scratch and requires the same bytes.
func TestUpstreamRuncBuilds(t *testing.T) {
	src := upstreamRunc(t)
	versions := strings.Fields(os.Getenv("NOKMEM_TEST_RUNC_VERSIONS"))
	if len(versions) == 0 {
		versions = []string{"v1.0.0-rc2", "v1.0.0-rc3", "v1.0.0-rc4", "v1.0.0-rc5", "v1.0.0-rc6", "v1.0.0-rc7", "v1.0.0-rc8",
			"v1.0.0-rc9", "v1.0.0-rc10", "v1.0.0-rc91", "v1.0.0-rc92", "v1.0.0-rc93"}
	}
	toolchains := strings.Fields(os.Getenv("NOKMEM_TEST_TOOLCHAINS"))
	if len(toolchains) == 0 {
		toolchains = []string{build.SourceHost, build.SourceEra}
	}
	cache := t.TempDir()
	var table []string
	for _, tcName := range toolchains {
		for _, v := range versions {
			t.Run(tcName+"/"+v, func(t *testing.T) {
				c := &Config{RepoURL: src, CacheDir: cache, DistDir: filepath.Join(t.TempDir(), "dist"), GoToolchain: tcName, Target: "el7",
					MatrixDir: "../../matrix", PatchesDir: "../../patches", Mode: build.ModeHost, Runner: run.Local{}, Verifier: DefaultVerifier{}}
				res, err := BuildRunc(context.Background(), c, v)
				if err != nil {
					table = append(table, fmt.Sprintf("| %s | %s | FAILED: %s |", v, tcName, firstLine(err.Error())))
					t.Fatal(err)
				}
				var rep verify.Report
				var prov dist.Provenance
				dist.ReadJSON(res.Dir, dist.ReportFile, &rep)
				dist.ReadJSON(res.Dir, dist.ProvenanceFile, &prov)
				if rep.Target == nil || rep.Target.Linkage != "static" || !rep.Target.OK || rep.Target.EmptyRoot == nil || rep.Target.EmptyRoot.Status != "ok" {
					t.Fatalf("not a self-contained el7 binary: %+v", rep.Target)
				}
				if prov.Build.Target != "el7" || prov.Build.GOAMD64 != "v1" || prov.Build.Cgo.Libseccomp == "" || prov.Build.GoUsed == "" {
					t.Fatalf("provenance lacks target, GOAMD64, libseccomp or Go: %+v", prov.Build)
				}
				row := fmt.Sprintf("| %s | %s (%s) | %s, %s | %s | %s | %q | %.12s |", v, tcName, prov.Build.GoUsed, rep.Target.Linkage,
					rep.Target.EmptyRoot.Status, rep.Verdict, rep.Dynamic.Status, firstLine(rep.Target.EmptyRoot.Output), res.SHA256)
				table = append(table, row)
				t.Log(row)
				if os.Getenv("NOKMEM_TEST_REPRO") == "1" {
					// From scratch, in another cache: Go ≥ 1.13 gives the same
					// bytes (README, "Output"); older Go keeps a random path.
					c.CacheDir = t.TempDir()
					os.RemoveAll(res.Dir)
					again, err := BuildRunc(context.Background(), c, v)
					switch {
					case err != nil:
						t.Fatal(err)
					case again.SHA256 != res.SHA256 && target.GoMinor(prov.Build.GoUsed) >= 13:
						t.Fatalf("not reproducible with %s: %s %s", prov.Build.GoUsed, res.SHA256, again.SHA256)
					case again.SHA256 != res.SHA256:
						t.Logf("%s with %s: not reproducible, as documented for Go before 1.13", v, prov.Build.GoUsed)
					}
				}
			})
		}
	}
	t.Logf("release | toolchain | linkage, empty root | verdict | dynamic | --version | sha256\n%s", strings.Join(table, "\n"))
}

// TestUpstreamVendoredKubelet assembles Kubernetes-shaped trees whose
// vendor/github.com/opencontainers/runc is real runc at the revisions
// Kubernetes releases vendor (runc's own vendor/ flattened beside it, as
// Godeps did), and runs the kubelet pipeline on them.
func TestUpstreamVendoredKubelet(t *testing.T) {
	src := upstreamRunc(t)
	goVer := hostGo(t)
	// The names become paths (t.TempDir, then NOKMEM_CACHE): Kubernetes'
	// scripts take only plain characters there (build.SafeKubePath).
	cases := []struct {
		name, rev, strategy string
	}{
		{"k8s-1.13-like runc 871ba2e5 as v1.13.10 Godeps.json", "871ba2e58e24314d1fab4517a80410191ba5ad01", "patch"},
		{"k8s-1.10-like runc 9f9c9623", "9f9c96235cc97674e935002fc3d78361b696a69e", "patch"},
		{"k8s-1.14-like runc f000fe11", "f000fe11ece1b79f744edd9c8e1a53ba0f5e0f24", "tag"},
		{"k8s-1.16-like runc 6cc51588", "6cc515888830787a93d82138821f0309ad970640", "tag"},
		{"k8s-1.18-like runc rc10", "dc9208a3303feef5b3839f4323d9beb36df0a9dd", "tag"},
		{"k8s-1.21.1-like runc rc93", "12644e614e25b05da6fd08a38ffa0cfe1903fdec", "tag"},
		{"k8s-1.21.5-like runc v1.0.2", "52b36a2dd837e8462de8e01458bf02cf9eea47dd", "none"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := filepath.Join(t.TempDir(), "kubernetes")
			tag := "v1.13.12"
			assembleKube(t, src, tc.rev, k, goVer, tag)
			commit := fixture.Git(t, k, "rev-parse", "HEAD")
			c := newConfig(t, repo(t))
			os.WriteFile(filepath.Join(c.MatrixOverlay, "kubelet.yaml"), []byte("apiVersion: nokmem/v1\nkind: KubeletMatrix\nreleases:\n- version: "+tag+"\n  commit: "+commit+"\n"), 0o644)
			c.KubeRepoURL = k
			res, err := BuildKubelet(context.Background(), c, tag)
			if tc.strategy == "none" {
				if err == nil || !strings.Contains(err.Error(), "nothing to do") {
					t.Fatalf("want nothing to do, got %v", err)
				}
				t.Logf("%s: %v", tc.name, err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var prov dist.Provenance
			dist.ReadJSON(res.Dir, dist.ProvenanceFile, &prov)
			if prov.Strategy != tc.strategy || !prov.Verified.Passed {
				t.Fatalf("provenance %+v", prov)
			}
			t.Logf("%s: strategy %s, vendored %v, verdict %s, dynamic %s", tc.name, prov.Strategy, prov.Checks["vendoredRunc"], prov.Verified.Verdict, prov.Verified.Dynamic)
		})
	}
}

// assembleKube writes the Kubernetes fixture skeleton (Godeps era) with
// real runc at rev vendored in place of the fixture's libcontainer.
func assembleKube(t *testing.T, runcRepo, rev, dir, goVer, tag string) {
	t.Helper()
	tmp := fixture.NewKubeRepo(t, goVer)
	fixture.Git(t, "/", "clone", "-q", "--branch", tag, tmp.Dir, dir)
	vend := filepath.Join(dir, "vendor")
	os.RemoveAll(filepath.Join(vend, "github.com/opencontainers/runc"))
	runcDir := filepath.Join(vend, "github.com/opencontainers/runc")
	os.MkdirAll(runcDir, 0o755)
	archive := exec.Command("sh", "-c", `git --git-dir="$1" archive "$2" | tar -x -C "$3"`, "sh", runcRepo, rev, runcDir)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// Flatten runc's own vendor/ into the tree's, as Godeps did.
	if _, err := os.Stat(filepath.Join(runcDir, "vendor")); err == nil {
		if out, err := exec.Command("cp", "-a", filepath.Join(runcDir, "vendor")+"/.", vend+"/").CombinedOutput(); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		os.RemoveAll(filepath.Join(runcDir, "vendor"))
		os.Remove(filepath.Join(vend, "modules.txt"))
	}
	// The fixture's own fs manager is replaced by the real package.
	os.WriteFile(filepath.Join(dir, "Godeps", "Godeps.json"), []byte(`{"ImportPath": "k8s.io/kubernetes", "Deps": [{"ImportPath": "github.com/opencontainers/runc/libcontainer/cgroups/fs", "Rev": "`+rev+`"}]}`+"\n"), 0o644)
	style := "struct"
	if b, _ := exec.Command("grep", "-rl", "func NewManager(cg \\*configs.Cgroup", filepath.Join(dir, kube.FSDir)).Output(); len(b) > 0 {
		style = "new"
	}
	mgr := "package main\n\nimport (\n\t\"github.com/opencontainers/runc/libcontainer/cgroups/fs\"\n\t\"github.com/opencontainers/runc/libcontainer/configs\"\n)\n\n"
	if style == "struct" {
		mgr += "func newManager(cg *configs.Cgroup) *fs.Manager { return &fs.Manager{Cgroups: cg} }\n"
	} else {
		mgr += "type applier interface{ Apply(int) error }\n\nfunc newManager(cg *configs.Cgroup) applier { return fs.NewManager(cg, nil, false) }\n"
	}
	os.WriteFile(filepath.Join(dir, "cmd", "kubelet", "manager.go"), []byte(mgr), 0o644)
	fixture.Git(t, dir, "add", "-A")
	fixture.Git(t, dir, "commit", "-q", "-m", "vendor real runc "+rev)
	fixture.Git(t, dir, "tag", "-f", "-a", "-m", tag, tag)
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
