package target

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A cgo program: linked dynamically on this host it imports glibc symbols
// of the host's version; linked with -extldflags -static it needs nothing.
const cgoProgram = `package main

/*
#include <stdio.h>
static void hello(void) { printf("probe 1.0\n"); fflush(stdout); }
*/
import "C"

func main() { C.hello() }
`

const pureProgram = `package main

import "fmt"

func main() { fmt.Println("pure 1.0") }
`

func buildProgram(t *testing.T, src string, env []string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("needs gcc for cgo")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module probe\n\ngo 1.21\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644)
	out := filepath.Join(dir, "probe")
	cmd := exec.Command("go", append(append([]string{"build", "-o", out}, args...), ".")...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), append([]string{"GOFLAGS=", "GOTOOLCHAIN=local"}, env...)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, b)
	}
	return out
}

func el7(t *testing.T) Target {
	tg, err := Lookup("el7")
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

func TestDynamicHostBinaryMissesEL7WithTheSymbolNamed(t *testing.T) {
	bin := buildProgram(t, cgoProgram, []string{"CGO_ENABLED=1", "GOAMD64=v1"})
	r, err := Check(bin, el7(t))
	if err != nil {
		t.Fatal(err)
	}
	if r.Linkage != "dynamic" || !strings.Contains(strings.Join(r.Needed, " "), "libc.so.6") {
		t.Fatalf("linkage %s needed %v, want dynamic with libc.so.6", r.Linkage, r.Needed)
	}
	if r.OK {
		t.Fatalf("a binary linked against this host's glibc (%s) passed el7 (glibc 2.17)", r.MaxGlibc)
	}
	// Debian 12's glibc is 2.36: __libc_start_main@GLIBC_2.34 at least.
	msg := strings.Join(r.Problems, "\n")
	if !strings.Contains(msg, "@GLIBC_2.") || !strings.Contains(msg, "el7 has glibc 2.17") {
		t.Fatalf("problem does not name the symbol and the target:\n%s", msg)
	}
	run := RunEmptyRoot(context.Background(), bin, t.TempDir(), "--version")
	if run.Status != EmptyRootFailed {
		t.Fatalf("a dynamic binary started in an empty root: %+v", run)
	}
}

func TestStaticBinaryPassesEL7AndRunsInAnEmptyRoot(t *testing.T) {
	bin := buildProgram(t, cgoProgram, []string{"CGO_ENABLED=1", "GOAMD64=v1"}, "-ldflags", "-extldflags -static")
	r, err := Check(bin, el7(t))
	if err != nil {
		t.Fatal(err)
	}
	if r.Linkage != "static" || !r.OK {
		t.Fatalf("static binary: %s", r.Summary())
	}
	if r.ABIKernel == "" {
		t.Errorf("no GNU ABI note read from a glibc static binary")
	}
	if r.GOAMD64 != "v1" || r.CGOEnabled != "1" {
		t.Errorf("GOAMD64 %q CGO_ENABLED %q", r.GOAMD64, r.CGOEnabled)
	}
	run := RunEmptyRoot(context.Background(), bin, t.TempDir(), "--version")
	if run.Status == EmptyRootUnavailable {
		t.Skip(run.Error)
	}
	if run.Status != EmptyRootOK || run.Output != "probe 1.0" {
		t.Fatalf("static binary in an empty root: %+v", run)
	}
}

func TestGOAMD64v3IsRefusedForEL7(t *testing.T) {
	bin := buildProgram(t, pureProgram, []string{"CGO_ENABLED=0", "GOAMD64=v3"})
	r, err := Check(bin, el7(t))
	if err != nil {
		t.Fatal(err)
	}
	if r.OK || !strings.Contains(strings.Join(r.Problems, " "), "GOAMD64=v3") {
		t.Fatalf("GOAMD64=v3 binary passed el7 or was not named: %s", r.Summary())
	}
	el9, _ := Lookup("el9")
	if r9, _ := Check(bin, el9); r9.OK {
		t.Fatalf("el9 guarantees x86-64-v2 only, a v3 binary passed: %s", r9.Summary())
	}
	v1 := buildProgram(t, pureProgram, []string{"CGO_ENABLED=0", "GOAMD64=v1"})
	if r, _ := Check(v1, el7(t)); !r.OK || r.Linkage != "static" {
		t.Fatalf("pure Go v1 binary: %s", r.Summary())
	}
}

func TestGoMinKernel(t *testing.T) {
	for v, want := range map[string]string{
		"go1.7.6": "2.6.23", "go1.18.10": "2.6.23", "go1.19": "2.6.32", "go1.23.12": "2.6.32",
		"go1.24.0": "3.2.0", "go1.26.8": "3.2.0", "devel": "",
	} {
		if got := GoMinKernel(v); got != want {
			t.Errorf("GoMinKernel(%q) = %q, want %q", v, got, want)
		}
	}
	// No Go release's floor excludes EL7's 3.10.
	for _, v := range []string{"go1.7", "go1.26.8"} {
		if newer(GoMinKernel(v), "3.10.0") {
			t.Errorf("%s requires a kernel newer than 3.10", v)
		}
	}
}

func TestLookupRejectsUnknownTargets(t *testing.T) {
	if _, err := Lookup("el6"); err == nil || !strings.Contains(err.Error(), "el7") {
		t.Fatalf("Lookup(el6) = %v, want an error listing the known targets", err)
	}
}

const escapeProgram = `package main

import (
	"fmt"
	"os"
	"syscall"
)

func main() {
	if err := syscall.Chroot("."); err != nil {
		fmt.Println("chroot refused:", err)
	} else {
		fmt.Println("chroot allowed")
	}
	fmt.Println("uid", os.Getuid())
}
`

// The binary under test gets no privilege in the empty root: run as root,
// it is nobody without capabilities, so it cannot chroot its way out.
func TestEmptyRootRunHasNoPrivilege(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the privilege drop applies to runs as root")
	}
	bin := buildProgram(t, escapeProgram, []string{"CGO_ENABLED=0"})
	run := RunEmptyRoot(context.Background(), bin, t.TempDir())
	if run.Status != EmptyRootOK {
		t.Fatalf("run: %+v", run)
	}
	if !strings.Contains(run.Output, "chroot refused") || !strings.Contains(run.Output, "uid 65534") {
		t.Fatalf("the binary kept privileges in the empty root:\n%s", run.Output)
	}
}
