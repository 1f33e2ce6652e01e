package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"

	runner "github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/internal/testenv"
)

// containerd's own reading of each config layout (containerd config dump:
// the configuration it would run with, version 1 files migrated to version
// 2) names the same default runtime, runc and driver as the doctor's.
func TestRealContainerdReadsTheConfigsAsTheDoctorDoes(t *testing.T) {
	containerd := testenv.RequireTools(t, "containerd")[0]
	configs := map[string]string{
		"version 1, runc.v2 with BinaryName": `[plugins.cri.containerd]
  default_runtime_name = "nokmem"
  [plugins.cri.containerd.runtimes.nokmem]
    runtime_type = "io.containerd.runc.v2"
    [plugins.cri.containerd.runtimes.nokmem.options]
      BinaryName = "/usr/bin/runc-nokmem"
`,
		"version 2, systemd driver": `version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = true
`,
		"version 2, nokmem default beside runc": `version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "nokmem"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nokmem]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nokmem.options]
      BinaryName = "/usr/bin/runc-nokmem"
      SystemdCgroup = false
`,
		"docker's containerd.io file": `disabled_plugins = ["cri"]
`,
	}
	for name, cfg := range configs {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			f.binary("/usr/bin/runc", kmemEnabledBinary)
			f.binary("/usr/bin/runc-nokmem", nokmemBinary)
			f.write("/etc/containerd/config.toml", cfg)
			// Stdout only: containerd warns about version 1 on stderr.
			dumpCmd := exec.Command(containerd, "--config", filepath.Join(f.root, "etc/containerd/config.toml"), "config", "dump")
			var stderr strings.Builder
			dumpCmd.Stderr = &stderr
			out, err := dumpCmd.Output()
			if err != nil {
				t.Fatalf("containerd config dump: %v\n%s", err, stderr.String())
			}
			dump := map[string]any{}
			if err := toml.Unmarshal(out, &dump); err != nil {
				t.Fatalf("config dump: %v\n%s", err, out)
			}
			f.write("/etc/containerd/dumped.toml", string(out))
			n := &node{root: f.root, readFile: f.readFile}
			mine, dumped := n.containerd(0, "/etc/containerd/config.toml"), n.containerd(0, "/etc/containerd/dumped.toml")
			if len(n.problems) > 0 {
				t.Fatal(n.problems)
			}

			// What containerd says.
			wantCRI := true
			if dis, ok := dump["disabled_plugins"].([]any); ok {
				for _, p := range dis {
					if p == "cri" || p == "io.containerd.grpc.v1.cri" {
						wantCRI = false
					}
				}
			}
			if mine.CRI != wantCRI || dumped.CRI != wantCRI {
				t.Fatalf("CRI: containerd %v, doctor %v (dump %v)", wantCRI, mine.CRI, dumped.CRI)
			}
			if !wantCRI {
				return
			}
			ctrd := table(table(table(dump, "plugins"), "io.containerd.grpc.v1.cri"), "containerd")
			def, _ := ctrd["default_runtime_name"].(string)
			opts := table(table(table(ctrd, "runtimes"), def), "options")
			bin, _ := opts["BinaryName"].(string)
			if bin == "" {
				bin = "runc"
			}
			driver := driverCgroupfs
			if s, _ := opts["SystemdCgroup"].(bool); s {
				driver = driverSystemd
			}
			t.Logf("containerd config dump: default_runtime_name %s, BinaryName %q, SystemdCgroup %v", def, opts["BinaryName"], opts["SystemdCgroup"])
			for which, d := range map[string]Daemon{"the file": mine, "containerd's dump": dumped} {
				r := runtimeNamed(d, def)
				if d.DefaultRuntime != def || r == nil || !r.Default || r.Binary != bin || r.CgroupDriver != driver {
					t.Errorf("doctor reading %s: default %s, runtime %+v; containerd: %s, %s, %s", which, d.DefaultRuntime, r, def, bin, driver)
				}
			}
		})
	}
}

