package pipeline

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/fixture"
	"github.com/nokmem/nokmem/internal/kube"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/verify"
)

var sharedKube *fixture.KubeRepo

func hostGo(t *testing.T) string {
	out, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(strings.TrimSpace(string(out)), "go")
}

func kubeConfig(t *testing.T) (*Config, *fixture.KubeRepo) {
	t.Helper()
	if sharedKube == nil {
		sharedKube = fixture.NewKubeRepo(t, hostGo(t))
		// The shared repository must outlive this test.
		dir := filepath.Join(sharedDir, "kubernetes")
		if _, err := os.Stat(dir); err != nil {
			fixture.Git(t, sharedDir, "clone", "-q", "--mirror", sharedKube.Dir, dir)
		}
		sharedKube.Dir = dir
	}
	c := newConfig(t, repo(t))
	sharedKube.KubeOverlay(t, c.MatrixOverlay)
	c.KubeRepoURL = sharedKube.Dir
	return c, sharedKube
}

func TestBuildKubeletFixtureEras(t *testing.T) {
	c, k := kubeConfig(t)
	for _, tc := range []struct {
		version, strategy, suffix string
	}{
		{"v1.13.12", "patch", ""},
		{"v1.18.20", "tag", "+nokmem.1"},
	} {
		t.Run(tc.version, func(t *testing.T) {
			c.KubeVersionSuffix = tc.suffix
			res, err := BuildKubelet(context.Background(), c, tc.version)
			if err != nil {
				t.Fatal(err)
			}
			if got := dirNames(t, res.Dir); got != "SHA256SUMS kmem-probe kubelet provenance.json verify.json" {
				t.Fatalf("dist files: %s", got)
			}
			out, err := exec.Command(res.Binary, "--version").Output()
			if err != nil || string(out) != "Kubernetes "+tc.version+tc.suffix+"\n" {
				t.Fatalf("--version %q %v", out, err)
			}
			var prov dist.Provenance
			dist.ReadJSON(res.Dir, dist.ProvenanceFile, &prov)
			if prov.Strategy != tc.strategy || prov.Source.Commit != k.Commits[tc.version] || prov.Source.Pinned != "pinned" || !prov.Verified.Passed {
				t.Errorf("provenance %+v", prov)
			}
			vr, _ := prov.Checks["vendoredRunc"].(map[string]any)
			if vr["runcRevision"] != fixture.KubeEraOf(tc.version).RuncRev {
				t.Errorf("vendored runc %v", vr["runcRevision"])
			}
			if tc.strategy == "tag" && prov.Build.Env["GOFLAGS"] != "-tags=nokmem" {
				t.Errorf("GOFLAGS %q", prov.Build.Env["GOFLAGS"])
			}
			if verify.HostProblem() == "" && prov.Verified.Dynamic != verify.DynPass {
				t.Errorf("dynamic %s", prov.Verified.Dynamic)
			}
			// Pinned and unchanged: the second build is a cache hit.
			again, err := BuildKubelet(context.Background(), c, tc.version)
			if err != nil || !again.CacheHit || again.SHA256 != res.SHA256 {
				t.Errorf("second build: hit=%v err=%v", again != nil && again.CacheHit, err)
			}
		})
	}
}

