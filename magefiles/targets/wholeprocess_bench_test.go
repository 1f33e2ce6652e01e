package targets

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nokmem/nokmem/internal/fixture"
	"github.com/nokmem/nokmem/internal/testenv"
	"github.com/nokmem/nokmem/verify"
)

// Whole-process benchmarks: `go tool mage build:runc` and `verify:runc` as
// a user runs them, on the fixture runc repository (offline), against the
// plain recipe a user would otherwise follow. `go tool mage bench` runs them
// 5 times each (a build per iteration), the other benchmarks 20 times.
// NOKMEM_BENCH_RUNC_REPO runs them on a real runc repository instead (a
// local clone or mirror; NOKMEM_BENCH_RUNC_VERSION, default v1.0.0-rc10, a
// release of matrix/runc.yaml; offline, add NOKMEM_GO_TOOLCHAIN=host).
// Numbers depend on the machine's load: docs/verifier.md, "Where the time
// goes", has measurements and how they were taken.

// benchRepo is the runc repository the benchmarks build from, the release
// they build, and the environment of every run: that repository (and for
// the fixture its overlay matrix and patches), the dynamic check on this
// host (no container or VM runtime) and required.
func benchRepo(b *testing.B) (repo, version string, env []string) {
	b.Helper()
	env = []string{"NOKMEM_VERIFY_RUNTIME=host", "NOKMEM_DYNAMIC=require"}
	if repo = os.Getenv("NOKMEM_BENCH_RUNC_REPO"); repo != "" {
		version = os.Getenv("NOKMEM_BENCH_RUNC_VERSION")
		if version == "" {
			version = "v1.0.0-rc10"
		}
		return repo, version, append(env, "NOKMEM_RUNC_REPO="+repo)
	}
	r := fixture.NewRuncRepo(b)
	mo, po := r.Overlay(b)
	return r.Dir, "v1.0.0-rc9", append(env, "NOKMEM_RUNC_REPO="+r.Dir, "NOKMEM_MATRIX_OVERLAY="+mo, "NOKMEM_PATCHES_OVERLAY="+po)
}

// timedMage runs `go tool mage args...` in the project root and returns how
// long the whole process took.
func timedMage(b *testing.B, env []string, args ...string) time.Duration {
	b.Helper()
	cmd := exec.Command("go", append([]string{"tool", "mage"}, args...)...)
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), env...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		b.Fatalf("go tool mage %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return took
}

// plainRecipe is what one would do by hand: a shallow clone of the tag, and
// go build -tags "seccomp nokmem" (in a GOPATH layout, as rc9 needs). The
// clone goes to the same place each time, as by hand: a build's cache keys
// include its directory, so a new directory each time would rebuild all.
func plainRecipe(b *testing.B, repo, version, gopath string) time.Duration {
	b.Helper()
	src := filepath.Join(gopath, "src", "github.com", "opencontainers", "runc")
	if err := os.RemoveAll(src); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for _, c := range []struct {
		dir  string
		args []string
		env  []string
	}{
		{gopath, []string{"git", "-c", "advice.detachedHead=false", "clone", "-q", "--depth", "1", "--branch", version, "file://" + repo, src}, nil},
		{src, []string{"go", "build", "-tags", "seccomp nokmem", "-o", "runc", "."}, []string{"GOPATH=" + gopath, "GO111MODULE=off", "GOFLAGS="}},
	} {
		cmd := exec.Command(c.args[0], c.args[1:]...)
		cmd.Dir = c.dir
		cmd.Env = append(os.Environ(), c.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%s: %v\n%s", strings.Join(c.args, " "), err, out)
		}
	}
	return time.Since(start)
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// build:runc with a fresh nokmem cache and dist (fetch, treat, check, build,
// verify, publish; the Go build cache warm) against the plain recipe, paired
// run by run so that a change in the machine's load hits both. Reported:
// the medians and the ratio of the medians (the target: 1.5).
func BenchmarkWholeProcessBuildRunc(b *testing.B) {
	testenv.RequireDynamic(b)
	repo, version, env := benchRepo(b)
	fresh := func() []string {
		return append(env, "NOKMEM_CACHE="+b.TempDir(), "NOKMEM_DIST="+filepath.Join(b.TempDir(), "dist"))
	}
	gopath := b.TempDir()
	// Warm the Go build cache for both builds and the magefile binary.
	plainRecipe(b, repo, version, gopath)
	timedMage(b, fresh(), "build:runc", version)
	var plain, build []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		plain = append(plain, plainRecipe(b, repo, version, gopath))
		build = append(build, timedMage(b, fresh(), "build:runc", version))
	}
	b.StopTimer()
	p, m := median(plain), median(build)
	b.ReportMetric(p.Seconds(), "plain-s")
	b.ReportMetric(m.Seconds(), "build:runc-s")
	b.ReportMetric(m.Seconds()/p.Seconds(), "x-plain")
}

// verify:runc of a published artifact (statement, digests, static and
// dynamic checks, report), and the same with NOKMEM_DYNAMIC=off: the
// difference is the dynamic check as a user waits for it. Reported: the
// medians, and the dynamic check's own time from the reports' timings.
func BenchmarkWholeProcessVerifyRunc(b *testing.B) {
	testenv.RequireDynamic(b)
	_, version, env := benchRepo(b)
	dist := filepath.Join(b.TempDir(), "dist")
	env = append(env, "NOKMEM_CACHE="+b.TempDir(), "NOKMEM_DIST="+dist)
	timedMage(b, env, "build:runc", version)
	report := filepath.Join(dist, "reports", "runc-"+version+".verify.json")
	var full, off, dyn []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		full = append(full, timedMage(b, env, "verify:runc", version))
		d, err := dynamicTotal(report)
		if err != nil {
			b.Fatal(err)
		}
		dyn = append(dyn, d)
		off = append(off, timedMage(b, append(env, "NOKMEM_DYNAMIC=off"), "verify:runc", version))
	}
	b.StopTimer()
	b.ReportMetric(median(full).Seconds(), "verify:runc-s")
	b.ReportMetric(median(off).Seconds(), "dynamic-off-s")
	b.ReportMetric(median(dyn).Seconds(), "dynamic-s")
}

// dynamicTotal reads the dynamic check's total time from a report.
func dynamicTotal(path string) (time.Duration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var rep verify.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return 0, err
	}
	if rep.Dynamic == nil || rep.Dynamic.Status != verify.DynPass {
		return 0, fmt.Errorf("%s: the dynamic check did not pass: %+v", path, rep.Dynamic)
	}
	for _, p := range rep.Dynamic.Timings {
		if p.Phase == "total" {
			return time.Duration(p.Ms * float64(time.Millisecond)), nil
		}
	}
	return 0, fmt.Errorf("%s: no timings", path)
}
