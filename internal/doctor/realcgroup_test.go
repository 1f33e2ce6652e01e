package doctor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nokmem/nokmem/internal/testenv"
	"github.com/nokmem/nokmem/verify"
)

// helperEnv makes the test binary a helper process: it waits until it
// has been moved into a cgroup, allocates kernel memory there, reports,
// and waits for its stdin to close.
const helperEnv = "NOKMEM_DOCTOR_TEST_HELPER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		os.Exit(helper(dir))
	}
	os.Exit(m.Run())
}

func helper(dir string) int {
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return 1
	}
	// Kernel objects charged to the task's memory cgroup: dentries and
	// inodes of new files, open files, pipes, a child's kernel stack.
	var keep []*os.File
	for i := 0; i < 200; i++ {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("f%d", i)))
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		keep = append(keep, f)
		r, w, err := os.Pipe()
		if err == nil {
			keep = append(keep, r, w)
		}
	}
	if err := exec.Command("/bin/true").Run(); err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("done")
	io.Copy(io.Discard, in)
	for _, f := range keep {
		f.Close()
	}
	return 0
}

// One test on this machine's real cgroup v1 memory hierarchy: two cgroups
// of our own, kmem accounting turned on in one the way runc does (write 1,
// then -1, to memory.kmem.limit_in_bytes), a task allocating kernel memory
// in each, and the doctor reading them. What the kernel lets us see is
// measured and logged; the assertions follow the kernel's kmem model:
//
//   - opt-in (before 4.6, EL7's 3.10): slabinfo fails with EIO until the
//     write and is readable after; only the written cgroup is active.
//   - always (4.6 and later, this project's 6.18 machines): the write is
//     accepted and changes nothing visible (the limit still reads as
//     unlimited); both cgroups charge kernel memory, the doctor counts
//     both as active by the kernel's own doing, and says the node is not
//     exposed.
func TestRealCgroupV1(t *testing.T) {
	testenv.RequireDynamic(t)
	mem, err := verify.MemoryMount()
	if err != nil {
		t.Fatal(err)
	}
	kv := parseKernel(verify.KernelRelease())
	model := modelAlways
	if kv.before(4, 6) {
		model = modelOptIn
	}
	name := fmt.Sprintf("nokmem-doctor-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	parent := filepath.Join(mem, name)
	written, plain := filepath.Join(parent, "written"), filepath.Join(parent, "plain")
	var helpers []*exec.Cmd
	t.Cleanup(func() {
		for _, h := range helpers {
			if h.Process != nil {
				h.Process.Kill()
				h.Wait()
			}
		}
		for _, d := range []string{written, plain, parent} {
			var err error
			for i := 0; i < 50; i++ {
				if err = syscall.Rmdir(d); err == nil || errors.Is(err, syscall.ENOENT) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil && !errors.Is(err, syscall.ENOENT) {
				t.Errorf("remove cgroup %s: %v", d, err)
			}
		}
	})
	for _, d := range []string{parent, written, plain} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	n := &node{root: "/", readFile: os.ReadFile}
	before := n.inspectCgroup(written, "/written")
	limitFile := filepath.Join(written, verify.KmemFile)
	var writes []string
	for _, v := range []string{"1", "-1"} { // runc's EnableKernelMemoryAccounting
		if err := os.WriteFile(limitFile, []byte(v), 0o644); err != nil {
			writes = append(writes, fmt.Sprintf("write %s: %v", v, err))
		} else {
			writes = append(writes, fmt.Sprintf("write %s: accepted", v))
		}
	}
	afterWrite := n.inspectCgroup(written, "/written")
	t.Logf("kernel %s (%s model); %s: %s", kv.Raw, model, verify.KmemFile, strings.Join(writes, ", "))
	t.Logf("written, before the write: slabinfo %s (%d caches), usage %s, limit %s", before.Slabinfo, before.SlabCaches, show(before.Usage), show(before.Limit))
	t.Logf("written, after the write:  slabinfo %s (%d caches), usage %s, limit %s", afterWrite.Slabinfo, afterWrite.SlabCaches, show(afterWrite.Usage), show(afterWrite.Limit))

	// A task in each cgroup allocates kernel memory.
	for _, cg := range []string{written, plain} {
		h := exec.Command(os.Args[0], "-test.run=^$")
		h.Env = append(os.Environ(), helperEnv+"="+t.TempDir())
		stdin, err := h.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := h.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Start(); err != nil {
			t.Fatal(err)
		}
		helpers = append(helpers, h)
		if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(h.Process.Pid)), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(stdin, "go")
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || line != "done\n" {
			t.Fatalf("helper in %s: %q %v", cg, line, err)
		}
		t.Cleanup(func() { stdin.Close() })
	}
	w := n.inspectCgroup(written, "/written")
	p := n.inspectCgroup(plain, "/plain")
	t.Logf("written, with a task: slabinfo %s (%d caches), usage %s, max %s, failcnt %s, limit %s", w.Slabinfo, w.SlabCaches, show(w.Usage), show(w.MaxUsage), show(w.Failcnt), show(w.Limit))
	t.Logf("plain, with a task:   slabinfo %s (%d caches), usage %s, max %s, failcnt %s, limit %s", p.Slabinfo, p.SlabCaches, show(p.Usage), show(p.MaxUsage), show(p.Failcnt), show(p.Limit))

	// The doctor on the real root: our subtree is walked.
	r, err := Run(context.Background(), Options{Root: "/", Logs: []LogSource{KmsgSource("/dev/kmsg")}, Static: noStatic})
	if err != nil {
		t.Fatal(err)
	}
	var sub *Subtree
	for i := range r.Kmem.BySubtree {
		if r.Kmem.BySubtree[i].Name == name {
			sub = &r.Kmem.BySubtree[i]
		}
	}
	if r.Exposure.KmemModel != model || sub == nil || sub.Walked != 3 {
		t.Fatalf("model %s (want %s), our subtree %+v", r.Exposure.KmemModel, model, sub)
	}
	t.Logf("doctor on /: status %s, kmem model %s, exposed %v, %d cgroups walked, %d active; our subtree %d/%d active", r.Status, r.Exposure.KmemModel, r.Exposure.Exposed, r.Kmem.Walked, r.Kmem.Active, sub.Active, sub.Walked)
	deprecated := 0
	for _, ev := range r.Leak.Logs {
		deprecated += ev.KmemDeprecated
	}
	t.Logf("kernel log: %d kmem deprecation notices this boot (printed once per boot, on the first write)", deprecated)

	// The doctor on a root holding only our subtree as its memory
	// hierarchy: it reports each of our cgroups.
	f := newFixture(t)
	for _, p := range []string{"/proc/sys/kernel/osrelease", "/proc/cgroups", "/proc/cmdline"} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		f.write(p, string(b))
	}
	f.write("/proc/self/mountinfo", "32 24 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
	f.symlink(parent, "/sys/fs/cgroup/memory")
	ro := Options{Root: f.root, Logs: []LogSource{}, Static: noStatic}
	rr, err := Run(context.Background(), ro)
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]CgroupKmem{}
	for _, c := range rr.Kmem.Top {
		states[c.Path] = c
	}
	t.Logf("doctor on our subtree: walked %d, active %d, inactive %d, undetermined %d, top %v", rr.Kmem.Walked, rr.Kmem.Active, rr.Kmem.Inactive, rr.Kmem.Undetermined, states)

	switch model {
	case modelOptIn:
		if before.Slabinfo != "eio" || afterWrite.Slabinfo != "readable" {
			t.Errorf("3.10 semantics: slabinfo %s before the write, %s after; want eio, readable", before.Slabinfo, afterWrite.Slabinfo)
		}
		if p.Slabinfo != "eio" || val(p.Usage) != 0 || val(w.Usage) == 0 {
			t.Errorf("only the written cgroup charges kernel memory: plain %s/%s, written usage %s", p.Slabinfo, show(p.Usage), show(w.Usage))
		}
		if rr.Kmem.Active != 1 || rr.Kmem.Inactive != 1 || states["/written"].State != "active" || sub.Active != 1 || !r.Exposure.Exposed {
			t.Errorf("the doctor must count the written cgroup, only it, as active on an exposed node: %+v", rr.Kmem)
		}
	default:
		if afterWrite.Slabinfo != before.Slabinfo || afterWrite.Limit != nil || before.Limit != nil {
			t.Errorf("the write should change nothing visible here: slabinfo %s -> %s, limit %s -> %s", before.Slabinfo, afterWrite.Slabinfo, show(before.Limit), show(afterWrite.Limit))
		}
		if val(w.Usage) == 0 || val(p.Usage) == 0 {
			t.Errorf("this kernel accounts kernel memory in every cgroup: usage written %s, plain %s", show(w.Usage), show(p.Usage))
		}
		// On the real root our parent cgroup counts too: 3 of 3.
		if rr.Kmem.Active != 2 || states["/written"].State != "active" || states["/plain"].State != "active" || sub.Active != 3 || r.Exposure.Exposed || rr.Status != StatusOK {
			t.Errorf("the doctor must count both as active by the kernel's doing, and the node as not exposed: %+v, status %s", rr.Kmem, rr.Status)
		}
	}
}

func show(p *uint64) string {
	if p == nil {
		return "n/a"
	}
	return strconv.FormatUint(*p, 10)
}

// noStatic keeps the real-cgroup test from reading the machine's binaries.
func noStatic(string) (*verify.StaticResult, error) {
	return &verify.StaticResult{Verdict: verify.Unknown}, nil
}
