// Package guest is the inside of the verifier's throwaway VM (verify/vm):
// the program that the guest kernel starts as /init from an initramfs. It
// mounts what the dynamic check needs (proc, sysfs, devtmpfs, tmpfs and
// every cgroup v1 controller, the memory controller among them), reports
// what the kernel offers, runs the same dynamic check as on a host
// (verify.DynamicRunc or verify.DynamicProbe: self-test, both detectors,
// the real runs) on each binary of its job, writes the results to a serial
// port between markers, and powers the VM off. Its job comes in the
// initramfs or, for a guest restored from a snapshot, through the job
// channel (ChannelMagic).
//
// This file holds what the host and the guest share: the job, the result,
// the capabilities and the framing of the report. init_linux.go is the
// guest's side.
package guest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/nokmem/nokmem/verify"
)

// Paths inside the guest.
const (
	// JobFile holds the Job as JSON.
	JobFile = "/nokmem/job.json"
	// BinDir holds the binaries to check, by Item.Name.
	BinDir = "/nokmem/bin"
	// ReportDevice is the second serial port: the report travels there,
	// apart from the console (ttyS0), where the kernel may print at any time.
	ReportDevice = "/dev/ttyS1"
	// TempDir is where the check makes its bundles (a tmpfs).
	TempDir = "/tmp"
)

// StartedLine is what /init prints on the console first: a console that
// lacks it means the kernel never started /init.
const StartedLine = "nokmem-vm-init: started"

// The job channel of a guest that waits for its job (Job.Await): QEMU's
// ivshmem-plain device, whose second BAR is a memory file the host shares
// with the VM. A guest booted once and saved as a snapshot after it printed
// ReadyLine is restored for each check and given its job there: no boot per
// check. The payload is an uncompressed newc cpio archive of JobFile, the
// binaries and their libraries, sent in chunks through the channel's data
// area (from ChannelData to the end): the host writes a chunk, its length
// (ChannelLength) and whether it is the last (ChannelLast), then its
// sequence number (ChannelSeq, from 1) and, with the first, ChannelMagic at
// offset 0; the guest, polling, takes the chunk and writes its sequence
// number to ChannelAck. The guest unpacks the archive into its root and
// prints JobLine.
const (
	ChannelVendor = "0x1af4" // Red Hat, Inc. (QEMU's ivshmem)
	ChannelDevice = "0x1110" // ivshmem
	ChannelMagic  = uint64(0x314a4f4d454d4b4e)
	ChannelSeq    = 8
	ChannelLength = 16
	ChannelLast   = 24
	ChannelAck    = 32
	ChannelData   = 4096
	// ReadyLine: the guest is set up and waits on the channel.
	ReadyLine = "nokmem-vm-init: ready for a job on the channel"
	// JobLine: the guest took a job from the channel.
	JobLine = "nokmem-vm-init: job received on the channel"
	// TemplateNonce is the nonce of the job a waiting guest boots with: the
	// same in every template, whose initramfs must be the same bytes when
	// its snapshot is restored.
	TemplateNonce = "template"
)

// Kinds of Item.
const (
	KindRunc  = "runc"  // verify.DynamicRunc: two runc run lifecycles
	KindProbe = "probe" // verify.DynamicProbe: a kubelet kmem probe
	// KindLeak is the leak reproducer: Item.Lifecycles untraced runc run
	// lifecycles (verify.Lifecycle), with the memory cgroups counted before
	// and after.
	KindLeak = "leak"
)

