//go:build mage

// nokmem builds runc and kubelet that never write memory.kmem.limit_in_bytes, proves it with a verifier, and publishes only verified binaries. Optional inputs are NOKMEM_* environment variables: run the settings target to list them.
package main

import (
	"context"

	"github.com/magefile/mage/mg"

	"github.com/nokmem/nokmem/magefiles/targets"
)

// Build namespace: build:runc, build:kubelet.
type Build mg.Namespace

// Runc builds, verifies and publishes nokmem runc <version> to dist/runc/<version>/ (reads NOKMEM_RUNC_REPO, NOKMEM_CACHE, NOKMEM_DIST, NOKMEM_*_OVERLAY, NOKMEM_BUILD_MODE, NOKMEM_GO*, NOKMEM_TARGET, NOKMEM_ALLOW_STATIC_ONLY, NOKMEM_DYNAMIC). Versions: v1.0.0-rc2, v1.0.0-rc3, v1.0.0-rc4, v1.0.0-rc5, v1.0.0-rc6, v1.0.0-rc7, v1.0.0-rc8, v1.0.0-rc9, v1.0.0-rc10, v1.0.0-rc90, v1.0.0-rc91, v1.0.0-rc92, v1.0.0-rc93 (matrix:list shows each one's treatment; rc94 and later need none). Exit status 0: built, or already built; 3: nothing to do (the release carries no kernel-memory code); 1: failed.
func (Build) Runc(ctx context.Context, version string) error {
	return targets.BuildRunc(ctx, version)
}

// Kubelet builds, verifies and publishes nokmem kubelet <version> (v1.13.12 …) to dist/kubelet/<version>/ (reads NOKMEM_KUBERNETES_REPO, NOKMEM_ALLOW_UNPINNED, NOKMEM_ACCEPT_GO_MISMATCH, NOKMEM_KUBE_VERSION_SUFFIX, NOKMEM_TARGET and the build settings). Exit status 0: built, or already built; 3: nothing to do (the release carries no kernel-memory code); 1: failed.
func (Build) Kubelet(ctx context.Context, version string) error {
	return targets.BuildKubelet(ctx, version)
}

// Verify namespace: verify:runc, verify:kubelet, verify:file, verify:host, verify:dist.
type Verify mg.Namespace

// Runc checks dist/runc/<version>/ against its signed statement, re-verifies the runc and writes dist/reports/runc-<version>.verify.json (reads NOKMEM_DYNAMIC, NOKMEM_ALLOW_STATIC_ONLY, NOKMEM_VERIFY_PUBKEY).
func (Verify) Runc(ctx context.Context, version string) error {
	return targets.VerifyArtifact(ctx, "runc", version)
}

// Kubelet checks dist/kubelet/<version>/ against its signed statement, re-verifies the kubelet (static) and its kmem probe (dynamic); report in dist/reports/ (reads NOKMEM_DYNAMIC, NOKMEM_ALLOW_STATIC_ONLY, NOKMEM_VERIFY_PUBKEY).
func (Verify) Kubelet(ctx context.Context, version string) error {
	return targets.VerifyArtifact(ctx, "kubelet", version)
}

// Dist checks every artifact in NOKMEM_DIST, a dist/ tree or a downloaded release, as a consumer would: statement, digests, passed verification, signatures (reads NOKMEM_VERIFY_PUBKEY, NOKMEM_SIGNING_KEY).
func (Verify) Dist(ctx context.Context) error { return targets.VerifyDist(ctx) }

// Host says which verifier runtimes this machine supports (host: root and a cgroup v1 memory hierarchy; docker; vm: QEMU and a kernel) and that both detectors catch a canary's write, here or in the VM (reads NOKMEM_VM_KERNEL, NOKMEM_VM_SNAPSHOT).
func (Verify) Host(ctx context.Context) error { return targets.VerifyHost(ctx) }

// Leak runs the leak reproducer: <n> container lifecycles of runc <artifact> and of runc <default> (a default build) in one VM, with the kernel's count of memory cgroups before and after; only a leaking kernel such as EL7's 3.10 (NOKMEM_VM_KERNEL) shows the default build's leak (reads NOKMEM_VM_KERNEL, NOKMEM_VM_TIMEOUT, NOKMEM_VM_SNAPSHOT).
func (Verify) Leak(ctx context.Context, artifact, defaultBuild string, n int) error {
	return targets.VerifyLeak(ctx, artifact, defaultBuild, n)
}

