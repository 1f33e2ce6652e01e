// Command nokmem is the node tool of the nokmem-tools package: it checks a
// runc or kubelet binary on the node and wires runc-nokmem into the node's
// container runtime, and takes it out again.
//
//	nokmem verify [-json FILE] [-dynamic auto|require|off] [-allow-static-only] runc|kubelet BINARY
//	nokmem runtime containerd|docker [--default | --remove] [--binary PATH] [--systemd-cgroup auto|true|false] [CONFIG]
//	nokmem doctor [--root DIR] [--json] [--textfile DIR]
//	nokmem version
//
// Exit status: 0 done, 1 failed (verify: the binary did not pass), 2 usage;
// doctor has its own (docs/doctor.md): 0 ok, 1 at risk, 2 leaking, 3 could
// not tell, 4 the doctor failed.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/nokmem/nokmem/internal/doctor"
	"github.com/nokmem/nokmem/internal/runtimecfg"
	"github.com/nokmem/nokmem/verify"
)

const usage = `usage:
  nokmem verify [-json FILE] [-dynamic auto|require|off] [-allow-static-only] runc|kubelet BINARY
      does BINARY write memory.kmem.limit_in_bytes? (exit 0 pass, 1 fail)
  nokmem runtime containerd [--default | --remove] [--systemd-cgroup auto|true|false] [--binary PATH] [CONFIG]
      merge the runtime handler "nokmem" into containerd's CONFIG
      (default /etc/containerd/config.toml), keeping every other setting
  nokmem runtime docker [--default | --remove] [--binary PATH] [CONFIG]
      register the runtime "nokmem" in dockerd's CONFIG (default /etc/docker/daemon.json)
  nokmem doctor [--root DIR] [--json] [--textfile DIR]
      is this node leaking, at risk, is the fix in place? (read-only; docs/doctor.md)
  nokmem version
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// errUsage is a usage error: exit status 2.
var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "verify":
		var passed bool
		passed, err = verifyCmd(ctx, args[1:], stdout, stderr)
		if err == nil && !passed {
			return 1
		}
	case "runtime":
		err = runtimeCmd(args[1:], stdout, stderr)
	case "doctor":
		return doctor.Main(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, Version())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "nokmem: unknown command %q\n%s", args[0], usage)
		return 2
	}
	switch {
	case errors.Is(err, errUsage):
		return 2
	case err != nil:
		fmt.Fprintln(stderr, "nokmem:", err)
		return 1
	}
	return 0
}

// Version names the commit the binary was built from, as the Go build
// info records it.
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "nokmem (no build info)"
	}
	var rev, at, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = ", modified"
			}
		}
	}
	if rev == "" {
		return "nokmem (unknown commit) " + bi.GoVersion
	}
	return fmt.Sprintf("nokmem %s (%s%s) %s", rev, at, modified, bi.GoVersion)
}

func flags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("nokmem "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	return fs
}

func verifyCmd(ctx context.Context, args []string, stdout, stderr io.Writer) (bool, error) {
	fs := flags("verify", stderr)
	jsonOut := fs.String("json", "", "also write the JSON report to this file")
	dynamic := fs.String("dynamic", "auto", "dynamic check: auto, require or off")
	// The verifier's own message names NOKMEM_ALLOW_STATIC_ONLY=1: honour it.
	static := fs.Bool("allow-static-only", os.Getenv("NOKMEM_ALLOW_STATIC_ONLY") == "1", "accept static evidence alone when the dynamic check cannot run (also NOKMEM_ALLOW_STATIC_ONLY=1)")
	if err := fs.Parse(args); err != nil {
		return false, errUsage
	}
	if fs.NArg() != 2 || (fs.Arg(0) != "runc" && fs.Arg(0) != "kubelet") {
		fs.Usage()
		return false, errUsage
	}
	r, err := verify.Verify(ctx, fs.Arg(1), verify.Options{Project: fs.Arg(0), Dynamic: *dynamic, AllowStaticOnly: *static})
	if err != nil {
		return false, err
	}
	fmt.Fprint(stdout, r.Summary())
	if *jsonOut != "" {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return false, err
		}
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return false, err
		}
	}
	return r.Passed, nil
}

func runtimeCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	kind, err := runtimecfg.ParseKind(args[0])
	if err != nil {
		fmt.Fprintf(stderr, "nokmem runtime: %v\n%s", err, usage)
		return errUsage
	}
	fs := flags("runtime "+args[0], stderr)
	var opt runtimecfg.Options
	fs.BoolVar(&opt.Default, "default", false, "also make nokmem the default runtime")
	fs.BoolVar(&opt.Remove, "remove", false, "take the nokmem runtime out (and the default back to runc)")
	fs.StringVar(&opt.Binary, "binary", runtimecfg.DefaultBinary, "runc-nokmem's path")
	if kind == runtimecfg.Containerd {
		fs.StringVar(&opt.SystemdCgroup, "systemd-cgroup", "auto", "the runc shim's SystemdCgroup: auto copies the default runtime's")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return errUsage
	}
	path := kind.DefaultPath()
	switch fs.NArg() {
	case 0:
	case 1:
		path = fs.Arg(0)
	default:
		fs.Usage()
		return errUsage
	}
	a, err := runtimecfg.Apply(kind, path, opt)
	if err != nil {
		return err
	}
	for _, n := range a.Notes {
		fmt.Fprintln(stdout, "  "+n)
	}
	if !a.Changed {
		fmt.Fprintf(stdout, "%s: nothing to change, nothing written\n", a.Path)
		return nil
	}
	if a.Backup != "" {
		fmt.Fprintf(stdout, "%s: written; the previous file is %s\n", a.Path, a.Backup)
	} else {
		fmt.Fprintf(stdout, "%s: written\n", a.Path)
	}
	fmt.Fprintf(stdout, "to apply it: %s\n", a.Restart())
	if kind == runtimecfg.Containerd && !opt.Remove && !opt.Default {
		fmt.Fprintf(stdout, "pods opt in with spec.runtimeClassName: %s (RuntimeClass: /usr/share/runc-nokmem/runtimeclass-nokmem.yaml)\n", runtimecfg.Handler)
	}
	if kind == runtimecfg.Docker && !opt.Remove && !opt.Default {
		fmt.Fprintf(stdout, "containers opt in with docker run --runtime %s\n", runtimecfg.Handler)
	}
	return nil
}