// Job is what the host asks the guest to do.
type Job struct {
	// Nonce makes the report's markers unique to this boot.
	Nonce string `json:"nonce"`
	Items []Item `json:"items"`
	// RunTimeout bounds each run of a binary (verify.DynamicOptions.Timeout;
	// 0: its default).
	RunTimeout time.Duration `json:"runTimeout,omitempty"`
	// Deadline is how long the guest may take: it cancels what is still
	// running then, reports, and powers off, before the host's own limit.
	Deadline time.Duration `json:"deadline"`
	// SelfTest asks for the detectors' self-test on its own (verify:host).
	SelfTest bool `json:"selfTest,omitempty"`
	// Await: set up, print ReadyLine and wait for the real job on the job
	// channel (a template to be saved as a snapshot).
	Await bool `json:"await,omitempty"`
	// Now is the host's clock, which the guest sets: a guest restored from
	// a snapshot would otherwise keep the template's time.
	Now time.Time `json:"now,omitzero"`
	// Seed is mixed into the guest's random pool: every guest restored from
	// one snapshot starts with the same pool.
	Seed []byte `json:"seed,omitempty"`
}

// Item is one binary to check, at BinDir/Name in the guest.
type Item struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	// Disable switches detectors off (verify.DynamicOptions.Disable): a
	// check with one off must fail its self-test.
	Disable []string `json:"disable,omitempty"`
	// Lifecycles is how many lifecycles a KindLeak item runs.
	Lifecycles int `json:"lifecycles,omitempty"`
}

// Result is the guest's report.
type Result struct {
	Caps  Caps         `json:"caps"`
	Items []ItemResult `json:"items"`
	// SelfTest is the self-test Job.SelfTest asked for.
	SelfTest []verify.DetectorCheck `json:"selfTest,omitempty"`
	// Error is a failure of the guest itself (no job, a bad item).
	Error string `json:"error,omitempty"`
	// Uptime is the guest's uptime when it wrote the report, in seconds.
	Uptime float64 `json:"uptime"`
}

// ItemResult is the dynamic check of one Item.
type ItemResult struct {
	Name string `json:"name"`
	// SHA256 is the digest of the file the guest ran: the host compares it
	// with the artifact.
	SHA256  string                `json:"sha256"`
	Dynamic *verify.DynamicResult `json:"dynamic,omitempty"`
	Leak    *LeakResult           `json:"leak,omitempty"`
}

// LeakResult is what the leak reproducer saw for one binary.
type LeakResult struct {
	Lifecycles int    `json:"lifecycles"`
	Failed     int    `json:"failed"`
	FirstError string `json:"firstError,omitempty"`
	Before     Count  `json:"before"`
	After      Count  `json:"after"`
	// AfterDropCaches is After once the kernel was asked to drop its
	// caches (echo 3 > /proc/sys/vm/drop_caches), which frees what only
	// reclaimable objects kept.
	AfterDropCaches Count `json:"afterDropCaches"`
}

// Count is the memory cgroups the kernel counts and those that exist.
type Count struct {
	// Kernel is num_cgroups of the memory controller in /proc/cgroups: a
	// removed cgroup counts until the kernel frees it.
	Kernel int `json:"kernel"`
	// Dirs are the cgroup directories in the memory hierarchy (the root
	// among them).
	Dirs int `json:"dirs"`
}

// Leaked is how many more removed memory cgroups the kernel still holds
// after the lifecycles than before.
func (l LeakResult) Leaked() int {
	return (l.AfterDropCaches.Kernel - l.AfterDropCaches.Dirs) - (l.Before.Kernel - l.Before.Dirs)
}

// Caps is what the guest kernel offers the check, as the guest found it.
type Caps struct {
	Kernel string `json:"kernel"`
	// Controllers are the cgroup v1 controllers the guest mounted, each at
	// /sys/fs/cgroup/<name>.
	Controllers []string `json:"controllers"`
	// MountErrors says which controllers /proc/cgroups lists but could not
	// be mounted as cgroup v1, and why.
	MountErrors map[string]string `json:"mountErrors,omitempty"`
	// MemoryMount is the cgroup v1 memory hierarchy ("" if none).
	MemoryMount string `json:"memoryMount,omitempty"`
	// KmemFile: the memory hierarchy has memory.kmem.limit_in_bytes.
	KmemFile bool `json:"kmemFile"`
	// Fanotify is why the fanotify detector cannot watch the memory
	// hierarchy ("" when it can).
	Fanotify string `json:"fanotify,omitempty"`
	// Openat2 and Seccomp are informational: a 3.10 kernel (EL7) has no
	// openat2, and runc's seccomp support needs CONFIG_SECCOMP.
	Openat2 bool `json:"openat2"`
	Seccomp bool `json:"seccomp"`
	// SetupErrors are failures of the basic mounts (proc, sysfs, …).
	SetupErrors []string `json:"setupErrors,omitempty"`
}