// File verifies any binary of <kind> runc or kubelet at <path>, for instance the runc installed on a node, including whether it can start on NOKMEM_TARGET's nodes (reads NOKMEM_DYNAMIC, NOKMEM_ALLOW_STATIC_ONLY, NOKMEM_TARGET).
func (Verify) File(ctx context.Context, kind, path string) error {
	return targets.VerifyFile(ctx, kind, path)
}

// Matrix namespace: matrix:list, matrix:json, matrix:pin.
type Matrix mg.Namespace

// List prints the runc matrix (version, commit, strategy, tags, Go era) and the kubelet matrix (pinned or not, treatment expected, Go).
func (Matrix) List() error { return targets.MatrixList() }

// Json prints the build matrix as JSON for CI (releases that need a build).
func (Matrix) Json() error { return targets.MatrixJSON() }

// Pin records the commit that tag <version> names now as the reviewed pin of <project> (kubelet, runc) in its matrix file, after a build from it was reviewed: e.g. matrix:pin kubelet v1.13.12 (reads NOKMEM_KUBERNETES_REPO or NOKMEM_RUNC_REPO, NOKMEM_MATRIX_OVERLAY, NOKMEM_DIST).
func (Matrix) Pin(ctx context.Context, project, version string) error {
	return targets.MatrixPin(ctx, project, version)
}

// Package builds RPM (el7) and DEB packages of every verified artifact, and nokmem-tools (the node tool, built from this checkout and held to the target gate), into dist/packages/; RPMs signed (reads NOKMEM_PACKAGE_RELEASE, NOKMEM_TARGET, NOKMEM_MAINTAINER, NOKMEM_SIGNING_KEY).
func Package(ctx context.Context) error { return targets.Package(ctx) }

// Runtime namespace: runtime:containerd, runtime:docker.
type Runtime mg.Namespace

// Containerd merges the runtime handler nokmem (runc-nokmem) into containerd's <config.toml>, keeping every other setting and a backup (reads NOKMEM_RUNTIME_DEFAULT, NOKMEM_RUNTIME_REMOVE); on a node, the nokmem-tools package's nokmem runtime containerd does the same.
func (Runtime) Containerd(path string) error { return targets.RuntimeConfig("containerd", path) }

// Docker registers the runtime nokmem (runc-nokmem) in dockerd's <daemon.json>, keeping every other key and a backup (reads NOKMEM_RUNTIME_DEFAULT, NOKMEM_RUNTIME_REMOVE).
func (Runtime) Docker(path string) error { return targets.RuntimeConfig("docker", path) }

// Doctor namespace: doctor (doctor:summary), doctor:json.
type Doctor mg.Namespace

// Summary diagnoses this machine for the cgroup v1 kmem leak: exposure, where kmem accounting is on, leak evidence, whether the runc and kubelet in use keep it off (docs/doctor.md). Exit status 0 ok, 1 at risk, 2 leaking, 3 could not tell.
func (Doctor) Summary() error { return targets.Doctor(false) }

// Json is doctor:summary as JSON (schema nokmem.doctor/v1).
func (Doctor) Json() error { return targets.Doctor(true) }

// Aliases: doctor is doctor:summary.
var Aliases = map[string]interface{}{"doctor": Doctor.Summary}

// Publish namespace: publish:mirror.
type Publish mg.Namespace

// Mirror packages every verified artifact and publishes it incrementally to the signed yum and apt repositories under <dir>, with the public key and nokmem.repo / nokmem.sources for nodes (reads NOKMEM_SIGNING_KEY, NOKMEM_MIRROR_URL).
func (Publish) Mirror(ctx context.Context, dir string) error { return targets.PublishMirror(ctx, dir) }

// Release creates or completes GitHub release <tag> with every verified artifact, its SBOM and its packages; a dry run unless NOKMEM_PUBLISH=1 (reads NOKMEM_GITHUB_*, GITHUB_TOKEN, NOKMEM_SIGNING_KEY).
func Release(ctx context.Context, tag string) error { return targets.Release(ctx, tag) }

// Test runs the test suite (the same command as .ci/run).
func Test(ctx context.Context) error { return targets.Test(ctx) }

// Bench runs the benchmarks (cache-hit latency, the static verifier, and whole build:runc and verify:runc processes against the plain recipe).
func Bench(ctx context.Context) error { return targets.Bench(ctx) }

// Settings lists every NOKMEM_* environment setting: the value in effect (secrets not shown), its default and its meaning.
func Settings() { targets.PrintSettings() }

// Clean removes what nokmem made in dist/ (artifacts, reports, packages, abandoned staging) and refuses, removing nothing, if it holds anything else; the cache is kept (remove NOKMEM_CACHE by hand).
func Clean() error { return targets.Clean() }
