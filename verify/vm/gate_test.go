package vm

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/internal/testenv"
)

// requireVM gates the tests that boot a VM: under CI=true a missing QEMU
// or kernel fails them (.ci/run installs both); elsewhere they are skipped
// with the reason.
func requireVM(t testing.TB) {
	t.Helper()
	if p := Problem(os.Getenv("NOKMEM_VM_KERNEL")); p != "" {
		if testenv.InCI() {
			t.Fatalf("CI=true but the VM mode cannot run here: %s", p)
		}
		t.Skipf("needs QEMU and a kernel for the verifier's VM: %s", p)
	}
}

var (
	initOnce sync.Once
	initPath string
	initErr  error
)

// testVerifier returns a Verifier whose /init is built once per test binary
// (NOKMEM_TEST_VM_INIT: a prebuilt one, e.g. for a run as another user
// whose Go cannot build), with temp files in tmp. It keeps no snapshots:
// every check boots (warmVerifier restores).
func testVerifier(t testing.TB, tmp string) *Verifier {
	t.Helper()
	initOnce.Do(func() {
		if p := os.Getenv("NOKMEM_TEST_VM_INIT"); p != "" {
			initPath = p
			return
		}
		root, err := filepath.Abs("../..")
		if err != nil {
			initErr = err
			return
		}
		b, err := BuildInit(context.Background(), run.Local{}, root, sharedDir)
		if err != nil {
			initErr = err
			return
		}
		initPath = filepath.Join(sharedDir, "init")
		initErr = os.WriteFile(initPath, b, 0o755)
	})
	if initErr != nil {
		t.Fatal(initErr)
	}
	return &Verifier{Init: initPath, TempDir: tmp, Kernel: os.Getenv("NOKMEM_VM_KERNEL")}
}

// warmVerifier is testVerifier with snapshots in cache: the first check of
// a cache boots and saves, the next ones restore.
func warmVerifier(t testing.TB, tmp, cache string) *Verifier {
	t.Helper()
	v := testVerifier(t, tmp)
	v.CacheDir = cache
	return v
}

// sharedCache is the snapshot cache the tests that restore share, so that
// only the first of them boots.
func sharedCache() string { return filepath.Join(sharedDir, "snapshots") }
