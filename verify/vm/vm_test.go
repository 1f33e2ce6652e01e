package vm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nokmem/nokmem/internal/fixture"
	"github.com/nokmem/nokmem/internal/testenv"
	"github.com/nokmem/nokmem/verify"
	"github.com/nokmem/nokmem/verify/guest"
)

// sharedDir holds what the tests of this package share: the fixture
// repository, the guest's /init, the route writers.
var sharedDir string

func TestMain(m *testing.M) {
	if os.Getenv("NOKMEM_TEST_VM_HELPER") == "1" {
		// The helper of TestVMNothingLeftAfterKill9 is killed with SIGKILL:
		// it must make no file of its own, to see whether the VM mode does.
		os.Exit(m.Run())
	}
	sharedDir, _ = os.MkdirTemp("", "nokmem-vm-test-")
	os.Chmod(sharedDir, 0o755) // readable by the non-root run (see TestAsNonRoot)
	code := m.Run()
	os.RemoveAll(sharedDir)
	os.Exit(code)
}

var (
	repoOnce sync.Once
	repo     *fixture.Repo
)

func fixtureRepo(t *testing.T) *fixture.Repo {
	repoOnce.Do(func() { repo = fixture.NewRuncRepoIn(t, sharedDir) })
	if repo == nil {
		t.Fatal("fixture repository")
	}
	return repo
}

// writerSource is a runc-shaped program that writes the kmem file of the
// container's memory cgroup by one route, chosen by its name: the cases a
// path-only detector would miss.
//
//	writer-openat2  openat2(2) relative to a directory fd (runc rc93's way;
//	                openat(2) where the kernel has no openat2, e.g. 3.10)
//	writer-symlink  through a symlink elsewhere that points at the file
//	writer-child    from a child process it starts
//
// As probe-ok and probe-writer it is a kubelet kmem probe that creates its
// memory cgroup, and writes the kmem file in it (probe-writer).
const writerSource = `package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"unsafe"
)

func main() {
	if p := os.Getenv("WRITER_CHILD_FILE"); p != "" {
		must(os.WriteFile(p, []byte("1"), 0o600))
		return
	}
	if name := filepath.Base(os.Args[0]); name == "probe-ok" || name == "probe-writer" {
		// A kubelet kmem probe: probe <cgroupsPath> creates the memory
		// cgroup, as Apply(-1) does, and leaves it.
		dir := filepath.Join("/sys/fs/cgroup/memory", os.Args[1])
		must(os.MkdirAll(dir, 0o755))
		if name == "probe-writer" {
			must(os.WriteFile(filepath.Join(dir, "memory.kmem.limit_in_bytes"), []byte("1"), 0o600))
		}
		return
	}
	var bundle string
	for i, a := range os.Args {
		if a == "--bundle" && i+1 < len(os.Args) {
			bundle = os.Args[i+1]
		}
	}
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	must(err)
	var cfg struct {
		Linux struct {
			CgroupsPath string ` + "`json:\"cgroupsPath\"`" + `
		} ` + "`json:\"linux\"`" + `
	}
	must(json.Unmarshal(b, &cfg))
	dir := filepath.Join("/sys/fs/cgroup/memory", cfg.Linux.CgroupsPath)
	must(os.MkdirAll(dir, 0o755))
	defer os.Remove(dir)
	file := filepath.Join(dir, "memory.kmem.limit_in_bytes")
	switch filepath.Base(os.Args[0]) {
	case "writer-openat2":
		dfd, err := syscall.Open(dir, syscall.O_DIRECTORY|syscall.O_RDONLY, 0)
		must(err)
		name, _ := syscall.BytePtrFromString("memory.kmem.limit_in_bytes")
		// struct open_how {flags, mode, resolve}; RESOLVE_BENEATH = 0x08.
		how := [3]uint64{syscall.O_WRONLY, 0, 0x08}
		fd, _, errno := syscall.Syscall6(437, uintptr(dfd), uintptr(unsafe.Pointer(name)), uintptr(unsafe.Pointer(&how)), unsafe.Sizeof(how), 0, 0)
		if errno == syscall.ENOSYS { // no openat2 (Linux < 5.6, e.g. EL7's 3.10)
			var e error
			var f int
			f, e = syscall.Openat(dfd, "memory.kmem.limit_in_bytes", syscall.O_WRONLY, 0)
			must(e)
			fd, errno = uintptr(f), 0
		}
		if errno != 0 {
			must(errno)
		}
		_, err = syscall.Write(int(fd), []byte("1"))
		must(err)
		syscall.Close(int(fd))
	case "writer-symlink":
		tmp, err := os.MkdirTemp("", "writer-")
		must(err)
		defer os.RemoveAll(tmp)
		link := filepath.Join(tmp, "innocent")
		must(os.Symlink(file, link))
		must(os.WriteFile(link, []byte("1"), 0o600))
	case "writer-child":
		cmd := exec.Command("/proc/self/exe")
		cmd.Env = append(os.Environ(), "WRITER_CHILD_FILE="+file)
		out, err := cmd.CombinedOutput()
		if err != nil {
			must(fmt.Errorf("child: %v: %s", err, out))
		}
	default:
		must(fmt.Errorf("unknown route %s", os.Args[0]))
	}
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "writer:", err)
		os.Exit(1)
	}
}
`

