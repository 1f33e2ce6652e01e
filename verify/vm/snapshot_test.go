package vm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nokmem/nokmem/internal/fixture"
	"github.com/nokmem/nokmem/internal/owner"
	"github.com/nokmem/nokmem/verify"
	"github.com/nokmem/nokmem/verify/guest"
)

// The first check of an empty cache boots, saves the guest as a snapshot
// named by its sha256, and gives the job to that VM; the next restores it
// and catches a default build; a damaged snapshot is refused before its
// guest runs, removed, and replaced by a new boot.
func TestVMSnapshot(t *testing.T) {
	requireVM(t)
	r := fixtureRepo(t)
	nokmem := r.BuildRuncLinked(t, "v1.0.0-rc9", []string{"seccomp", "nokmem"}, false, fixture.LinkStatic)
	writer := r.BuildRuncLinked(t, "v1.0.0-rc9", []string{"seccomp"}, false, fixture.LinkPureGo)
	tmp, cache := t.TempDir(), t.TempDir()
	v := warmVerifier(t, tmp, cache)
	check := func(bin, how, status string) *Boot {
		t.Helper()
		boot, err := v.Check(context.Background(), []Binary{{Name: "runc", Path: bin, Kind: guest.KindRunc}})
		if err != nil {
			t.Fatal(err)
		}
		d := boot.Result.Items[0].Dynamic
		t.Logf("%s in %s: %s: %s", boot.How, boot.Wall, d.Status, d.Reason)
		if boot.How != how || d.Status != status {
			t.Fatalf("%s, %s; want %s, %s (notes %v)", boot.How, d.Status, how, status, boot.Notes)
		}
		if len(d.SelfTest) != 2 || !d.SelfTest[0].Caught || !d.SelfTest[1].Caught {
			t.Errorf("self-test %+v", d.SelfTest)
		}
		return boot
	}
	snapshotOK := func() string {
		t.Helper()
		snaps, _ := filepath.Glob(filepath.Join(cache, "*"+snapshotSuffix))
		if len(snaps) != 1 {
			t.Fatalf("snapshots %v", snaps)
		}
		f, err := os.Open(snaps[0])
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		key, _, _ := parseSnapshotName(filepath.Base(snaps[0]))
		sum, err := snapshotDigest(key, f)
		if err != nil || !strings.HasSuffix(snaps[0], "."+sum+snapshotSuffix) {
			t.Fatalf("%s has digest %s", snaps[0], sum)
		}
		return snaps[0]
	}

	check(nokmem, "booted and saved as a snapshot", verify.DynPass)
	snap := snapshotOK()
	boot := check(writer, "restored from a snapshot", verify.DynFail)
	for _, run := range boot.Result.Items[0].Dynamic.Runs {
		for _, e := range run.Events {
			if !strings.HasSuffix(e.Path, "/"+verify.KmemFile) {
				t.Errorf("evidence %+v", e)
			}
		}
	}
	// The restored guest's clock is the host's, not the template's.
	if d := time.Since(v.lastJobTime(t, boot)); d < 0 || d > time.Minute {
		t.Errorf("guest clock off by %s", d)
	}

	// Damaged: a flipped byte in the guest's memory (QEMU restores it, the
	// digest does not match), its first byte (QEMU refuses the stream), cut
	// short. Each is removed and replaced by a boot, with the right verdict.
	for _, c := range []struct {
		name   string
		damage func(b []byte) []byte
		note   string
	}{
		{"flipped byte in the middle", func(b []byte) []byte { b[len(b)/2] ^= 0x40; return b }, "the snapshot is damaged"},
		{"first byte", func(b []byte) []byte { b[0] = 0; return b }, "QEMU could not restore it"},
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }, "did not restore"},
	} {
		b, err := os.ReadFile(snap)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(snap, c.damage(b), 0o600); err != nil {
			t.Fatal(err)
		}
		boot = check(writer, "booted and saved as a snapshot", verify.DynFail)
		if notes := strings.Join(boot.Notes, "; "); !strings.Contains(notes, c.note) || !strings.Contains(notes, "and was removed") {
			t.Errorf("%s: notes: %s", c.name, notes)
		}
		snap = snapshotOK()
	}
	check(nokmem, "restored from a snapshot", verify.DynPass)
	if left, _ := filepath.Glob(filepath.Join(cache, snapshotTempPrefix+"*")); len(left) > 0 {
		t.Errorf("left in the cache: %v", left)
	}
	assertEmpty(t, tmp)
}

