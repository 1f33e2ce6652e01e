// Command nokmem-verify checks whether a runc or kubelet binary can write
// memory.kmem.limit_in_bytes. It is the verifier's own entry point, used on
// a host or inside the verifier container (verify/Dockerfile).
//
//	nokmem-verify [-json report.json] [-dynamic auto|require|off] [-allow-static-only] runc|kubelet BINARY
//
// Exit status: 0 pass, 1 kmem-enabled or unknown, 2 usage or internal error.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/nokmem/nokmem/verify"
)

func main() {
	jsonOut := flag.String("json", "", "also write the JSON report to this file")
	dynamic := flag.String("dynamic", "auto", "dynamic check: auto, require or off")
	static := flag.Bool("allow-static-only", false, "accept static evidence alone when the dynamic check cannot run")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: nokmem-verify [flags] runc|kubelet BINARY")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 || (flag.Arg(0) != "runc" && flag.Arg(0) != "kubelet") {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := verify.Verify(ctx, flag.Arg(1), verify.Options{Project: flag.Arg(0), Dynamic: *dynamic, AllowStaticOnly: *static})
	if err != nil {
		fmt.Fprintln(os.Stderr, "nokmem-verify:", err)
		os.Exit(2)
	}
	fmt.Print(r.Summary())
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(r, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "nokmem-verify:", err)
			os.Exit(2)
		}
	}
	if !r.Passed {
		os.Exit(1)
	}
}