var (
	writerOnce sync.Once
	writerDir  string
	writerErr  error
)

// routeWriters builds writerSource once, static, and returns one copy per
// route (the route is the file name).
func routeWriters(t *testing.T) []string {
	writerOnce.Do(func() {
		writerDir = filepath.Join(sharedDir, "writers")
		src := filepath.Join(sharedDir, "writersrc")
		if writerErr = os.MkdirAll(src, 0o755); writerErr != nil {
			return
		}
		if writerErr = os.WriteFile(filepath.Join(src, "main.go"), []byte(writerSource), 0o644); writerErr != nil {
			return
		}
		os.MkdirAll(writerDir, 0o755)
		bin := filepath.Join(writerDir, "writer-openat2")
		cmd := exec.Command("go", "build", "-o", bin, "main.go")
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GOAMD64=v1", "GO111MODULE=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			writerErr = fmt.Errorf("go build the route writer: %v\n%s", err, out)
			return
		}
		b, err := os.ReadFile(bin)
		if writerErr = err; err != nil {
			return
		}
		for _, n := range []string{"writer-symlink", "writer-child", "probe-ok", "probe-writer"} {
			if writerErr = os.WriteFile(filepath.Join(writerDir, n), b, 0o755); writerErr != nil {
				return
			}
		}
	})
	if writerErr != nil {
		t.Fatal(writerErr)
	}
	var out []string
	for _, n := range []string{"writer-openat2", "writer-symlink", "writer-child"} {
		out = append(out, filepath.Join(writerDir, n))
	}
	return out
}

// vmCase is one binary of the batch test and what its check must show.
type vmCase struct {
	name     string
	path     string
	disable  []string
	status   string // verify.DynPass, DynFail, DynError
	reaction string // of the kernel-memory-limit run, for passes
	kind     string // guest.KindRunc unless set
}

// One boot checks every writer the host mode catches and the nokmem builds
// (and a dynamically linked one, whose libraries the initramfs carries):
// each VM boot costs seconds under TCG, so they share it.
func TestVMCatchesWritersAndPassesNokmem(t *testing.T) {
	requireVM(t)
	r := fixtureRepo(t)
	var cases []vmCase
	add := func(name, version string, tags []string, patched bool, link, status, reaction string, disable ...string) {
		cases = append(cases, vmCase{name: name, path: r.BuildRuncLinked(t, version, tags, patched, link), status: status, reaction: reaction, disable: disable})
	}
	add("rc9-default", "v1.0.0-rc9", []string{"seccomp"}, false, fixture.LinkPureGo, verify.DynFail, "")
	add("rc92-default-dirfd", "v1.0.0-rc92", []string{"seccomp"}, false, fixture.LinkPureGo, verify.DynFail, "")
	add("rc5-tag-unpatched", "v1.0.0-rc5", []string{"seccomp", "nokmem"}, false, fixture.LinkPureGo, verify.DynFail, "")
	add("rc8-nokmem-hack", "v1.0.0-rc8", []string{"seccomp", "nokmem"}, false, fixture.LinkPureGo, verify.DynFail, "")
	add("rc9-nokmem-static", "v1.0.0-rc9", []string{"seccomp", "nokmem"}, false, fixture.LinkStatic, verify.DynPass, "refused")
	add("rc5-patched", "v1.0.0-rc5", []string{"seccomp"}, true, fixture.LinkPureGo, verify.DynPass, "refused")
	add("rc9-nokmem-dynamic", "v1.0.0-rc9", []string{"seccomp", "nokmem"}, false, fixture.LinkDynamic, verify.DynPass, "refused")
	add("rc9-nokmem-no-fanotify", "v1.0.0-rc9", []string{"seccomp", "nokmem"}, false, fixture.LinkPureGo, verify.DynError, "", "fanotify")
	for _, w := range routeWriters(t) {
		cases = append(cases, vmCase{name: filepath.Base(w), path: w, status: verify.DynFail})
	}
	probes := map[string]string{"probe-ok": verify.DynPass, "probe-writer": verify.DynFail}
	for _, name := range []string{"probe-ok", "probe-writer"} {
		cases = append(cases, vmCase{name: name, path: filepath.Join(writerDir, name), status: probes[name], kind: guest.KindProbe})
	}
	var bins []Binary
	for _, c := range cases {
		kind := guest.KindRunc
		if c.kind != "" {
			kind = c.kind
		}
		bins = append(bins, Binary{Name: c.name, Path: c.path, Kind: kind, Disable: c.disable})
	}
	// Booted with the job in the initramfs, and restored from a snapshot
	// with the job sent through the channel (what a check does by default).
	t.Run("booted", func(t *testing.T) {
		tmp := t.TempDir()
		checkBatch(t, testVerifier(t, tmp), bins, cases, "booted")
		assertEmpty(t, tmp)
	})
	t.Run("restored", func(t *testing.T) {
		tmp := t.TempDir()
		v := warmVerifier(t, tmp, sharedCache())
		// The first check of a cache boots and saves.
		if _, err := v.Check(context.Background(), bins[:1]); err != nil {
			t.Fatal(err)
		}
		checkBatch(t, v, bins, cases, "restored from a snapshot")
		assertEmpty(t, tmp)
	})
}

