package verify_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nokmem/nokmem/internal/fixture"
	"github.com/nokmem/nokmem/internal/testenv"
	"github.com/nokmem/nokmem/verify"
	"github.com/nokmem/nokmem/verify/target"
)

// A nokmem runc that needs the build host's glibc is not verified for
// el7, whatever else it proves; the same code linked statically is.
func TestTargetGateRefusesAHostLinkedBuild(t *testing.T) {
	for _, tool := range []string{"gcc", "pkg-config"} {
		if _, err := exec.LookPath(tool); err != nil {
			if testenv.InCI() {
				t.Fatalf("CI=true but %s is missing", tool)
			}
			t.Skipf("needs %s and libseccomp-dev", tool)
		}
	}
	repo := fixture.NewRuncRepo(t)
	tags := []string{"seccomp", "nokmem"}
	opt := verify.Options{Project: "runc", Dynamic: "off", Target: "el7"}

	dyn := repo.BuildRuncLinked(t, "v1.0.0-rc9", tags, false, fixture.LinkDynamic)
	rep, err := verify.Verify(context.Background(), dyn, opt)
	if err != nil {
		t.Fatal(err)
	}
	reasons := strings.Join(rep.Reasons, "\n")
	if rep.Passed || rep.Target == nil || rep.Target.OK || !strings.Contains(reasons, "@GLIBC_2.") || !strings.Contains(reasons, "el7 has glibc 2.17") {
		t.Fatalf("a host-linked build passed el7 or the symbol was not named:\n%s", rep.Summary())
	}
	if !strings.Contains(strings.Join(rep.Target.Needed, " "), "libseccomp.so.2") {
		t.Errorf("the fixture's libseccomp link was not seen: %v", rep.Target.Needed)
	}
	if e := rep.Target.EmptyRoot; e.Status != target.EmptyRootFailed && e.Status != target.EmptyRootUnavailable {
		t.Errorf("a dynamic binary ran in an empty root: %+v", e)
	}

	st := repo.BuildRuncLinked(t, "v1.0.0-rc9", tags, false, fixture.LinkStatic)
	rep, err = verify.Verify(context.Background(), st, opt)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Passed || rep.Target.Linkage != "static" {
		t.Fatalf("the static build of the same code did not pass:\n%s", rep.Summary())
	}
	if e := rep.Target.EmptyRoot; e.Status == target.EmptyRootOK && !strings.Contains(e.Output, "seccomp(libseccomp ") {
		t.Errorf("--version in the empty root does not show the linked libseccomp: %q", e.Output)
	}
	if testenv.InCI() && rep.Target.EmptyRoot.Status != target.EmptyRootOK {
		t.Errorf("CI=true but the empty-root run did not succeed: %+v", rep.Target.EmptyRoot)
	}
}

// A verification whose context was cancelled is never a pass, also on the
// static-only path that runs no process.
func TestCancelledStaticOnlyVerificationIsNotAPass(t *testing.T) {
	repo := fixture.NewRuncRepo(t)
	bin := repo.BuildRunc(t, "v1.0.0-rc9", []string{"seccomp", "nokmem"}, false)
	opt := verify.Options{Project: "runc", Dynamic: "off"}
	rep, err := verify.Verify(context.Background(), bin, opt)
	if err != nil || !rep.Passed {
		t.Fatalf("uncancelled static-only check: %v %+v", err, rep)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rep, err = verify.Verify(ctx, bin, opt)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Passed || !strings.Contains(strings.Join(rep.Reasons, " "), "interrupted") {
		t.Fatalf("a cancelled verification passed: %+v", rep.Reasons)
	}
}

// A distribution's dynamically linked runc can pass verify:file on the ELF
// reading when its target has every library and symbol version it needs;
// nokmem's own builds (SelfContained) must be static.
func TestDynamicBinaryPassesOnTheELFReadingUnlessSelfContainedIsRequired(t *testing.T) {
	for _, tool := range []string{"gcc", "pkg-config"} {
		if _, err := exec.LookPath(tool); err != nil {
			if testenv.InCI() {
				t.Fatalf("CI=true but %s is missing", tool)
			}
			t.Skipf("needs %s and libseccomp-dev", tool)
		}
	}
	saved := target.Targets
	t.Cleanup(func() { target.Targets = saved })
	target.Targets = append(append([]target.Target{}, saved...), target.Target{Name: "newer-than-this-host", Description: "test",
		Glibc: "2.99", Libseccomp: "9.9", Kernel: "99.0.0", AMD64Level: 4, Libraries: saved[0].Libraries})
	bin := fixture.NewRuncRepo(t).BuildRuncLinked(t, "v1.0.0-rc9", []string{"seccomp", "nokmem"}, false, fixture.LinkDynamic)
	opt := verify.Options{Project: "runc", Dynamic: "off", Target: "newer-than-this-host"}
	rep, err := verify.Verify(context.Background(), bin, opt)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Passed || !strings.Contains(strings.Join(rep.Reasons, " "), "the ELF reading decides") {
		t.Fatalf("a dynamic binary that fits its target did not pass:\n%s", rep.Summary())
	}
	opt.SelfContained = true
	rep, err = verify.Verify(context.Background(), bin, opt)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Passed || !strings.Contains(strings.Join(rep.Reasons, " "), "nokmem ships self-contained binaries") {
		t.Fatalf("a dynamic build passed where a self-contained one is required:\n%s", rep.Summary())
	}
}

// One string is no evidence: a program that merely carries the disabled
// message, without libcontainer's cgroupfs code, is unknown, never a pass;
// and a runc is not verified as a kubelet.
func TestStaticVerdictNeedsTheCodeAndTheRightKind(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module fake\n\ngo 1.21\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"kernel memory accounting disabled in this runc build\") }\n"), 0o644)
	fake := filepath.Join(dir, "runc")
	cmd := exec.Command("go", "build", "-o", fake, ".")
	cmd.Dir, cmd.Env = dir, append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	rep, err := verify.Verify(context.Background(), fake, verify.Options{Project: "runc", Dynamic: "off"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Passed || rep.Verdict != verify.Unknown {
		t.Fatalf("a program with one string passed as nokmem:\n%s", rep.Summary())
	}

	runc := fixture.NewRuncRepo(t).BuildRunc(t, "v1.0.0-rc9", []string{"seccomp", "nokmem"}, false)
	if rep, _ := verify.Verify(context.Background(), runc, verify.Options{Project: "runc", Dynamic: "off"}); !rep.Passed {
		t.Fatalf("the nokmem runc did not pass as runc:\n%s", rep.Summary())
	}
	rep, err = verify.Verify(context.Background(), runc, verify.Options{Project: "kubelet", Dynamic: "off"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Passed || !strings.Contains(strings.Join(rep.Reasons, " "), "not a kubelet") {
		t.Fatalf("a runc passed as a kubelet:\n%s", rep.Summary())
	}
}
