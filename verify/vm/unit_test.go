package vm

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"github.com/nokmem/nokmem/internal/digest"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cavaliergopher/cpio"

	"github.com/nokmem/nokmem/verify"
	"github.com/nokmem/nokmem/verify/guest"
)

func TestReportFraming(t *testing.T) {
	r := &guest.Result{Caps: guest.Caps{Kernel: "3.10.0-1160.el7.x86_64", MemoryMount: "/sys/fs/cgroup/memory", KmemFile: true},
		Items: []guest.ItemResult{{Name: "runc", SHA256: "ab", Dynamic: &verify.DynamicResult{Status: verify.DynPass, Reason: strings.Repeat("x", 500)}}}}
	var buf bytes.Buffer
	buf.WriteString("[    1.0] kernel noise\n")
	if err := guest.WriteReport(&buf, "n1", r); err != nil {
		t.Fatal(err)
	}
	// A serial port turns \n into \r\n.
	out := bytes.ReplaceAll(buf.Bytes(), []byte("\n"), []byte("\r\n"))
	got, err := guest.ReadReport(out, "n1")
	if err != nil || got.Caps.Kernel != r.Caps.Kernel || got.Items[0].Dynamic.Reason != r.Items[0].Dynamic.Reason {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if _, err := guest.ReadReport(out, "other-nonce"); !errors.Is(err, guest.ErrNoReport) {
		t.Errorf("another boot's report was read: %v", err)
	}
	lines := strings.Split(string(out), "\r\n")
	lines[3] = strings.Replace(lines[3], "A", "B", 1)
	if _, err := guest.ReadReport([]byte(strings.Join(lines, "\n")), "n1"); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("a damaged report was read: %v", err)
	}
	if _, err := guest.ReadReport(out[:len(out)/2], "n1"); err == nil || !strings.Contains(err.Error(), "cut short") {
		t.Errorf("a cut report was read: %v", err)
	}
}

// A kernel is refused with what it lacks; the guest reports the facts and
// the host judges them (here without a boot: a kernel without fanotify).
func TestCapsProblems(t *testing.T) {
	fit := guest.Caps{Kernel: "6.1.0", MemoryMount: "/sys/fs/cgroup/memory", KmemFile: true}
	cases := []struct {
		name string
		caps guest.Caps
		want string
	}{
		{"fit", fit, ""},
		{"no fanotify", func() guest.Caps { c := fit; c.Fanotify = "fanotify_init: function not implemented"; return c }(), "the kernel needs CONFIG_FANOTIFY"},
		{"no kmem", func() guest.Caps { c := fit; c.KmemFile = false; return c }(), "needs CONFIG_MEMCG_KMEM"},
		{"no memory v1", guest.Caps{Kernel: "6.12", MountErrors: map[string]string{"memory": "invalid argument"}}, "mount -t cgroup -o memory failed: invalid argument"},
		{"setup", func() guest.Caps {
			c := fit
			c.SetupErrors = []string{"mount -t devtmpfs /dev: no such device"}
			return c
		}(), "devtmpfs"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := strings.Join(c.caps.Problems(), "; ")
			if (c.want == "") != (p == "") || !strings.Contains(p, c.want) {
				t.Fatalf("problems %q, want %q", p, c.want)
			}
		})
	}
}