func checkBatch(t *testing.T, v *Verifier, bins []Binary, cases []vmCase, how string) {
	boot, err := v.Check(context.Background(), bins)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel %s (%s), %s, %s, %d binaries in %s (guest uptime %.1fs)", boot.Kernel.Path, boot.Result.Caps.Kernel, boot.Accel, boot.How, len(bins), boot.Wall, boot.Result.Uptime)
	if boot.How != how {
		t.Errorf("the VM was %s, not %s (%v)", boot.How, how, boot.Notes)
	}
	for i, c := range cases {
		d := boot.Result.Items[i].Dynamic
		t.Run(c.name, func(t *testing.T) {
			if d.Status != c.status {
				t.Fatalf("status %s (%s), want %s", d.Status, d.Reason, c.status)
			}
			// The check ran in the guest, self-test first.
			if d.Kernel != boot.Result.Caps.Kernel || d.Mount != "/sys/fs/cgroup/memory" {
				t.Errorf("kernel %q mount %q: not the guest's", d.Kernel, d.Mount)
			}
			if len(d.SelfTest) != 2 {
				t.Fatalf("self-test: %+v", d.SelfTest)
			}
			for _, st := range d.SelfTest {
				off := len(c.disable) > 0 && c.disable[0] == st.Detector
				if st.Caught == off {
					t.Errorf("self-test %s caught=%v with disabled=%v", st.Detector, st.Caught, c.disable)
				}
				for _, e := range st.Events {
					if !strings.HasPrefix(e.Path, "/sys/fs/cgroup/memory/nokmem-selftest-") {
						t.Errorf("self-test event outside the guest's scratch cgroup: %+v", e)
					}
				}
			}
			switch c.status {
			case verify.DynFail:
				// Both detectors, each on its own, with the write as evidence.
				seen := map[string]bool{}
				for _, run := range d.Runs {
					for _, e := range run.Events {
						seen[e.Detector] = true
						if !strings.HasSuffix(e.Path, "/"+verify.KmemFile) || e.Pid <= 0 || !strings.HasPrefix(e.Path, "/sys/fs/cgroup/memory/nokmem-verify-") {
							t.Errorf("bad evidence %+v", e)
						}
					}
				}
				if !seen["ptrace"] || !seen["fanotify"] {
					t.Errorf("detectors that saw the write: %v (%s)", seen, d.Reason)
				}
			case verify.DynPass:
				if c.kind == guest.KindProbe {
					if len(d.Runs) != 1 || !d.Runs[0].CgroupCreated || !d.Runs[0].Finished {
						t.Errorf("probe run: %+v", d.Runs)
					}
					return
				}
				if len(d.Runs) != 2 || !d.Runs[0].CgroupCreated || d.Runs[0].MemoryLimit != "67108864" || !strings.HasPrefix(d.Runs[1].Reaction, c.reaction) {
					t.Errorf("runs: %+v", d.Runs)
				}
			case verify.DynError:
				if !strings.Contains(d.Reason, "self-test") {
					t.Errorf("reason %q", d.Reason)
				}
			}
		})
	}
}

// The route writers are caught by the host mode too: the VM mode is no
// weaker, and no stronger, than what it stands in for.
func TestHostCatchesTheRouteWriters(t *testing.T) {
	testenv.RequireDynamic(t)
	for _, w := range routeWriters(t) {
		t.Run(filepath.Base(w), func(t *testing.T) {
			d := verify.DynamicRunc(context.Background(), w, verify.DynamicOptions{TempDir: t.TempDir()})
			if d.Status != verify.DynFail {
				t.Fatalf("host: %s: %s", d.Status, d.Reason)
			}
		})
	}
}

// assertEmpty: the VM mode leaves no file behind in its temp dir.
func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		t.Errorf("left behind in %s: %s", dir, e.Name())
	}
}
