package vm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nokmem/nokmem/internal/owner"
	"github.com/nokmem/nokmem/verify/guest"
)

// attempt is one VM run: booted (cold), or warm (restored from a snapshot,
// or booted as a template and saved on the way).
type attempt struct {
	args    []string
	ex      exit
	console string
	report  []byte
	wall    time.Duration
	how     string // "booted", "booted and saved as a snapshot", "restored from a snapshot"
	notes   []string
}

// started says whether the guest's /init ran: it printed its first line
// (a boot) or took its job (a restore).
func (a *attempt) started() bool {
	return strings.Contains(a.console, guest.StartedLine) || strings.Contains(a.console, guest.JobLine)
}

// errNoChannel: the guest has no job channel; it cannot be a template.
var errNoChannel = errors.New("no job channel")

// warm runs the job in a VM restored from the cached snapshot of this
// kernel, accelerator and /init, or, without one, boots a template, saves
// it to the cache and gives the job to that same VM. err means nothing was
// decided and the caller boots without a snapshot: the guest has no job
// channel, QEMU could neither restore nor save (notes say which). A guest
// that never started /init, a timeout or a cancellation come back as an
// attempt, judged as a boot's.
func (v *Verifier) warm(ctx context.Context, qemu string, k Kernel, accel, name string, initBin []byte, files []file, limit time.Duration) (*attempt, error) {
	var payload bytes.Buffer
	if err := writeArchive(&payload, files); err != nil {
		return nil, err
	}
	var tmpl bytes.Buffer
	if err := writeInitramfs(&tmpl, []file{{Name: "/init", Mode: 0o755, Data: initBin}, {Name: guest.JobFile, Mode: 0o644, Data: templateJob()}}); err != nil {
		return nil, err
	}
	args := append(qemuArgs(qemu, name, k.Path, accel, v.Append), channelArgs()...)
	key, err := snapshotKey(args, tmpl.Bytes(), qemu, k.Path)
	if err != nil {
		return nil, err
	}
	if err := cacheDir(v.CacheDir); err != nil {
		return nil, err
	}
	reapOwned(v.CacheDir, snapshotTempPrefix)
	deadline := time.Now().Add(limit)
	var notes []string
	if snap, ok := findSnapshot(v.CacheDir, key); ok {
		a, err := v.warmRun(ctx, key, args, tmpl.Bytes(), snap, payload.Bytes(), deadline)
		if err == nil || ctx.Err() != nil {
			used(snap.path)
			return a, err
		}
		what := "was removed"
		if rerr := os.Remove(snap.path); rerr != nil {
			what = "could not be removed: " + rerr.Error()
		}
		notes = append(notes, fmt.Sprintf("the snapshot %s did not restore (%v) and %s", snap.path, err, what))
	}
	a, err := v.warmRun(ctx, key, args, tmpl.Bytes(), snapshot{}, payload.Bytes(), deadline)
	if a != nil {
		a.notes = append(notes, a.notes...)
	}
	return a, err
}

