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
// it) on this host and in a VM: the difference is what the VM mode costs
// (boot, initramfs, emulation). NOKMEM_BENCH_RUNC names another runc, e.g.
// a real upstream build. The guest's /init is built once per process (a
// go build, measured apart by BenchmarkBuildInit).
func BenchmarkVerifyRunc(b *testing.B) {
	bin := os.Getenv("NOKMEM_BENCH_RUNC")
	if bin == "" {
		bin = benchFixture(b)
	}
	opt := verify.Options{Project: "runc"}
	b.Run("host", func(b *testing.B) {
		testenv.RequireDynamic(b)
		for i := 0; i < b.N; i++ {
			rep, err := verify.Verify(context.Background(), bin, opt)
			if err != nil || !rep.Passed {
				b.Fatalf("%v\n%s", err, rep.Summary())
			}
		}
	})
	b.Run("vm", func(b *testing.B) {
		requireVM(b)
		v := testVerifier(b, b.TempDir())
		for i := 0; i < b.N; i++ {
			rep, err := v.Verify(context.Background(), bin, opt)
			if err != nil || !rep.Passed {
				b.Fatalf("%v", err)
			}
		}
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
