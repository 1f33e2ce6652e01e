package pipeline

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/verify"
)

// A runc built through the pipeline is static the way its release's
// "make static" is, starts in an empty root, and records what made it;
// the caller's environment cannot change its bytes.
func TestBuildRuncIsStaticForEL7AndIgnoresTheCallersEnvironment(t *testing.T) {
	r := repo(t)
	c := newConfig(t, r)
	res, err := BuildRunc(context.Background(), c, "v1.0.0-rc9")
	if err != nil {
		t.Fatal(err)
	}
	var rep verify.Report
	var prov dist.Provenance
	if err := dist.ReadJSON(res.Dir, dist.ReportFile, &rep); err != nil {
		t.Fatal(err)
	}
	if err := dist.ReadJSON(res.Dir, dist.ProvenanceFile, &prov); err != nil {
		t.Fatal(err)
	}
	tg := rep.Target
	if tg == nil || tg.Target != "el7" || !tg.OK || tg.Linkage != "static" || tg.GOAMD64 != "v1" || tg.CGOEnabled != "1" {
		t.Fatalf("target gate: %+v", tg)
	}
	if e := tg.EmptyRoot; e == nil || e.Status != "ok" {
		t.Fatalf("empty-root run: %+v", e)
	} else if !strings.Contains(e.Output, "runc version 1.0.0-rc9") || !strings.Contains(e.Output, "seccomp(libseccomp ") || strings.Contains(e.Output, "systemd") {
		// rc9's static target adds static_build, which compiles the systemd driver out.
		t.Errorf("--version in the empty root: %q", e.Output)
	}
	b := prov.Build
	if b.Target != "el7" || b.GOAMD64 != "v1" || b.Cgo.CC == "" || b.Cgo.Libseccomp == "" || b.Cgo.LibseccompStatic == "" || b.Toolkit != c.ToolkitRevision ||
		b.Static == nil || !slices.Equal(b.Static.Tags, []string{"netgo", "osusergo", "static_build"}) || b.GoSource != "host" {
		t.Fatalf("provenance build: %+v", b)
	}
	if args := strings.Join(b.Args, " "); !strings.Contains(args, "-extldflags -static") || !strings.Contains(args, "seccomp,nokmem,netgo,osusergo,static_build") {
		t.Errorf("build args: %s", args)
	}

	// Variables that change bytes, set by a careless caller, do not leak in.
	for k, v := range map[string]string{"GOAMD64": "v3", "GOFLAGS": "-tags=nokmemx", "CGO_CFLAGS": "-O0", "GOEXPERIMENT": "nocoverageredesign", "CC": "false"} {
		t.Setenv(k, v)
	}
	c2 := newConfig(t, r)
	c2.CacheDir = c.CacheDir
	again, err := BuildRunc(context.Background(), c2, "v1.0.0-rc9")
	if err != nil {
		t.Fatal(err)
	}
	if again.SHA256 != res.SHA256 {
		t.Fatalf("the caller's environment changed the binary: %s vs %s", again.SHA256, res.SHA256)
	}
	if filepath.Dir(again.Dir) == filepath.Dir(res.Dir) {
		t.Fatal("the second build did not use its own dist")
	}
}

// dynamicLinker is a Runner that loses the static link flags of go build,
// as a build whose "make static" did not take effect would.
type dynamicLinker struct{ run.Runner }

func (d dynamicLinker) Run(ctx context.Context, c run.Cmd) ([]byte, error) {
	for i, a := range c.Args {
		if i > 0 && c.Args[i-1] == "-ldflags" {
			c.Args = slices.Clone(c.Args)
			c.Args[i] = strings.Replace(a, "-extldflags -static ", "", 1)
		}
	}
	return d.Runner.Run(ctx, c)
}

