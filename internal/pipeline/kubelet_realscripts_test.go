package pipeline

// Opt-in: the kubelet pipeline against Kubernetes' real build scripts, which
// this repository does not carry. You provide them:
//
//	NOKMEM_TEST_KUBE_SCRIPTS=/path/to/scripts NOKMEM_TEST_RUNC_REPO=/path/to/runc.git \
//	  go test -run RealKubernetesScripts -v ./internal/pipeline
//
// Each subdirectory of NOKMEM_TEST_KUBE_SCRIPTS holds files at their
// Kubernetes repository paths (Makefile, hack/lib/golang.sh, version.sh,
// hack/make-rules/build.sh, …), laid over a fixture tree whose
// vendor/github.com/opencontainers/runc is real runc, and a file
// nokmem-case that says what to build:
//
//	version=v1.13.12   the fixture release the files are laid over (Godeps or go.mod layout)
//	runc=<revision>    the runc revision to vendor from NOKMEM_TEST_RUNC_REPO
//	go=1.11.13         the Go the tree names (the release's own Go, fetched through the module proxy)
//	strategy=patch     what nokmem must find in the vendored content
//
// Each case is built twice from different NOKMEM_CACHE and NOKMEM_DIST and
// must print the exact version, carry the upstream commit and a clean tree
// state, leave the tree clean and be bit-identical.

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/fixture"
)

type realScriptsCase struct {
	name, dir, version, runc, goVersion, strategy string
}

func readRealScriptsCases(t *testing.T, root string) []realScriptsCase {
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var cases []realScriptsCase
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		c := realScriptsCase{name: e.Name(), dir: filepath.Join(root, e.Name())}
		f, err := os.Open(filepath.Join(c.dir, "nokmem-case"))
		if err != nil {
			t.Fatalf("%s: %v", c.dir, err)
		}
		s := bufio.NewScanner(f)
		for s.Scan() {
			k, v, _ := strings.Cut(strings.TrimSpace(s.Text()), "=")
			switch k {
			case "version":
				c.version = v
			case "runc":
				c.runc = v
			case "go":
				c.goVersion = v
			case "strategy":
				c.strategy = v
			}
		}
		f.Close()
		if c.version == "" || c.runc == "" || c.goVersion == "" || c.strategy == "" {
			t.Fatalf("%s/nokmem-case needs version=, runc=, go= and strategy=", c.dir)
		}
		cases = append(cases, c)
	}
	sort.Slice(cases, func(i, j int) bool { return cases[i].name < cases[j].name })
	return cases
}

// overlay copies every file under from (but nokmem-case) into to.
func overlay(t *testing.T, from, to string) []string {
	var files []string
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "nokmem-case" {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		st, _ := d.Info()
		dst := filepath.Join(to, rel)
		os.MkdirAll(filepath.Dir(dst), 0o755)
		files = append(files, rel)
		return os.WriteFile(dst, b, st.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestRealKubernetesScripts(t *testing.T) {
	root := os.Getenv("NOKMEM_TEST_KUBE_SCRIPTS")
	if root == "" {
		t.Skip("set NOKMEM_TEST_KUBE_SCRIPTS to a directory of real Kubernetes build scripts to run this test")
	}
	src := upstreamRunc(t)
	var table []string
	for _, tc := range readRealScriptsCases(t, root) {
		t.Run(tc.name, func(t *testing.T) {
			k := filepath.Join(t.TempDir(), "kubernetes")
			assembleKube(t, src, tc.runc, k, tc.goVersion, tc.version)
			files := overlay(t, tc.dir, k)
			fixture.Git(t, k, "add", "-A")
			fixture.Git(t, k, "commit", "-q", "-m", "real build scripts")
			fixture.Git(t, k, "tag", "-f", "-a", "-m", tc.version, tc.version)
			commit := fixture.Git(t, k, "rev-parse", "HEAD")
			t.Logf("%s: %d real files laid over the fixture: %s", tc.name, len(files), strings.Join(files, " "))
			var sums []string
			for i := range 2 {
				c := newConfig(t, repo(t)) // a fresh NOKMEM_CACHE and NOKMEM_DIST each time
				os.WriteFile(filepath.Join(c.MatrixOverlay, "kubelet.yaml"), []byte("apiVersion: nokmem/v1\nkind: KubeletMatrix\nreleases:\n- version: "+tc.version+"\n  commit: "+commit+"\n"), 0o644)
				c.KubeRepoURL = k
				var log strings.Builder
				c.Log = &log
				res, err := BuildKubelet(context.Background(), c, tc.version)
				if err != nil {
					table = append(table, fmt.Sprintf("| %s | FAILED: %s |", tc.name, firstLine(err.Error())))
					t.Fatalf("%v\n%s", err, log.String())
				}
				var prov dist.Provenance
				dist.ReadJSON(res.Dir, dist.ProvenanceFile, &prov)
				var checks struct {
					Tree    TreeAfterMake  `json:"treeAfterMake"`
					Paths   EmbeddedPaths  `json:"embeddedPaths"`
					Version KubeletVersion `json:"kubeletVersion"`
				}
				readChecks(t, res.Dir, &checks)
				if prov.Strategy != tc.strategy || !checks.Tree.Clean || checks.Paths.Total != 0 || checks.Version.GitCommit != commit ||
					checks.Version.GitTreeState != "clean" || checks.Version.Printed != "Kubernetes "+tc.version {
					t.Errorf("build %d: strategy %s, checks %+v\n%s", i, prov.Strategy, checks, log.String())
				}
				sums = append(sums, res.SHA256)
				row := fmt.Sprintf("| %s | %s (%s) | %s | %q | %s %s (%s) | tree clean %v | paths %d | %s | %s, %s |", tc.name, prov.Build.GoUsed, prov.Build.GoSource,
					prov.Strategy, checks.Version.Printed, checks.Version.GitCommit[:12], checks.Version.GitTreeState, checks.Version.From,
					checks.Tree.Clean, checks.Paths.Total, res.SHA256[:16], prov.Verified.Verdict, prov.Verified.Dynamic)
				table = append(table, row)
				t.Log(row)
				t.Logf("GOFLAGS=%q GOLDFLAGS=%q", prov.Build.Env["GOFLAGS"], prov.Build.Env["GOLDFLAGS"])
			}
			if sums[0] != sums[1] {
				t.Errorf("%s: the two caches gave different kubelets: %s %s", tc.name, sums[0], sums[1])
			}
		})
	}
	t.Logf("case | Go | strategy | --version | GitCommit, GitTreeState | tree after make | embedded paths | sha256 | verdict, dynamic\n%s", strings.Join(table, "\n"))
}
