// Command nokmem-doctor diagnoses a node for the cgroup v1 kernel-memory
// leak of EL7 kernels and says whether the nokmem fix is in place. It only
// reads; see docs/doctor.md and package internal/doctor.
//
// Build it static for the nodes and the DaemonSet image:
//
//	CGO_ENABLED=0 GOAMD64=v1 go build -trimpath -o nokmem-doctor ./cmd/nokmem-doctor
package main

import (
	"os"

	"github.com/nokmem/nokmem/internal/doctor"
)

func main() { os.Exit(doctor.Main(os.Args[1:], os.Stdout, os.Stderr)) }