// Problems says what stops the dynamic check on this kernel (none: it can
// run), each with what to do about it.
func (c Caps) Problems() []string {
	var out []string
	out = append(out, c.SetupErrors...)
	switch {
	case c.MemoryMount == "":
		why := "the memory controller is not available"
		if e := c.MountErrors["memory"]; e != "" {
			why = "mount -t cgroup -o memory failed: " + e
		}
		out = append(out, "no cgroup v1 memory hierarchy ("+why+"); the kernel needs CONFIG_MEMCG with cgroup v1 support (CONFIG_MEMCG_V1 from Linux 6.11) and no cgroup_no_v1=memory")
	case !c.KmemFile:
		out = append(out, "the cgroup v1 memory hierarchy has no "+verify.KmemFile+"; the kernel needs CONFIG_MEMCG_KMEM")
	}
	if c.MemoryMount != "" && c.Fanotify != "" {
		out = append(out, "the fanotify detector cannot watch the memory hierarchy ("+c.Fanotify+"); the kernel needs CONFIG_FANOTIFY")
	}
	return out
}

// Report framing: the JSON result, base64 in lines, between a begin line
// (nonce, length, sha256) and an end line. The host refuses anything that
// does not check out.
const (
	beginTag = "NOKMEM-REPORT-BEGIN"
	endTag   = "NOKMEM-REPORT-END"
)

// ErrNoReport: the output holds no report for the nonce.
var ErrNoReport = errors.New("no report")

// WriteReport writes r framed for nonce.
func WriteReport(w io.Writer, nonce string, r *Result) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(b)
	enc := base64.StdEncoding.EncodeToString(b)
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "\n%s %s %d %s\n", beginTag, nonce, len(b), hex.EncodeToString(sum[:]))
	for len(enc) > 0 {
		n := min(len(enc), 96)
		buf.WriteString(enc[:n] + "\n")
		enc = enc[n:]
	}
	fmt.Fprintf(&buf, "%s %s\n", endTag, nonce)
	_, err = w.Write(buf.Bytes())
	return err
}

// ReadReport finds the report framed for nonce in out (a serial port's
// output: lines may end in \r\n) and checks its length and digest.
func ReadReport(out []byte, nonce string) (*Result, error) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	var (
		in      bool
		size    int
		want    string
		payload strings.Builder
	)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		f := strings.Fields(line)
		switch {
		case len(f) == 4 && f[0] == beginTag && f[1] == nonce:
			n, err := strconv.Atoi(f[2])
			if err != nil {
				return nil, fmt.Errorf("report: bad length %q", f[2])
			}
			in, size, want = true, n, f[3]
			payload.Reset()
		case in && len(f) == 2 && f[0] == endTag && f[1] == nonce:
			b, err := base64.StdEncoding.DecodeString(payload.String())
			if err != nil {
				return nil, fmt.Errorf("report: %w", err)
			}
			sum := sha256.Sum256(b)
			if len(b) != size || hex.EncodeToString(sum[:]) != want {
				return nil, fmt.Errorf("report: %d bytes with sha256 %x, the header says %d bytes with sha256 %s: damaged on the way", len(b), sum, size, want)
			}
			var r Result
			if err := json.Unmarshal(b, &r); err != nil {
				return nil, fmt.Errorf("report: %w", err)
			}
			return &r, nil
		case in:
			payload.WriteString(line)
		}
	}
	if in {
		return nil, errors.New("report: cut short (no end marker)")
	}
	return nil, ErrNoReport
}
