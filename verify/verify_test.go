package verify_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nokmem/nokmem/internal/fixture"
	"github.com/nokmem/nokmem/internal/testenv"
	"github.com/nokmem/nokmem/verify"
)

var (
	repo    *fixture.Repo
	repoDir string
)

func TestMain(m *testing.M) {
	repoDir, _ = os.MkdirTemp("", "nokmem-verify-test-")
	code := m.Run()
	os.RemoveAll(repoDir)
	os.Exit(code)
}

func fixtureRepo(t *testing.T) *fixture.Repo {
	if repo == nil {
		repo = fixture.NewRuncRepoIn(t, repoDir)
	}
	return repo
}

func TestStaticClassifiesFixtureBuilds(t *testing.T) {
	r := fixtureRepo(t)
	cases := []struct {
		name    string
		version string
		tags    []string
		patched bool
		want    verify.Verdict
	}{
		{"rc9 default (negative control)", "v1.0.0-rc9", []string{"seccomp"}, false, verify.KmemEnabled},
		{"rc9 nokmem", "v1.0.0-rc9", []string{"seccomp", "nokmem"}, false, verify.NoKmem},
		{"rc5 tag but no patch (negative control)", "v1.0.0-rc5", []string{"seccomp", "nokmem"}, false, verify.KmemEnabled},
		{"rc5 patched", "v1.0.0-rc5", []string{"seccomp"}, true, verify.NoKmem},
		{"rc92 default (negative control)", "v1.0.0-rc92", []string{"seccomp", "selinux", "apparmor"}, false, verify.KmemEnabled},
		{"v1.0.3 no kmem code", "v1.0.3", []string{"seccomp"}, false, verify.NoKmemCode},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bin := r.BuildRunc(t, c.version, c.tags, c.patched)
			res, err := verify.Static(bin)
			if err != nil {
				t.Fatal(err)
			}
			if res.Verdict != c.want {
				t.Fatalf("verdict %s, want %s; reasons %v", res.Verdict, c.want, res.Reasons)
			}
		})
	}
}

func TestStaticUnknownIsNotAPass(t *testing.T) {
	sh := "/bin/sh"
	res, err := verify.Static(sh)
	if err != nil {
		t.Fatal(err)
	}
	if res.Verdict != verify.Unknown {
		t.Fatalf("%s classified %s", sh, res.Verdict)
	}
	rep, err := verify.Verify(context.Background(), sh, verify.Options{Project: "runc", Dynamic: "off"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Passed {
		t.Fatal("a binary without any signal passed")
	}
}

func TestDynamicCatchesWritersAndPassesNokmem(t *testing.T) {
	testenv.RequireDynamic(t)
	r := fixtureRepo(t)
	cases := []struct {
		name     string
		version  string
		tags     []string
		patched  bool
		pass     bool
		reaction string
	}{
		{"rc9 default writes by path (negative control)", "v1.0.0-rc9", []string{"seccomp"}, false, false, ""},
		{"rc92 default writes through a directory fd (negative control)", "v1.0.0-rc92", []string{"seccomp"}, false, false, ""},
		{"rc5 tagged but unpatched (negative control)", "v1.0.0-rc5", []string{"seccomp", "nokmem"}, false, false, ""},
		{"rc8 nokmem but writes from another package (negative control)", "v1.0.0-rc8", []string{"seccomp", "nokmem"}, false, false, ""},
		{"rc9 nokmem", "v1.0.0-rc9", []string{"seccomp", "nokmem"}, false, true, "refused"},
		{"rc5 patched", "v1.0.0-rc5", []string{"seccomp"}, true, true, "refused"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bin := r.BuildRunc(t, c.version, c.tags, c.patched)
			rep, err := verify.Verify(context.Background(), bin, verify.Options{Project: "runc"})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Passed != c.pass {
				t.Fatalf("passed=%v, want %v\n%s", rep.Passed, c.pass, rep.Summary())
			}
			d := rep.Dynamic
			if !c.pass {
				if d.Status != verify.DynFail || rep.Verdict != verify.KmemEnabled {
					t.Fatalf("writer not caught dynamically:\n%s", rep.Summary())
				}
				// Both detectors must see it on their own.
				seen := map[string]bool{}
				for _, run := range d.Runs {
					for _, e := range run.Events {
						seen[e.Detector] = true
						if !strings.HasSuffix(e.Path, "/"+verify.KmemFile) || e.Pid <= 0 {
							t.Errorf("bad evidence %+v", e)
						}
					}
				}
				if !seen["ptrace"] || !seen["fanotify"] {
					t.Errorf("detectors that saw the write: %v\n%s", seen, rep.Summary())
				}
				return
			}
			if d.Status != verify.DynPass || len(d.Runs) != 2 || !d.Runs[0].CgroupCreated || d.Runs[0].MemoryLimit != "67108864" ||
				!d.Runs[0].Finished || d.Runs[0].ExitCode != 0 || !d.Runs[1].Finished {
				t.Fatalf("unexpected dynamic result:\n%s", rep.Summary())
			}
			if !strings.HasPrefix(d.Runs[1].Reaction, c.reaction) {
				t.Errorf("kernel-limit reaction %q, want %q", d.Runs[1].Reaction, c.reaction)
			}
			assertRemoved(t, d)
		})
	}
}

func TestSelfTestFailsWithADetectorDisabled(t *testing.T) {
	testenv.RequireDynamic(t)
	mount, err := verify.MemoryMount()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range verify.Detectors {
		t.Run(d, func(t *testing.T) {
			checks, err := verify.SelfTest(context.Background(), mount, verify.DynamicOptions{Disable: []string{d}})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range checks {
				if c.Detector == d && c.Caught {
					t.Fatalf("disabled detector %s reported the canary", d)
				}
				if c.Detector != d && !c.Caught {
					t.Fatalf("enabled detector %s missed the canary", c.Detector)
				}
			}
			for _, c := range checks {
				for _, e := range c.Events {
					assertGone(t, filepath.Dir(e.Path))
				}
			}
			// And a whole verification with that detector off is not a pass.
			bin := fixtureRepo(t).BuildRunc(t, "v1.0.0-rc9", []string{"seccomp", "nokmem"}, false)
			rep, err := verify.Verify(context.Background(), bin, verify.Options{Project: "runc", DynamicOptions: verify.DynamicOptions{Disable: []string{d}}})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Passed || rep.Dynamic.Status != verify.DynError {
				t.Fatalf("verification passed with detector %s disabled:\n%s", d, rep.Summary())
			}
		})
	}
}

// assertRemoved checks that the cgroups of a result (self-test and runs)
// are gone from every hierarchy. Other packages' tests may be running
// verifications at the same time, so only this result's names count.
func assertRemoved(t *testing.T, d *verify.DynamicResult) {
	t.Helper()
	for _, st := range d.SelfTest {
		for _, e := range st.Events {
			assertGone(t, filepath.Dir(e.Path))
		}
	}
	mounts, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, run := range d.Runs {
		for _, m := range mounts {
			assertGone(t, filepath.Join(m, run.CgroupPath))
		}
	}
}

func assertGone(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("left behind: %s", dir)
	}
}

func BenchmarkStatic(b *testing.B) {
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		if _, err := verify.Static(exe); err != nil {
			b.Fatal(err)
		}
	}
}