// lastJobTime is the guest's clock once it had its job, as it printed it.
func (v *Verifier) lastJobTime(t *testing.T, boot *Boot) time.Time {
	t.Helper()
	for _, line := range strings.Split(boot.Console, "\n") {
		if _, rest, ok := strings.Cut(line, "guest clock "); ok {
			ts, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(rest))
			if err != nil {
				t.Fatalf("guest clock line %q: %v", line, err)
			}
			return ts
		}
	}
	t.Fatalf("no guest clock on the console:\n%s", consoleTail(boot.Console))
	return time.Time{}
}

// A check cancelled while the template boots or is saved, or while the
// restored guest runs, is an error that says so; no QEMU and no snapshot
// being written are left.
func TestVMSnapshotCancelled(t *testing.T) {
	requireVM(t)
	bin := routeWriters(t)[0]
	for _, at := range []string{guest.ReadyLine, guest.JobLine} {
		t.Run(at, func(t *testing.T) {
			tmp, cache := t.TempDir(), t.TempDir()
			v := warmVerifier(t, tmp, cache)
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			v.Console = &cancelAt{line: at, cancel: func() { cancel(fmt.Errorf("test: cancelled at %q", at)) }}
			boot, err := v.Check(ctx, []Binary{{Name: "runc", Path: bin, Kind: guest.KindRunc}})
			if err == nil || !strings.Contains(err.Error(), "vm: cancelled (test: cancelled at") {
				t.Fatalf("err = %v", err)
			}
			t.Logf("%v", firstLine(err.Error()))
			if pids := qemuProcesses(t, boot.Args); len(pids) > 0 {
				t.Errorf("QEMU still runs: %v", pids)
			}
			if left, _ := filepath.Glob(filepath.Join(cache, snapshotTempPrefix+"*")); len(left) > 0 {
				t.Errorf("left in the cache: %v", left)
			}
			assertEmpty(t, tmp)
		})
	}
}

// cancelAt calls cancel once the console has shown line.
type cancelAt struct {
	mu     sync.Mutex
	buf    strings.Builder
	line   string
	cancel func()
	done   bool
}

func (c *cancelAt) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	if !c.done && strings.Contains(c.buf.String(), c.line) {
		c.done = true
		c.cancel()
	}
	return len(p), nil
}

func TestSnapshotKey(t *testing.T) {
	dir := t.TempDir()
	qemu, kernel := filepath.Join(dir, "qemu"), filepath.Join(dir, "vmlinuz")
	os.WriteFile(qemu, []byte("q"), 0o755)
	os.WriteFile(kernel, []byte("k"), 0o644)
	args := func(name, accel string) []string {
		return append(qemuArgs(qemu, name, kernel, accel, nil), channelArgs()...)
	}
	key := func(a []string, initramfs string) string {
		k, err := snapshotKey(a, []byte(initramfs), qemu, kernel)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	base := key(args("nokmem-verify-a", "tcg"), "init")
	if key(args("nokmem-verify-b", "tcg"), "init") != base {
		t.Error("the VM's name changed the key")
	}
	if key(args("nokmem-verify-a", "kvm"), "init") == base {
		t.Error("another accelerator, the same key")
	}
	if key(args("nokmem-verify-a", "tcg"), "other init") == base {
		t.Error("another /init, the same key")
	}
	if key(append(args("nokmem-verify-a", "tcg"), "-append", "x"), "init") == base {
		t.Error("another command line, the same key")
	}
	// A kernel package update: the same path, another file.
	later := time.Now().Add(time.Hour)
	os.Chtimes(kernel, later, later)
	if key(args("nokmem-verify-a", "tcg"), "init") == base {
		t.Error("another kernel file, the same key")
	}
	if _, err := snapshotKey(args("n", "tcg"), nil, filepath.Join(dir, "gone")); err == nil {
		t.Error("a missing file gave a key")
	}
}

func TestFindAndPruneSnapshots(t *testing.T) {
	dir := t.TempDir()
	k := func(c string) string { return strings.Repeat(c, 32) }
	sum := func(c string) string { return strings.Repeat(c, 64) }
	touch := func(name string, age time.Duration) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte("s"), 0o600)
		when := time.Now().Add(-age)
		os.Chtimes(p, when, when)
		return p
	}
	foreign := touch("junk"+snapshotSuffix, -1000*time.Hour) // not nokmem's: never counted or removed
	older := touch(k("1")+"."+sum("a")+snapshotSuffix, 2*time.Hour)
	newer := touch(k("1")+"."+sum("b")+snapshotSuffix, time.Hour)
	if s, ok := findSnapshot(dir, k("1")); !ok || s.path != newer || s.sum != sum("b") {
		t.Errorf("found %+v %v", s, ok)
	}
	if _, ok := findSnapshot(dir, k("2")); ok {
		t.Error("found a snapshot for another key")
	}
	// Not this user's alone: left out.
	os.Chmod(newer, 0o666)
	if s, _ := findSnapshot(dir, k("1")); s.path != older {
		t.Errorf("a snapshot others can write was found: %+v", s)
	}
	os.Chmod(newer, 0o600)
	k2 := touch(k("2")+"."+sum("a")+snapshotSuffix, 3*time.Hour)
	k3 := touch(k("3")+"."+sum("a")+snapshotSuffix, 4*time.Hour)
	// The current one stays whatever the clock says; one per key; two in all.
	pruneSnapshots(dir, k3, 2)
	var left []string
	for _, p := range []string{foreign, older, newer, k2, k3} {
		if _, err := os.Stat(p); err == nil {
			left = append(left, filepath.Base(p)[:4])
		}
	}
	if strings.Join(left, ",") != "junk,1111,3333" {
		t.Errorf("left %v", left)
	}
}