// A real dockerd started with a daemon.json and flags of its own: the
// doctor finds it through /proc and reads the same runtimes, default and
// driver as docker info reports. Then the doctor's FROM-scratch image
// (deploy/doctor) runs in that dockerd with what the DaemonSet gives it:
// every capability dropped, no host PID namespace, a read-only root and
// read-only host paths under /host; it still finds the daemon.
func TestRealDockerd(t *testing.T) {
	testenv.RequireRoot(t)
	bins := testenv.RequireTools(t, "dockerd", "docker")
	dockerd, dockerCLI := bins[0], bins[1]
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	dir, err := os.MkdirTemp("", "nokmem-doctor-dockerd-")
	if err != nil {
		t.Fatal(err)
	}
	host := "unix://" + filepath.Join(dir, "docker.sock")
	docker := func(args ...string) (string, error) {
		out, err := runner.Local{}.Run(ctx, runner.Cmd{Args: append([]string{dockerCLI, "-H", host}, args...), Env: []string{"DOCKER_BUILDKIT=0"}})
		return strings.TrimSpace(string(out)), err
	}
	runcNokmem := filepath.Join(dir, "bin", "runc-nokmem")
	if err := os.MkdirAll(filepath.Dir(runcNokmem), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(runcNokmem, []byte(nokmemBinary), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "daemon.json")
	if err := os.WriteFile(cfg, []byte(`{
  "default-runtime": "nokmem",
  "runtimes": {"nokmem": {"path": "`+runcNokmem+`"}},
  "exec-opts": ["native.cgroupdriver=cgroupfs"],
  "log-level": "warn"
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cgroupParent := fmt.Sprintf("/nokmem-doctor-test-%d", os.Getpid())
	cmd := exec.Command(dockerd, "--config-file", cfg, "-H", host, "--add-runtime", "flagged="+runcNokmem,
		"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"), "--pidfile", filepath.Join(dir, "dockerd.pid"),
		"--iptables=false", "--bridge=none", "--cgroup-parent", cgroupParent)
	logf, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	runDirExisted := exists("/run/docker")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
		// dockerd leaves its exec root's mounts and the plugin directory.
		syscall.Unmount(filepath.Join(dir, "exec"), syscall.MNT_DETACH)
		syscall.Unmount(filepath.Join(dir, "data"), syscall.MNT_DETACH)
		if !runDirExisted {
			os.RemoveAll("/run/docker")
		}
		// The container's cgroup parent, in every hierarchy (v1 ones and
		// the unified one).
		hierarchies, _ := os.ReadDir("/sys/fs/cgroup")
		for _, h := range hierarchies {
			p := filepath.Join("/sys/fs/cgroup", h.Name(), cgroupParent)
			if err := syscall.Rmdir(p); err != nil && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENOTDIR) {
				t.Errorf("remove cgroup %s: %v", p, err)
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("clean up: %v", err)
		}
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		if _, err := docker("version"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "dockerd.log"))
			t.Fatalf("dockerd does not answer on %s:\n%s", host, b)
		}
		time.Sleep(300 * time.Millisecond)
	}
	var info struct {
		DefaultRuntime string
		CgroupDriver   string
		Runtimes       map[string]struct{ Path string }
	}
	out, err := docker("info", "--format", "{{json .}}")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	t.Logf("docker info: DefaultRuntime %s, CgroupDriver %s, Runtimes %v", info.DefaultRuntime, info.CgroupDriver, info.Runtimes)

	n := &node{root: "/", readFile: os.ReadFile}
	var mine *Daemon
	for _, d := range n.dockerDaemons(n.processes(), false) {
		if d.PID == cmd.Process.Pid {
			mine = &d
		}
	}
	if mine == nil {
		t.Fatalf("the doctor did not find dockerd (pid %d) in /proc", cmd.Process.Pid)
	}
	check := func(who string, d *Daemon) {
		t.Helper()
		if d.Config != cfg || !d.ConfigFound || d.DefaultRuntime != info.DefaultRuntime {
			t.Errorf("%s: config %s (found %v), default %s; docker info default %s", who, d.Config, d.ConfigFound, d.DefaultRuntime, info.DefaultRuntime)
		}
		for name, r := range info.Runtimes {
			if strings.HasPrefix(name, "io.containerd.") {
				// dockerd 20.10's names for containerd's shims, usable
				// only when asked for by name; they run "runc" too.
				continue
			}
			got := runtimeNamed(*d, name)
			if got == nil || got.Binary != r.Path || got.CgroupDriver != info.CgroupDriver || got.Default != (name == info.DefaultRuntime) {
				t.Errorf("%s: runtime %s %+v; docker info: path %s, driver %s", who, name, got, r.Path, info.CgroupDriver)
			}
		}
		if def := runtimeNamed(*d, "nokmem"); def == nil || def.Path != runcNokmem {
			t.Errorf("%s: the default runtime resolves to %+v, want %s", who, def, runcNokmem)
		}
	}
	check("the doctor on /", mine)

	t.Run("image with the DaemonSet's privileges", func(t *testing.T) {
		goBin := testenv.RequireTools(t, "go")[0]
		ctxDir := t.TempDir()
		build := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-o", filepath.Join(ctxDir, "nokmem-doctor"), "../../cmd/nokmem-doctor")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
		df, err := os.ReadFile("../../deploy/doctor/Dockerfile")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), df, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := docker("build", "-q", "-t", "nokmem.test/doctor:1", ctxDir); err != nil {
			t.Fatalf("docker build: %v\n%s", err, out)
		}
		args := []string{"run", "--rm", "--network", "none", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
			"--read-only", "--user", "0:0"}
		for _, p := range []string{"/proc", "/sys/fs/cgroup", "/sys/kernel/slab", "/usr/bin", "/usr/sbin", dir} {
			if exists(p) {
				args = append(args, "-v", p+":/host"+p+":ro")
			}
		}
		args = append(args, "--runtime", "runc", "nokmem.test/doctor:1", "--root", "/host", "--json")
		out, err := docker(args...)
		var r Report
		if jerr := json.Unmarshal([]byte(out), &r); jerr != nil {
			t.Fatalf("docker %s: %v %v\n%s", strings.Join(args, " "), err, jerr, out)
		}
		t.Logf("in the container: status %s, cgroups %s, memory %s at %s, kmem model %s, %d cgroups walked, problems %q",
			r.Status, r.Exposure.CgroupMode, r.Exposure.MemoryController, r.Exposure.MemoryMount, r.Exposure.KmemModel, r.Kmem.Walked, r.Problems)
		var inside *Daemon
		for i := range r.Fix.Docker {
			if r.Fix.Docker[i].PID == cmd.Process.Pid {
				inside = &r.Fix.Docker[i]
			}
		}
		if inside == nil {
			t.Fatalf("without the host PID namespace, the doctor did not find dockerd (pid %d) through /host/proc: %+v", cmd.Process.Pid, r.Fix.Docker)
		}
		check("the doctor in the container", inside)
		host, err := Run(ctx, Options{Root: "/", Logs: []LogSource{}, Static: noStatic})
		if err != nil {
			t.Fatal(err)
		}
		if r.Exposure.CgroupMode != host.Exposure.CgroupMode || r.Exposure.MemoryMount != host.Exposure.MemoryMount || r.Exposure.Kernel != host.Exposure.Kernel || r.Kmem.Walked == 0 {
			t.Errorf("the container's view differs from the host's: %+v vs %+v", r.Exposure, host.Exposure)
		}
	})
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