// The untreated builds are the negative controls: kubelet's own make with
// the tag forgotten (or BUILDTAGS, which Kubernetes ignores), and an
// unpatched pre-nokmem tree.
func TestUntreatedKubeletFailsVerification(t *testing.T) {
	c, k := kubeConfig(t)
	for _, tc := range []struct{ version, goflags string }{
		{"v1.18.20", ""},
		{"v1.13.12", "-tags=nokmem"},
	} {
		t.Run(tc.version, func(t *testing.T) {
			gopath := t.TempDir()
			tree := filepath.Join(gopath, "src", "k8s.io", "kubernetes")
			fixture.Git(t, "/", "clone", "-q", "--branch", tc.version, k.Dir, tree)
			cmd := exec.Command("make", "all", "WHAT=cmd/kubelet", "BUILDTAGS=nokmem", "GOFLAGS="+tc.goflags)
			cmd.Dir = tree
			cmd.Env = append(os.Environ(), "GOPATH="+gopath, "GOTOOLCHAIN=local")
			if fixture.KubeEraOf(tc.version).Layout == "godeps" {
				cmd.Env = append(cmd.Env, "GO111MODULE=off")
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			id, err := kube.Identify(tree, mustPatches(t, c))
			if err != nil {
				t.Fatal(err)
			}
			probe := filepath.Join(t.TempDir(), "probe")
			req := kubeletReq(tree, gopath, tc.goflags != "" && id.Strategy == "tag")
			if err := builder().BuildProbe(context.Background(), req, id.APIStyle, probe); err != nil {
				t.Fatal(err)
			}
			rep, err := verify.Verify(context.Background(), filepath.Join(tree, "_output/local/bin/linux/amd64/kubelet"),
				verify.Options{Project: "kubelet", Probe: probe, AllowStaticOnly: c.AllowStaticOnly})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Passed || rep.Verdict != verify.KmemEnabled {
				t.Fatalf("untreated kubelet passed:\n%s", rep.Summary())
			}
		})
	}
}

func TestKubeletBadInput(t *testing.T) {
	_, k := kubeConfig(t)
	ctx := context.Background()
	// A kubelet whose vendored memory.go no patch covers.
	odd := filepath.Join(t.TempDir(), "odd")
	fixture.Git(t, "/", "clone", "-q", k.Dir, odd)
	fixture.Git(t, odd, "checkout", "-q", "v1.13.12")
	mem := filepath.Join(odd, kube.FSDir, "memory.go")
	b, _ := os.ReadFile(mem)
	os.WriteFile(mem, append(b, []byte("// locally modified\n")...), 0o644)
	fixture.Git(t, odd, "commit", "-qam", "modified vendor")
	fixture.Git(t, odd, "tag", "-f", "-a", "-m", "odd", "v1.13.12")
	oddCommit := fixture.Git(t, odd, "rev-parse", "HEAD")

	cases := []struct {
		name, version, want string
		setup               func(c *Config)
	}{
		{"no kmem code", "v1.21.14", "nothing to do: kubelet v1.21.14 does not enable kernel-memory accounting (this kubelet does not enable kmem", nil},
		{"unknown version", "v1.8.0", "kubelet v1.8.0 is not in the matrix", nil},
		{"pre-release suffix", "v1.13.12", "must be semver build metadata", func(c *Config) { c.KubeVersionSuffix = "-nokmem" }},
		{"unpinned without opt-in", "v1.10.13", "has no pinned commit", nil},
		{"vendored content no patch covers", "v1.13.12", "which no nokmem patch covers", func(c *Config) {
			c.KubeRepoURL = odd
			y, _ := os.ReadFile(filepath.Join(c.MatrixOverlay, "kubelet.yaml"))
			os.WriteFile(filepath.Join(c.MatrixOverlay, "kubelet.yaml"), []byte(strings.Replace(string(y), k.Commits["v1.13.12"], oddCommit, 1)), 0o644)
		}},
		{"go mismatch", "v1.13.12", "not safe on a much newer Go", func(c *Config) {
			c.Runner = goVersionRunner{Runner: run.Local{}, version: "go1.11.13"}
		}},
		{"missing toolchain", "v1.13.12", "no usable Go toolchain", func(c *Config) { c.GoBin = "/nonexistent/go" }},
		{"expectation contradicts content", "v1.18.20", "the matrix expects strategy", func(c *Config) {
			y, _ := os.ReadFile(filepath.Join(c.MatrixOverlay, "kubelet.yaml"))
			s := strings.Replace(string(y), "- version: v1.18.20\n", "- version: v1.18.20\n  strategy: patch\n", 1)
			os.WriteFile(filepath.Join(c.MatrixOverlay, "kubelet.yaml"), []byte(s), 0o644)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c2, _ := kubeConfig(t)
			if tc.setup != nil {
				tc.setup(c2)
			}
			before := tree(t, c2.DistDir)
			_, err := BuildKubelet(ctx, c2, tc.version)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want %q, got %v", tc.want, err)
			}
			if after := tree(t, c2.DistDir); after != before {
				t.Errorf("dist changed")
			}
		})
	}
}

// goVersionRunner pretends the host Go is another version.
type goVersionRunner struct {
	run.Runner
	version string
}

func (g goVersionRunner) Run(ctx context.Context, c run.Cmd) ([]byte, error) {
	if len(c.Args) == 3 && c.Args[1] == "env" && c.Args[2] == "GOVERSION" {
		return []byte(g.version + "\n"), nil
	}
	return g.Runner.Run(ctx, c)
}