// The cache directory and its snapshots must be this user's alone; a cache
// path with glob characters in it is a path like any other.
func TestSnapshotCacheTrust(t *testing.T) {
	base := filepath.Join(t.TempDir(), "gl[ab]")
	other := filepath.Join(filepath.Dir(base), "gla")
	os.MkdirAll(other, 0o700)
	key := strings.Repeat("1", 32)
	elsewhere := filepath.Join(other, key+"."+strings.Repeat("a", 64)+snapshotSuffix)
	os.WriteFile(elsewhere, []byte("s"), 0o600)
	if err := cacheDir(base); err != nil {
		t.Fatal(err)
	}
	if _, ok := findSnapshot(base, key); ok {
		t.Error("found a snapshot in another directory")
	}
	pruneSnapshots(base, "", 0)
	if _, err := os.Stat(elsewhere); err != nil {
		t.Error("pruned a file in another directory")
	}
	// Narrowed to 0700 when it is this user's.
	os.Chmod(base, 0o777)
	if err := cacheDir(base); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(base); st.Mode().Perm() != 0o700 {
		t.Errorf("mode %v", st.Mode().Perm())
	}
	// A FIFO, a link: never opened.
	fifo := filepath.Join(base, key+"."+strings.Repeat("b", 64)+snapshotSuffix)
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, key+"."+strings.Repeat("c", 64)+snapshotSuffix)
	os.Symlink(elsewhere, link)
	if s, ok := findSnapshot(base, key); ok {
		t.Errorf("found %+v", s)
	}
	for _, p := range []string{fifo, link} {
		if _, _, err := (snapshot{path: p}).open(key); err == nil {
			t.Errorf("opened %s", p)
		}
	}
	// A snapshot renamed to another key does not check out.
	content := []byte("guest memory")
	sum, _ := snapshotDigest(key, bytes.NewReader(content))
	other2 := strings.Repeat("2", 32)
	renamed := filepath.Join(base, other2+"."+sum+snapshotSuffix)
	os.WriteFile(renamed, content, 0o600)
	f, c, err := (snapshot{path: renamed, sum: sum}).open(other2)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if d := <-c; d.err != nil || d.sum == sum {
		t.Errorf("a renamed snapshot checks out: %+v", d)
	}
	if os.Geteuid() == 0 {
		// Another user's directory is refused, not narrowed.
		theirs := filepath.Join(t.TempDir(), "theirs")
		os.Mkdir(theirs, 0o777)
		os.Chown(theirs, 65534, 65534)
		if err := cacheDir(theirs); err == nil || !strings.Contains(err.Error(), "another user") {
			t.Errorf("another user's cache: %v", err)
		}
	}
}

// A snapshot being written by a process that died is removed by the next
// check; one of a live process is left alone.
func TestReapSnapshotTemps(t *testing.T) {
	dir := t.TempDir()
	dead := owner.Self()
	dead.Start++
	deadTemp := filepath.Join(dir, snapshotTempPrefix+dead.String()+"-123")
	liveTemp := filepath.Join(dir, snapshotTempPrefix+owner.Self().String()+"-456")
	for _, p := range []string{deadTemp, liveTemp} {
		os.WriteFile(p, []byte("partial"), 0o600)
	}
	if got := reapOwned(dir, snapshotTempPrefix); len(got) != 1 || got[0] != deadTemp {
		t.Errorf("reaped %v", got)
	}
	if _, err := os.Stat(liveTemp); err != nil {
		t.Errorf("a live process's snapshot was removed: %v", err)
	}
}