// warmRun starts QEMU with the job channel: restoring the snapshot from
// (when it has a path), or booting the template and saving it as the
// snapshot of key; then it hands the guest its payload and waits for the
// VM to end.
func (v *Verifier) warmRun(ctx context.Context, key string, args []string, initramfs []byte, from snapshot, payload []byte, deadline time.Time) (res *attempt, err error) {
	a := &attempt{args: args, how: "booted and saved as a snapshot"}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	mem := func(name string, data []byte, size int64) (*os.File, error) {
		f, err := memfd(name)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
		if _, err := f.Write(data); err != nil {
			return nil, err
		}
		return f, f.Truncate(max(size, int64(len(data))))
	}
	initrd, err := mem("nokmem-initramfs", initramfs, 0)
	if err != nil {
		return nil, err
	}
	report, err := mem("nokmem-report", nil, 0)
	if err != nil {
		return nil, err
	}
	channel, err := mem("nokmem-job-channel", nil, ChannelMiB<<20)
	if err != nil {
		return nil, err
	}
	qemuEnd, q, err := newQMP(ctx, deadline)
	if err != nil {
		return nil, err
	}
	defer q.Close()
	files = append(files, qemuEnd)
	extra := []*os.File{initrd, report, channel, qemuEnd}
	var streamed <-chan digestResult
	if from.path != "" {
		a.how = "restored from a snapshot"
		a.args = append(append([]string(nil), args...), "-incoming", "fd:7")
		r, c, err := from.open(key)
		if err != nil {
			return nil, err
		}
		files = append(files, r)
		extra = append(extra, r)
		streamed = c
	}

	console := &tail{max: 8 << 20, watch: guest.ReadyLine, seen: make(chan struct{})}
	var out io.Writer = console
	if v.Console != nil {
		out = io.MultiWriter(console, v.Console)
	}
	start := time.Now()
	p, err := startVM(a.args, extra, out)
	if err != nil {
		return nil, err
	}
	qemuEnd.Close()
	// final ends the attempt as a boot's would: ended (no /init, KVM
	// refused), or killed at the time limit or because ctx is done.
	final := func() (*attempt, error) {
		ex, err := p.wait(ctx, deadline)
		a.ex, a.wall, a.console = ex, time.Since(start), console.String()
		return a, err
	}
	defer func() {
		switch {
		case res != nil:
		case ctx.Err() != nil || !time.Now().Before(deadline):
			// Whatever failed then is the cancellation or the time limit:
			// judged as a boot's.
			res, err = final()
		case from.path == "" && p.exited() && !strings.Contains(console.String(), guest.StartedLine):
			// A template whose QEMU ended before /init (KVM refused, say):
			// judged as a boot's. A restore that failed stays an error: the
			// snapshot goes and a boot follows.
			res, err = final()
		default:
			p.kill()
		}
	}()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	// wait pauses for d, and fails at once if QEMU ends, ctx is done or the
	// time limit passes.
	wait := func(d time.Duration) error {
		select {
		case <-time.After(d):
			return nil
		case <-p.done:
			return fmt.Errorf("QEMU ended (%s)%s", p.state, consoleTail(console.String()))
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-timer.C:
			return errTimeLimit
		}
	}
	if err := q.handshake(); err != nil {
		// QEMU that closed its socket is on its way out (KVM refused, a
		// snapshot it cannot read): its last words say why.
		wait(2 * time.Second)
		if from.path != "" {
			return nil, fmt.Errorf("QEMU could not restore it: %v%s", err, consoleTail(console.String()))
		}
		return nil, fmt.Errorf("QEMU did not answer: %v%s", err, consoleTail(console.String()))
	}

	if from.path != "" {
		// Wait for the incoming migration to end, check what it read, then
		// run the guest.
		for {
			st, err := q.status()
			if err != nil {
				return nil, fmt.Errorf("QEMU could not restore it: %v%s", err, consoleTail(console.String()))
			}
			if st != "inmigrate" {
				if st != "paused" {
					return nil, fmt.Errorf("the restored VM is %q, not paused", st)
				}
				break
			}
			if err := wait(10 * time.Millisecond); err != nil {
				return nil, err
			}
		}
		if d := <-streamed; d.err != nil {
			return nil, fmt.Errorf("read the snapshot: %w", d.err)
		} else if d.sum != from.sum {
			return nil, fmt.Errorf("the snapshot is damaged: its sha256 is %s, its name says %s", d.sum, from.sum)
		}
		if _, err := q.exec("cont", nil, nil); err != nil {
			return nil, fmt.Errorf("the restored VM did not continue: %w", err)
		}
	} else {
		select {
		case <-console.seen:
		case <-p.done:
			if !strings.Contains(console.String(), guest.StartedLine) {
				return final() // no /init: judged as a boot's
			}
			return nil, fmt.Errorf("%w: the guest did not wait for a job (QEMU %s)%s", errNoChannel, p.state, consoleTail(console.String()))
		case <-timer.C:
			return final()
		case <-ctx.Done():
			return final()
		}
		if err := save(q, wait, v.CacheDir, key); err != nil {
			a.how = "booted"
			a.notes = append(a.notes, "not saved as a snapshot: "+err.Error())
		}
		if _, err := q.exec("cont", nil, nil); err != nil {
			return nil, fmt.Errorf("the template did not continue: %w", err)
		}
	}
	if err := handOver(channel, payload, wait); err != nil {
		return nil, err
	}
	res, err = final()
	if err != nil || a.ex.TimedOut || a.ex.Cancelled {
		return res, err
	}
	if from.path != "" && !strings.Contains(a.console, guest.JobLine) {
		return nil, fmt.Errorf("the restored guest did not take its job (QEMU %s)%s", a.ex.State, consoleTail(a.console))
	}
	if a.report, err = readAll(report); err != nil {
		return a, fmt.Errorf("report: %w", err)
	}
	return a, nil
}

