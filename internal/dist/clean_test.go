package dist

import (
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// layout writes what nokmem makes in a dist/: two artifacts, a report, a
// package, and a staging directory abandoned long ago.
func layout(t *testing.T, root string) {
	t.Helper()
	for _, f := range []string{"runc/v1.0.0-rc9/runc", "runc/v1.0.0-rc9/" + ProvenanceFile, "runc/v1.0.0-rc9/" + StatementFile,
		"runc/v1.0.0-rc9/" + SignatureFile, "runc/v1.0.0-rc9/" + ReportFile, "kubelet/v1.13.12/kubelet", "kubelet/v1.13.12/kmem-probe",
		"reports/runc-v1.0.0-rc9.verify.json", "packages/runc-nokmem-1.0.0~rc9-1.nokmem.x86_64.rpm", ".staging-runc-v1.0.0-rc5-123/runc"} {
		p := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"runc/v1.0.0-rc9", "kubelet/v1.13.12"} {
		if err := WriteSums(filepath.Join(root, d)); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * UncheckableAge)
	if err := os.Chtimes(filepath.Join(root, ".staging-runc-v1.0.0-rc5-123"), old, old); err != nil {
		t.Fatal(err)
	}
}

func listing(t *testing.T, root string) string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			out = append(out, p)
		}
		return nil
	})
	sort.Strings(out)
	return strings.Join(out, "\n")
}

func TestCleanRemovesNokmemsOutputAndItsDirectory(t *testing.T) {
	root := filepath.Join(t.TempDir(), "dist")
	layout(t, root)
	removed, err := Clean(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(root); !os.IsNotExist(err) {
		t.Errorf("dist/ survived: %s", listing(t, root))
	}
	if len(removed) != 6 || removed[len(removed)-1] != root {
		t.Errorf("removed %v", removed)
	}
	if removed, err := Clean(root); err != nil || removed != nil {
		t.Errorf("clean of nothing: %v %v", removed, err)
	}
}

// NOKMEM_DIST pointing at the wrong directory loses nothing.
func TestCleanRemovesNothingThatNokmemDidNotMake(t *testing.T) {
	for _, tc := range []struct {
		name, path string
		named      string // what the message names, when not path
		symlink    bool
		also       map[string]string // more files to write first
		unlisted   bool              // rewrite SHA256SUMS without path
	}{
		{name: "a file at the top", path: "notes.txt"},
		{name: "a directory nokmem does not make", path: "src/main.go", named: "src"},
		{name: "a file among the artifacts", path: "runc/README"},
		{name: "a version directory without SHA256SUMS", path: "runc/v1.0.0-rc8/runc", named: "runc/v1.0.0-rc8"},
		{name: "a document among the packages", path: "packages/plan.odt"},
		{name: "a report that is not one", path: "reports/notes.txt"},
		{name: "a symbolic link in place of a directory", path: "kubelet", symlink: true},
		// Inside an artifact directory: only nokmem's files, listed by a
		// SHA256SUMS nokmem wrote.
		{name: "a file inside an artifact", path: "runc/v1.0.0-rc9/mine.txt"},
		{name: "a directory inside an artifact", path: "runc/v1.0.0-rc9/sub/deeper/file", named: "runc/v1.0.0-rc9/sub"},
		{name: "a symbolic link inside an artifact", path: "runc/v1.0.0-rc9/runc", symlink: true},
		{name: "a garbage SHA256SUMS beside somebody's data", path: "runc/v9.9.9/mydata.tar", named: "runc/v9.9.9/mydata.tar",
			also: map[string]string{"runc/v9.9.9/" + SumsFile: "garbage\n"}},
		{name: "a garbage SHA256SUMS", path: "runc/v9.9.9/" + SumsFile, named: "runc/v9.9.9/" + SumsFile + " (line 1"},
		{name: "a nokmem file SHA256SUMS does not list", path: "runc/v1.0.0-rc9/" + ReportFile, unlisted: true,
			named: "runc/v1.0.0-rc9/" + SumsFile + " (it does not list " + ReportFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "home")
			layout(t, root)
			p := filepath.Join(root, tc.path)
			for f, content := range tc.also {
				os.MkdirAll(filepath.Dir(filepath.Join(root, f)), 0o755)
				if err := os.WriteFile(filepath.Join(root, f), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tc.unlisted {
				sums := filepath.Join(filepath.Dir(p), SumsFile)
				b, _ := os.ReadFile(sums)
				var keep []string
				for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
					if !strings.HasSuffix(l, "  "+filepath.Base(p)) {
						keep = append(keep, l)
					}
				}
				os.WriteFile(sums, []byte(strings.Join(keep, "\n")+"\n"), 0o644)
			} else if tc.symlink {
				os.RemoveAll(p)
				if err := os.Symlink(t.TempDir(), p); err != nil {
					t.Fatal(err)
				}
			} else {
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, []byte("mine"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			named := p
			if tc.named != "" {
				named = filepath.Join(root, tc.named)
			}
			before := listing(t, root)
			_, err := Clean(root)
			if err == nil || !strings.Contains(err.Error(), "removed nothing") || !strings.Contains(err.Error(), named) || !strings.Contains(err.Error(), "NOKMEM_DIST") {
				t.Fatalf("error does not name %s: %v", named, err)
			}
			if after := listing(t, root); after != before {
				t.Errorf("clean changed the directory:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// A build running into the same dist/ keeps its staging directory, and
// clean says to wait rather than pull the output from under it.
func TestCleanWaitsForARunningBuild(t *testing.T) {
	root := filepath.Join(t.TempDir(), "dist")
	layout(t, root)
	s, err := NewStaging(root, "runc", "v1.0.0-rc9")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Abort()
	_, err = Clean(root)
	if err == nil || !strings.Contains(err.Error(), "a build is running") {
		t.Fatalf("clean during a build: %v", err)
	}
	if _, err := os.Stat(s.Path(".")); err != nil {
		t.Errorf("the running build's staging directory was removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "runc", "v1.0.0-rc9", "runc")); err != nil {
		t.Errorf("artifacts were removed while a build was running: %v", err)
	}
}