func TestFindKernel(t *testing.T) {
	boot := t.TempDir()
	fitConfig := "CONFIG_BLK_DEV_INITRD=y\nCONFIG_RD_GZIP=y\nCONFIG_DEVTMPFS=y\nCONFIG_SERIAL_8250_CONSOLE=y\nCONFIG_MEMCG=y\nCONFIG_MEMCG_KMEM=y\nCONFIG_FANOTIFY=y\n"
	write := func(name, content string) string {
		p := filepath.Join(boot, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("vmlinuz-3.10.0-1160.el7.x86_64", "k")
	write("config-3.10.0-1160.el7.x86_64", fitConfig)
	write("vmlinuz-6.1.0-56-cloud-amd64", "k")
	write("config-6.1.0-56-cloud-amd64", fitConfig)
	write("vmlinuz-6.12.0-1-amd64", "k")
	write("config-6.12.0-1-amd64", fitConfig+"# CONFIG_MEMCG_V1 is not set\n")
	write("vmlinuz-7.0.0-nocfg", "k")
	k, err := FindKernel("", boot)
	if err != nil || k.Release != "6.1.0-56-cloud-amd64" || k.Config == "" {
		t.Fatalf("picked %+v, %v", k, err)
	}
	// A kernel whose config rules it out is refused with what it lacks.
	bad := write("vmlinuz-5.10.0-nofan", "k")
	write("config-5.10.0-nofan", strings.Replace(fitConfig, "CONFIG_FANOTIFY=y", "# CONFIG_FANOTIFY is not set", 1))
	if _, err := FindKernel(bad, boot); err == nil || !strings.Contains(err.Error(), "NOKMEM_VM_KERNEL") || !strings.Contains(err.Error(), "CONFIG_FANOTIFY (not set)") {
		t.Errorf("err = %v", err)
	}
	if _, err := FindKernel(filepath.Join(boot, "vmlinuz-missing"), boot); err == nil || !strings.Contains(err.Error(), "NOKMEM_VM_KERNEL") {
		t.Errorf("err = %v", err)
	}
	el7, err := FindKernel(filepath.Join(boot, "vmlinuz-3.10.0-1160.el7.x86_64"), boot)
	if err != nil || el7.Release != "3.10.0-1160.el7.x86_64" {
		t.Errorf("EL7 kernel: %+v %v", el7, err)
	}
	if _, err := FindKernel("", t.TempDir()); err == nil || !strings.Contains(err.Error(), "linux-image-cloud-amd64") {
		t.Errorf("empty /boot: %v", err)
	}
	if k, _ := KernelFromPath(filepath.Join(boot, "vmlinuz-6.12.0-1-amd64")); !slices.Contains(k.Missing, "CONFIG_MEMCG_V1 (not set)") {
		t.Errorf("6.12 without CONFIG_MEMCG_V1: %+v", k)
	}
}

func TestQEMUArgs(t *testing.T) {
	tcg := strings.Join(qemuArgs("qemu", "n", "/k", "tcg", []string{"cgroup_no_v1=memory"}), " ")
	for _, want := range []string{"-accel tcg -cpu max", "-m 512 -smp 2", "-nographic -no-reboot", "-kernel /k -initrd /dev/fd/3",
		"-append console=ttyS0 quiet panic=-1 rdinit=/init cgroup_no_v1=memory", "-serial stdio -serial file:/dev/fd/4"} {
		if !strings.Contains(tcg, want) {
			t.Errorf("%q lacks %q", tcg, want)
		}
	}
	if kvm := strings.Join(qemuArgs("qemu", "n", "/k", "kvm", nil), " "); !strings.Contains(kvm, "-accel kvm -cpu host") {
		t.Errorf("%q", kvm)
	}
}

// The initramfs holds /init, the job and each binary with, for a
// dynamically linked one, its interpreter and libraries; parents come
// before their entries, and no two files share an inode.
func TestInitramfsContents(t *testing.T) {
	dyn := "/bin/true" // dynamically linked on every distribution
	files := []file{{Name: "/init", Mode: 0o755, Data: []byte("init")}, {Name: guest.JobFile, Mode: 0o644, Data: []byte("{}")}}
	bf, err := binaryFiles(dyn, guest.BinDir, "runc")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, bf...)
	var buf bytes.Buffer
	if err := writeInitramfs(&buf, files); err != nil {
		t.Fatal(err)
	}
	entries := readInitramfs(t, buf.Bytes())
	seen := map[string]bool{}
	inodes := map[int64]string{}
	for _, h := range entries {
		if dir := filepath.Dir("/" + h.Name); dir != "/" && !seen[dir] {
			t.Errorf("%s before its directory", h.Name)
		}
		seen["/"+h.Name] = true
		if other, dup := inodes[h.Inode]; dup {
			t.Errorf("%s and %s share inode %d", h.Name, other, h.Inode)
		}
		inodes[h.Inode] = h.Name
		if h.Mode.IsRegular() && h.Links != 1 {
			t.Errorf("%s has %d links", h.Name, h.Links)
		}
	}
	want := []string{"/init", guest.JobFile, guest.BinDir + "/runc", "/dev", "/proc", "/sys", "/tmp"}
	for _, f := range bf[1:] {
		want = append(want, f.Name)
	}
	if len(bf) < 3 {
		t.Errorf("%s: no interpreter or libraries: %+v", dyn, bf)
	}
	for _, w := range want {
		if !seen[w] {
			t.Errorf("initramfs lacks %s (has %v)", w, keys(seen))
		}
	}
}

func readInitramfs(t *testing.T, b []byte) []*cpio.Header {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	r := cpio.NewReader(zr)
	var out []*cpio.Header
	for {
		h, err := r.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h)
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// fakeVM stands for QEMU: it reads the job from the initramfs it is given
// (descriptor 3, as QEMU would), and answers as the guest would, or
// misbehaves as told.
type fakeVM struct {
	console string                                    // written to the console
	answer  func(job guest.Job) *guest.Result         // nil: no report
	damage  bool                                      // corrupt the report
	ex      exit                                      // how the VM ends
	got     func(job guest.Job, files []*cpio.Header) // sees what it was given
	t       *testing.T
}

func (f *fakeVM) launch(ctx context.Context, argv []string, extra []*os.File, console io.Writer, limit time.Duration) (exit, error) {
	img, err := readAll(extra[0])
	if err != nil {
		return exit{}, err
	}
	var job guest.Job
	var hdrs []*cpio.Header
	zr, _ := gzip.NewReader(bytes.NewReader(img))
	r := cpio.NewReader(zr)
	for {
		h, err := r.Next()
		if err != nil {
			break
		}
		hdrs = append(hdrs, h)
		if "/"+h.Name == guest.JobFile {
			b, _ := io.ReadAll(r)
			json.Unmarshal(b, &job)
		}
	}
	if f.got != nil {
		f.got(job, hdrs)
	}
	io.WriteString(console, f.console)
	if f.answer != nil {
		var buf bytes.Buffer
		guest.WriteReport(&buf, job.Nonce, f.answer(job))
		b := buf.Bytes()
		if f.damage {
			b[len(b)/2] ^= 1
		}
		extra[1].Write(b)
	}
	return f.ex, nil
}

func TestCheckJudgesTheGuest(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz-6.1.0-test")
	os.WriteFile(kernel, []byte("k"), 0o644)
	bin := filepath.Join(dir, "runc")
	if err := copyTo("/bin/true", bin); err != nil { // any ELF file
		t.Fatal(err)
	}
	sum, _ := digest.File(bin)
	fit := guest.Caps{Kernel: "6.1.0-test", MemoryMount: "/sys/fs/cgroup/memory", KmemFile: true}
	pass := func(job guest.Job) *guest.Result {
		r := &guest.Result{Caps: fit}
		for _, it := range job.Items {
			r.Items = append(r.Items, guest.ItemResult{Name: it.Name, SHA256: sum, Dynamic: &verify.DynamicResult{Status: verify.DynPass, Reason: "no write"}})
		}
		return r
	}
	started := guest.StartedLine + "\n"
	cases := []struct {
		name string
		vm   fakeVM
		want string // "" : success
	}{
		{"pass", fakeVM{console: started, answer: pass}, ""},
		{"no fanotify", fakeVM{console: started, answer: func(guest.Job) *guest.Result {
			c := fit
			c.Fanotify = "fanotify_init: function not implemented"
			return &guest.Result{Caps: c}
		}}, "cannot run the dynamic check: the fanotify detector cannot watch the memory hierarchy (fanotify_init: function not implemented); the kernel needs CONFIG_FANOTIFY"},
		{"never reached /init", fakeVM{console: "Kernel panic - not syncing: VFS: Unable to mount root fs", ex: exit{State: "exit status 0"}}, "did not start the verifier as /init"},
		{"timed out", fakeVM{console: started, ex: exit{TimedOut: true, State: "signal: killed"}}, "did not power off within the time limit of 5m0s"},
		{"no report", fakeVM{console: started}, "without a usable report: no report"},
		{"damaged report", fakeVM{console: started, answer: pass, damage: true}, "without a usable report"},
		{"other bytes", fakeVM{console: started, answer: func(job guest.Job) *guest.Result {
			r := pass(job)
			r.Items[0].SHA256 = "00"
			return r
		}}, "not for " + bin},
		{"guest failure", fakeVM{console: started, answer: func(guest.Job) *guest.Result { return &guest.Result{Caps: fit, Error: "no job"} }}, "the guest failed: no job"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			vm := c.vm
			vm.got = func(job guest.Job, hdrs []*cpio.Header) {
				if len(job.Items) != 1 || job.Items[0].Name != "runc" || job.Nonce == "" || job.Deadline <= 0 || job.Deadline >= DefaultTimeout {
					t.Errorf("job %+v", job)
				}
			}
			v := &Verifier{Kernel: kernel, Init: bin, TempDir: dir, launcher: &vm, qemu: "/bin/false"}
			boot, err := v.Check(context.Background(), []Binary{{Name: "runc", Path: bin, Kind: guest.KindRunc}})
			switch {
			case c.want == "" && err != nil:
				t.Fatal(err)
			case c.want == "" && boot.Result.Items[0].Dynamic.Status != verify.DynPass:
				t.Fatalf("%+v", boot.Result)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
}

// A guest without a second serial port reports on the console.
func TestCheckReadsAReportOnTheConsole(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz-3.10.0-1160.el7.x86_64")
	os.WriteFile(kernel, []byte("k"), 0o644)
	bin := filepath.Join(dir, "runc")
	if err := copyTo("/bin/true", bin); err != nil {
		t.Fatal(err)
	}
	sum, _ := digest.File(bin)
	vm := &consoleVM{sum: sum}
	v := &Verifier{Kernel: kernel, Init: bin, TempDir: dir, launcher: vm, qemu: "/bin/false"}
	boot, err := v.Check(context.Background(), []Binary{{Name: "runc", Path: bin, Kind: guest.KindRunc}})
	if err != nil || boot.Result.Caps.Kernel != "3.10.0-1160.el7.x86_64" {
		t.Fatalf("%v %+v", err, boot)
	}
}

type consoleVM struct{ sum string }

func (c *consoleVM) launch(ctx context.Context, argv []string, extra []*os.File, console io.Writer, limit time.Duration) (exit, error) {
	img, _ := readAll(extra[0])
	zr, _ := gzip.NewReader(bytes.NewReader(img))
	r := cpio.NewReader(zr)
	var job guest.Job
	for {
		h, err := r.Next()
		if err != nil {
			break
		}
		if "/"+h.Name == guest.JobFile {
			b, _ := io.ReadAll(r)
			json.Unmarshal(b, &job)
		}
	}
	io.WriteString(console, guest.StartedLine+"\n")
	guest.WriteReport(console, job.Nonce, &guest.Result{Caps: guest.Caps{Kernel: "3.10.0-1160.el7.x86_64", MemoryMount: "/sys/fs/cgroup/memory", KmemFile: true},
		Items: []guest.ItemResult{{Name: "runc", SHA256: c.sum, Dynamic: &verify.DynamicResult{Status: verify.DynFail, Reason: "write"}}}})
	return exit{State: "exit status 0"}, nil
}
