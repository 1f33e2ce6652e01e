package runtimecfg

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/internal/testenv"
)

// A real dockerd (Debian's, started privately as .ci/run does) with the
// merged daemon.json keeps the operator's keys, runs docker run --runtime
// nokmem under runc-nokmem, and after --default plus a reload runs new
// containers under it while a container created before keeps Runtime=runc;
// after --remove, a container created with nokmem cannot start until it is
// recreated.
func TestRealDockerdRunsContainersUnderTheNokmemRuntime(t *testing.T) {
	testenv.RequireRoot(t)
	bins := testenv.RequireTools(t, "dockerd", "docker", "runc", "go")
	dockerd, dockerCLI := bins[0], bins[1]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	dir, err := os.MkdirTemp("", "nokmem-dockerd-")
	if err != nil {
		t.Fatal(err)
	}
	host := "unix://" + filepath.Join(dir, "docker.sock")
	cgroupParent := "/" + uniqueName("nokmem-test")
	docker := func(args ...string) ([]byte, error) {
		return (run.Local{}).Run(ctx, run.Cmd{Args: append([]string{dockerCLI, "-H", host}, args...), Env: []string{"DOCKER_BUILDKIT=0"}})
	}
	mustDocker := func(args ...string) string {
		t.Helper()
		out, err := docker(args...)
		if err != nil {
			t.Fatalf("%v\ndockerd log:\n%s", err, tailFile(filepath.Join(dir, "dockerd.log")))
		}
		return strings.TrimSpace(string(out))
	}
	var d *daemon
	// dockerd makes its plugin socket directory, and its containerd the
	// shims' socket directory, whatever --exec-root says.
	runDirsBefore := existing("/run/docker", "/run/docker/plugins", "/run/containerd", "/run/containerd/s")
	t.Cleanup(func() {
		if d != nil {
			if out, err := docker("ps", "-aq"); err == nil {
				for _, id := range strings.Fields(string(out)) {
					docker("rm", "-f", id)
				}
			}
		}
		d.stop()
		killByArg(filepath.Join(dir, "exec", "containerd", "containerd.sock"))
		unmountUnder(t, dir)
		removeCgroups(t, cgroupParent)
		removeCreated(runDirsBefore)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("clean up: %v", err)
		}
	})

	callLog := filepath.Join(dir, "runc-nokmem.calls")
	runcNokmem := recordingRunc(t, dir, callLog)
	hello := buildHello(t)
	nokmem := buildNokmem(t)
	nokmemRuntime := func(args ...string) string {
		t.Helper()
		out, err := (run.Local{}).Run(ctx, run.Cmd{Args: append([]string{nokmem, "runtime", "docker", "--binary", runcNokmem}, args...)})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("nokmem runtime docker %s:\n%s", strings.Join(args, " "), out)
		return string(out)
	}

	cfg := filepath.Join(dir, "daemon.json")
	writeFile(t, cfg, `{"labels": ["nokmem-test=1"], "log-level": "info", "max-concurrent-downloads": 2}`+"\n", 0o644)
	nokmemRuntime(cfg)
	d = startDaemon(t, "dockerd", filepath.Join(dir, "dockerd.log"), dockerd, "--config-file", cfg, "-H", host,
		"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"), "--pidfile", filepath.Join(dir, "dockerd.pid"),
		"--iptables=false", "--bridge=none", "--cgroup-parent", cgroupParent)
	d.waitFor(t, "an answer on "+host, func() bool { _, err := docker("version"); return err == nil })
	t.Logf("dockerd %s", mustDocker("version", "--format", "{{.Server.Version}}"))

	type info struct {
		DefaultRuntime string
		Runtimes       map[string]struct{ Path string }
		Labels         []string
	}
	dockerInfo := func() info {
		t.Helper()
		var i info
		if err := json.Unmarshal([]byte(mustDocker("info", "--format", "{{json .}}")), &i); err != nil {
			t.Fatal(err)
		}
		return i
	}
	i := dockerInfo()
	if i.Runtimes["nokmem"].Path != runcNokmem || i.DefaultRuntime != "runc" || strings.Join(i.Labels, ",") != "nokmem-test=1" {
		t.Fatalf("docker info after registering: %+v", i)
	}
	t.Logf("docker info: DefaultRuntime=%s Runtimes.nokmem.path=%s Labels=%v", i.DefaultRuntime, i.Runtimes["nokmem"].Path, i.Labels)

	// A FROM-scratch image of the static test program.
	buildDir := filepath.Join(dir, "build")
	writeFile(t, filepath.Join(buildDir, "Dockerfile"), "FROM scratch\nCOPY hello /hello\nENTRYPOINT [\"/hello\"]\n", 0o644)
	b, err := os.ReadFile(hello)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(buildDir, "hello"), string(b), 0o755)
	mustDocker("build", "-q", "-t", "nokmem.test/hello:1", buildDir)

	runtimeOf := func(name string) string {
		t.Helper()
		return mustDocker("inspect", "--format", "{{.HostConfig.Runtime}}", name)
	}
	idOf := func(name string) string {
		t.Helper()
		return mustDocker("inspect", "--format", "{{.Id}}", name)
	}
	out := mustDocker("run", "--name", "opted-in", "--runtime", "nokmem", "--network", "none", "nokmem.test/hello:1")
	if out != helloLine {
		t.Fatalf("docker run --runtime nokmem printed %q", out)
	}
	if rt := runtimeOf("opted-in"); rt != "nokmem" || !calledFor(calls(t, callLog), idOf("opted-in")) {
		t.Fatalf("docker run --runtime nokmem: Runtime=%s, runc-nokmem calls:\n%s", rt, strings.Join(calls(t, callLog), "\n"))
	}
	t.Logf("docker run --runtime nokmem: %q, HostConfig.Runtime=nokmem, runc-nokmem created %s", out, idOf("opted-in"))

	mustDocker("create", "--name", "created-before", "--network", "none", "nokmem.test/hello:1")

	// --default, then a reload (SIGHUP): dockerd rereads runtimes and
	// default-runtime without restarting.
	nokmemRuntime("--default", cfg)
	reload(t, d)
	d.waitFor(t, "DefaultRuntime=nokmem after the reload", func() bool { return dockerInfo().DefaultRuntime == "nokmem" })
	mustDocker("run", "--name", "by-default", "--network", "none", "nokmem.test/hello:1")
	if rt := runtimeOf("by-default"); rt != "nokmem" || !calledFor(calls(t, callLog), idOf("by-default")) {
		t.Errorf("after --default: Runtime=%s", rt)
	}
	if out := mustDocker("start", "-a", "created-before"); out != helloLine {
		t.Errorf("created-before printed %q", out)
	}
	if rt := runtimeOf("created-before"); rt != "runc" || calledFor(calls(t, callLog), idOf("created-before")) {
		t.Errorf("a container created before default-runtime changed: Runtime=%s (want runc, and no runc-nokmem call)", rt)
	}
	t.Logf("after --default: by-default has Runtime=nokmem; created-before keeps Runtime=%s", runtimeOf("created-before"))

	// --remove: back to runc; what was created with nokmem must be recreated.
	nokmemRuntime("--remove", cfg)
	reload(t, d)
	d.waitFor(t, "DefaultRuntime=runc after the reload", func() bool { return dockerInfo().DefaultRuntime == "runc" })
	if _, ok := dockerInfo().Runtimes["nokmem"]; ok {
		t.Error("the nokmem runtime is still registered after --remove")
	}
	out2, err := docker("start", "opted-in")
	if err == nil {
		t.Errorf("a container created with the removed runtime started")
	}
	t.Logf("docker start of a container created with nokmem, after --remove: %s", strings.TrimSpace(string(out2)))
}

func reload(t *testing.T, d *daemon) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}

func tailFile(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}
