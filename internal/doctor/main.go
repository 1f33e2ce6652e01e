package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/nokmem/nokmem/verify"
)

const usage = `usage: nokmem-doctor [--root DIR] [--json] [--textfile DIR] [--kernel-log FILE] [--journal FILE] [--interval DURATION]

Diagnoses this node for the cgroup v1 kernel-memory (kmem) leak of EL7
kernels: exposure, where kmem accounting is on, leak evidence, and whether
the runc and kubelet in use keep it off. It only reads. (docs/doctor.md)

  --root DIR          the node's "/" (default /; /host in the DaemonSet)
  --json              print the report as JSON (schema nokmem.doctor/v1)
  --textfile DIR      also write DIR/nokmem_doctor.prom for node_exporter
  --kernel-log FILE   read saved dmesg or journalctl -k output instead of /dev/kmsg
  --journal FILE      read saved journalctl output of the runtime and kubelet
                      instead of the journal and /var/log/messages
  --interval DURATION run again every DURATION and never exit (a DaemonSet)

The environment variable NODE_NAME, if set, names the node in the report.

Exit status: 0 ok, 1 at risk, 2 leaking, 3 could not tell, 4 the doctor failed
(bad arguments, or an output it could not write).
`

// Main is the doctor's command line, for cmd/nokmem-doctor and for a
// "doctor" subcommand of another tool. It returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("nokmem-doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	root := fs.String("root", "/", "")
	asJSON := fs.Bool("json", false, "")
	textfile := fs.String("textfile", "", "")
	kernelLog := fs.String("kernel-log", "", "")
	journal := fs.String("journal", "", "")
	interval := fs.Duration("interval", 0, "")
	version := fs.Bool("version", false, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitFailed
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "nokmem-doctor: unexpected argument %q\n%s", fs.Arg(0), usage)
		return ExitFailed
	}
	if *version {
		fmt.Fprintln(stdout, Version())
		return ExitOK
	}
	if *interval < 0 {
		fmt.Fprintln(stderr, "nokmem-doctor: --interval must not be negative")
		return ExitFailed
	}
	// The DaemonSet passes the node's name (the downward API's
	// spec.nodeName): in a container the kernel's hostname is the pod's.
	opt := Options{Root: *root, Hostname: os.Getenv("NODE_NAME")}
	if *kernelLog != "" || *journal != "" {
		for _, l := range DefaultLogs(*root) {
			if (l.Kind == "kernel" && *kernelLog == "") || (l.Kind != "kernel" && *journal == "") {
				opt.Logs = append(opt.Logs, l)
			}
		}
		if *kernelLog != "" {
			opt.Logs = append(opt.Logs, FileSource(*kernelLog, "kernel"))
		}
		if *journal != "" {
			opt.Logs = append(opt.Logs, FileSource(*journal, "journal"))
		}
	}
	// A loop judges the same files every time: judge each version once.
	opt.Static = memoStatic(verify.Static)
	ctx := context.Background()
	for {
		code := once(ctx, opt, *asJSON, *textfile, stdout, stderr)
		if *interval == 0 {
			return code
		}
		time.Sleep(*interval)
	}
}

func once(ctx context.Context, opt Options, asJSON bool, textfile string, stdout, stderr io.Writer) int {
	r, err := Run(ctx, opt)
	if err != nil {
		fmt.Fprintf(stderr, "nokmem-doctor: %v\n", err)
		return ExitFailed
	}
	code := r.ExitCode
	if asJSON {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			fmt.Fprintf(stderr, "nokmem-doctor: %v\n", err)
			return ExitFailed
		}
		if _, err := stdout.Write(append(b, '\n')); err != nil {
			code = ExitFailed
		}
	} else if err := r.WriteSummary(stdout); err != nil {
		code = ExitFailed
	}
	if textfile != "" {
		if p, err := r.WriteTextfile(textfile); err != nil {
			fmt.Fprintf(stderr, "nokmem-doctor: %v\n", err)
			code = ExitFailed
		} else if !asJSON {
			fmt.Fprintf(stderr, "nokmem-doctor: metrics written to %s\n", p)
		}
	}
	return code
}

// Version names the commit the binary was built from.
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "nokmem-doctor (no build info)"
	}
	rev, modified := "unknown commit", ""
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = " (modified)"
			}
		}
	}
	return fmt.Sprintf("nokmem-doctor %s%s %s", rev, modified, bi.GoVersion)
}

// memoStatic remembers the static verdict on a file for as long as its
// inode, size and modification time stay the same.
func memoStatic(static func(string) (*verify.StaticResult, error)) func(string) (*verify.StaticResult, error) {
	type key struct {
		path      string
		ino       uint64
		size      int64
		mtimeNsec int64
	}
	seen := map[key]*verify.StaticResult{}
	return func(path string) (*verify.StaticResult, error) {
		fi, err := os.Stat(path)
		if err != nil {
			return static(path)
		}
		k := key{path: path, size: fi.Size(), mtimeNsec: fi.ModTime().UnixNano()}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			k.ino = st.Ino
		}
		if r, ok := seen[k]; ok {
			return r, nil
		}
		r, err := static(path)
		if err == nil {
			seen[k] = r
		}
		return r, err
	}
}
