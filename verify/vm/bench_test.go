package vm

import (
	"context"
	"os"
	"testing"

	"github.com/nokmem/nokmem/internal/fixture"
	"github.com/nokmem/nokmem/internal/testenv"
	"github.com/nokmem/nokmem/verify"
)

// BenchmarkVerifyRunc verifies one nokmem runc (static, as nokmem builds
// it) on this host and in a VM: the difference is what the VM mode costs.
// NOKMEM_BENCH_RUNC names another runc, e.g. a real upstream build. The
// guest's /init is built once per process (a go build, measured apart by
// BenchmarkBuildInit).
//
//	host      the dynamic check on this host
//	vm        a check as it runs by default: the VM restored from the
//	          cached snapshot (saved by a first check before the timer)
//	vm-first  the first check of an empty cache: boot, save, check
//	vm-booted NOKMEM_VM_SNAPSHOT=0: every check boots its VM
func BenchmarkVerifyRunc(b *testing.B) {
	bin := os.Getenv("NOKMEM_BENCH_RUNC")
	if bin == "" {
		bin = benchFixture(b)
	}
	opt := verify.Options{Project: "runc"}
	verifyAll := func(b *testing.B, verify func() (*verify.Report, error)) {
		for i := 0; i < b.N; i++ {
			rep, err := verify()
			if err != nil || !rep.Passed {
				b.Fatalf("%v\n%s", err, rep.Summary())
			}
		}
	}
	b.Run("host", func(b *testing.B) {
		testenv.RequireDynamic(b)
		verifyAll(b, func() (*verify.Report, error) { return verify.Verify(context.Background(), bin, opt) })
	})
	b.Run("vm", func(b *testing.B) {
		requireVM(b)
		v := warmVerifier(b, b.TempDir(), b.TempDir())
		if _, err := v.Verify(context.Background(), bin, opt); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		verifyAll(b, func() (*verify.Report, error) { return v.Verify(context.Background(), bin, opt) })
	})
	b.Run("vm-first", func(b *testing.B) {
		requireVM(b)
		v := testVerifier(b, b.TempDir())
		verifyAll(b, func() (*verify.Report, error) {
			cache, err := os.MkdirTemp("", "nokmem-bench-snapshots-")
			if err != nil {
				return nil, err
			}
			defer os.RemoveAll(cache) // 100 MB each
			v.CacheDir = cache
			return v.Verify(context.Background(), bin, opt)
		})
	})
	b.Run("vm-booted", func(b *testing.B) {
		requireVM(b)
		v := testVerifier(b, b.TempDir())
		verifyAll(b, func() (*verify.Report, error) { return v.Verify(context.Background(), bin, opt) })
	})
}

// BenchmarkBuildInit is the go build of the guest's /init (once per
// process that verifies in a VM), with a warm build cache.
func BenchmarkBuildInit(b *testing.B) {
	requireVM(b)
	root := "../.."
	for i := 0; i < b.N; i++ {
		if _, err := BuildInit(context.Background(), nil, root, b.TempDir()); err != nil {
			b.Fatal(err)
		}
	}
}

func benchFixture(b *testing.B) string {
	b.Helper()
	repoOnce.Do(func() { repo = fixture.NewRuncRepoIn(b, sharedDir) })
	return repo.BuildRuncLinked(b, "v1.0.0-rc9", []string{"seccomp", "nokmem"}, false, fixture.LinkStatic)
}