// A build that came out dynamically linked against this host's glibc is
// refused for el7 with the symbol named, and nothing is published.
func TestDynamicBuildIsRefusedForEL7(t *testing.T) {
	c := newConfig(t, repo(t))
	c.Runner = dynamicLinker{run.Local{}}
	if err := os.MkdirAll(c.DistDir, 0o755); err != nil {
		t.Fatal(err)
	}
	before := tree(t, c.DistDir)
	_, err := BuildRunc(context.Background(), c, "v1.0.0-rc9")
	var ve *VerificationError
	if !errors.As(err, &ve) {
		t.Fatalf("want a verification failure, got %v", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "target el7: needs GLIBC_2.") || !strings.Contains(msg, "@GLIBC_2.") || !strings.Contains(msg, "el7 has glibc 2.17") {
		t.Fatalf("the refusal does not name the symbol and the target:\n%s", msg)
	}
	if after := tree(t, c.DistDir); after != before {
		t.Fatalf("dist changed:\n%s", after)
	}
}

// noStaticOverride is a Runner that loses KUBE_STATIC_OVERRIDES, as a
// Kubernetes release whose golang.sh ignored it would.
type noStaticOverride struct{ run.Runner }

func (n noStaticOverride) Run(ctx context.Context, c run.Cmd) ([]byte, error) {
	c.Env = slices.DeleteFunc(slices.Clone(c.Env), func(kv string) bool { return strings.HasPrefix(kv, "KUBE_STATIC_OVERRIDES=") })
	return n.Runner.Run(ctx, c)
}

// kubelet is static through KUBE_STATIC_OVERRIDES; where that does not
// take effect, the cgo kubelet needs the host's glibc and is refused.
func TestKubeletIsStaticThroughKubeStaticOverrides(t *testing.T) {
	c, _ := kubeConfig(t)
	res, err := BuildKubelet(context.Background(), c, "v1.18.20")
	if err != nil {
		t.Fatal(err)
	}
	var rep verify.Report
	dist.ReadJSON(res.Dir, dist.ReportFile, &rep)
	if rep.Target == nil || !rep.Target.OK || rep.Target.Linkage != "static" || rep.Target.CGOEnabled != "0" {
		t.Fatalf("kubelet target gate: %+v", rep.Target)
	}
	if e := rep.Target.EmptyRoot; e == nil || e.Status != "ok" || e.Output != "Kubernetes v1.18.20" {
		t.Fatalf("kubelet --version in an empty root: %+v", e)
	}

	c2, _ := kubeConfig(t)
	c2.Runner = noStaticOverride{run.Local{}}
	_, err = BuildKubelet(context.Background(), c2, "v1.18.20")
	if err == nil || !strings.Contains(err.Error(), "target el7: needs GLIBC_2.") {
		t.Fatalf("a cgo kubelet was not refused for el7: %v", err)
	}
}

// swappingVerifier verifies the real binary, then replaces it, as a writer
// racing the pipeline in NOKMEM_DIST would.
type swappingVerifier struct{ DefaultVerifier }

func (s swappingVerifier) Verify(ctx context.Context, binary string, opt verify.Options) (*verify.Report, error) {
	rep, err := s.DefaultVerifier.Verify(ctx, binary, opt)
	if err == nil {
		os.Remove(binary)
		err = os.WriteFile(binary, []byte("#!/bin/sh\necho not what was verified\n"), 0o755)
	}
	return rep, err
}

// Only the bytes that were verified are published and signed.
func TestBinarySwappedAfterVerificationIsNotPublished(t *testing.T) {
	c := newConfig(t, repo(t))
	c.Verifier = swappingVerifier{}
	_, err := BuildRunc(context.Background(), c, "v1.0.0-rc9")
	if err == nil || !strings.Contains(err.Error(), "changed after it was verified") {
		t.Fatalf("a binary swapped after verification was accepted: %v", err)
	}
	if _, statErr := os.Stat(dist.Dir(c.DistDir, "runc", "v1.0.0-rc9")); !os.IsNotExist(statErr) {
		t.Fatalf("something was published: %v", statErr)
	}
}