// save stops the VM and migrates it into a new file, which becomes the
// snapshot <key>.<digest>.snapshot in dir once QEMU has written all of it;
// then the cache keeps it and the keepSnapshots-1 most recently used of
// other keys.
func save(q *qmp, wait func(time.Duration) error, dir, key string) error {
	if _, err := q.exec("stop", nil, nil); err != nil {
		return err
	}
	// QEMU limits a migration to 128 MiB/s by default; a file takes more.
	if _, err := q.exec("migrate-set-parameters", map[string]any{"max-bandwidth": int64(1) << 40}, nil); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, snapshotTempPrefix+owner.Self().String()+"-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	defer f.Close()
	if _, err := q.exec("getfd", map[string]any{"fdname": "nokmem-snapshot"}, f); err != nil {
		return err
	}
	if _, err := q.exec("migrate", map[string]any{"uri": "fd:nokmem-snapshot"}, nil); err != nil {
		return err
	}
	for {
		st, desc, err := q.migration()
		switch {
		case err != nil:
			return err
		case st == "completed":
			if err := f.Sync(); err != nil {
				return err
			}
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return err
			}
			sum, err := snapshotDigest(key, f)
			if err != nil {
				return err
			}
			final := filepath.Join(dir, key+"."+sum+snapshotSuffix)
			if err := os.Rename(tmp, final); err != nil {
				return err
			}
			pruneSnapshots(dir, final, keepSnapshots)
			return nil
		case st == "failed" || st == "cancelled":
			return fmt.Errorf("migration %s: %s", st, desc)
		}
		if err := wait(10 * time.Millisecond); err != nil {
			return err
		}
	}
}

// errTimeLimit: the time limit passed while the job was handed over.
var errTimeLimit = errors.New("time limit")

// handOver sends the payload through the job channel in chunks of the
// channel's data area (guest.ChannelMagic), each once the guest has taken
// the one before.
func handOver(channel *os.File, payload []byte, wait func(time.Duration) error) error {
	room := ChannelMiB<<20 - guest.ChannelData
	put := func(off int64, v uint64) error {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], v)
		_, err := channel.WriteAt(b[:], off)
		return err
	}
	for seq := uint64(1); ; seq++ {
		n := min(room, len(payload))
		last := n == len(payload)
		if _, err := channel.WriteAt(payload[:n], guest.ChannelData); err != nil {
			return err
		}
		var lastWord uint64
		if last {
			lastWord = 1
		}
		if err := errors.Join(put(guest.ChannelLength, uint64(n)), put(guest.ChannelLast, lastWord), put(guest.ChannelSeq, seq)); err != nil {
			return err
		}
		if seq == 1 {
			if err := put(0, guest.ChannelMagic); err != nil {
				return err
			}
		}
		payload = payload[n:]
		// The guest acknowledges each chunk once it has taken it.
		var ack [8]byte
		for {
			if _, err := channel.ReadAt(ack[:], guest.ChannelAck); err != nil {
				return err
			}
			if binary.LittleEndian.Uint64(ack[:]) == seq {
				break
			}
			if err := wait(time.Millisecond); err != nil {
				return fmt.Errorf("hand over the job: %w", err)
			}
		}
		if last {
			return nil
		}
	}
}
