package doctor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// LogSource is one log the doctor reads for leak evidence: the kernel's
// (/dev/kmsg, or saved dmesg / journalctl -k output), the journal of the
// runtime and kubelet units, or a syslog file holding both.
type LogSource struct {
	Name string // shown in the report
	Kind string // kernel, journal or syslog
	// Read returns the log's lines. It is the seam tests replace.
	Read func(ctx context.Context) ([]string, error)
	// BootOnly: every line is from the current boot (/dev/kmsg,
	// journalctl -b). Otherwise lines whose timestamp predates the boot
	// are skipped: a leak before the last reboot is gone.
	BootOnly bool
}

// tailBytes is how much of a syslog file is read: its end, where the
// current boot is.
const tailBytes = 64 << 20

// KmsgSource reads the kernel ring buffer at path (the node's /dev/kmsg)
// without blocking. A regular file holding /dev/kmsg records or plain
// lines (saved dmesg output) works too.
func KmsgSource(path string) LogSource {
	return LogSource{Name: path, Kind: "kernel", BootOnly: true, Read: func(context.Context) ([]string, error) {
		return readKmsg(path)
	}}
}

// FileSource reads the last part of a text log (a syslog file, or a
// saved journalctl or dmesg output).
func FileSource(path, kind string) LogSource {
	return LogSource{Name: path, Kind: kind, Read: func(context.Context) ([]string, error) {
		return tailLines(path, tailBytes)
	}}
}

// JournalctlSource runs journalctl for this boot's messages of the
// container runtime and kubelet units. The argument list is fixed: nothing
// from the node goes into it.
func JournalctlSource(journalctl string) LogSource {
	args := []string{journalctl, "--boot", "--no-pager", "--quiet", "--output=cat", "--lines=100000",
		"--unit=kubelet.service", "--unit=docker.service", "--unit=containerd.service"}
	return LogSource{Name: strings.Join(args, " "), Kind: "journal", BootOnly: true, Read: func(ctx context.Context) ([]string, error) {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
		}
		return splitLines(out), nil
	}}
}

// DefaultLogs are the node's own logs under root: the kernel ring buffer,
// the syslog files (EL7's /var/log/messages holds kernel, dockerd and
// kubelet lines), and on the node itself (root "/") the journal.
func DefaultLogs(root string) []LogSource {
	join := func(p string) string { return strings.TrimSuffix(root, "/") + p }
	logs := []LogSource{KmsgSource(join("/dev/kmsg"))}
	for _, p := range []string{"/var/log/messages", "/var/log/syslog", "/var/log/kern.log"} {
		if fi, err := os.Stat(join(p)); err == nil && fi.Mode().IsRegular() {
			logs = append(logs, FileSource(join(p), "syslog"))
		}
	}
	if root == "/" {
		if j, err := exec.LookPath("journalctl"); err == nil {
			logs = append(logs, JournalctlSource(j))
		}
	}
	return logs
}

func readKmsg(path string) ([]string, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		lines, err := tailLines(path, tailBytes)
		if err != nil {
			return nil, err
		}
		var out []string
		for _, l := range lines {
			if strings.HasPrefix(l, " ") {
				continue // a record's KEY=value continuation
			}
			out = append(out, kmsgMessage(l))
		}
		return out, nil
	}
	// The character device returns one record per read, EAGAIN at the
	// end, and EPIPE when a record was overwritten before we read it.
	var out []string
	buf := make([]byte, 8192)
	for {
		nr, err := unix.Read(fd, buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return out, nil
		case errors.Is(err, unix.EPIPE), errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return out, &os.PathError{Op: "read", Path: path, Err: err}
		case nr == 0:
			return out, nil
		}
		rec, _, _ := strings.Cut(string(buf[:nr]), "\n")
		out = append(out, kmsgMessage(rec))
	}
}

var kmsgPrefix = regexp.MustCompile(`^\d+,\d+,\d+,[^;]*;`)

// kmsgMessage strips a /dev/kmsg record's "prio,seq,usec,flags;" prefix.
func kmsgMessage(rec string) string { return kmsgPrefix.ReplaceAllString(rec, "") }

func tailLines(path string, n int64) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	skipFirst := false
	if fi.Size() > n {
		if _, err := f.Seek(fi.Size()-n, io.SeekStart); err != nil {
			return nil, err
		}
		skipFirst = true
	}
	b, err := io.ReadAll(io.LimitReader(f, n))
	if err != nil {
		return nil, err
	}
	lines := splitLines(b)
	if skipFirst && len(lines) > 0 {
		lines = lines[1:]
	}
	return lines, nil
}

func splitLines(b []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// lineTime reads a syslog line's timestamp: RFC 3339 (rsyslog's high
// precision format, journalctl -o short-iso) or the traditional
// "Dec 24 11:54:31", which has no year: the latest one not in the future.
func lineTime(line string, now time.Time, loc *time.Location) (time.Time, bool) {
	first, _, _ := strings.Cut(line, " ")
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05-0700"} {
		if t, err := time.Parse(layout, first); err == nil {
			return t, true
		}
	}
	if len(line) < 15 {
		return time.Time{}, false
	}
	t, err := time.ParseInLocation("Jan _2 15:04:05", line[:15], loc)
	if err != nil {
		return time.Time{}, false
	}
	t = time.Date(now.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0, loc)
	if t.After(now.Add(48 * time.Hour)) {
		t = t.AddDate(-1, 0, 0)
	}
	return t, true
}

// scanLog reads one log and counts the evidence in it.
func scanLog(ctx context.Context, src LogSource, boot, now time.Time, loc *time.Location) LogEvidence {
	ev := LogEvidence{Source: src.Name, Kind: src.Kind, Samples: []string{}}
	lines, err := src.Read(ctx)
	if err != nil {
		ev.Error = err.Error()
		if len(lines) == 0 {
			return ev
		}
	}
	ev.Read = true
	sample := func(l string) {
		if len(ev.Samples) < 3 {
			if len(l) > 300 {
				l = l[:300] + "…"
			}
			ev.Samples = append(ev.Samples, l)
		}
	}
	for _, l := range lines {
		if !src.BootOnly && !boot.IsZero() {
			// A line older than the boot (a minute of slack for clocks)
			// describes a kernel that is gone.
			if t, ok := lineTime(l, now, loc); ok && t.Before(boot.Add(-time.Minute)) {
				ev.Before++
				continue
			}
		}
		ev.Lines++
		low := strings.ToLower(l)
		switch {
		case strings.Contains(low, "slub: unable to allocate memory on node"):
			ev.SlubFailures++
			sample(l)
		case strings.Contains(low, "mkdir") && strings.Contains(low, "/sys/fs/cgroup/memory") &&
			(strings.Contains(low, "no space left on device") || strings.Contains(low, "cannot allocate memory")):
			ev.MkdirFailures++
			sample(l)
		case strings.Contains(low, "kmem.limit_in_bytes is deprecated"):
			ev.KmemDeprecated++
		case strings.Contains(low, "kernel memory accounting disabled in this runc build"):
			ev.NokmemRefusals++
		}
	}
	return ev
}
