package runtimecfg

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/internal/testenv"
)

// oldSnippet is what runc-nokmem packages shipped before: imported, it
// replaces the main file's whole CRI table.
const oldSnippet = `version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  BinaryName = "/usr/bin/runc-nokmem"
`

// userConfig is an operator's config.toml: a sandbox image and registry
// mirrors of their own, runc on cgroupfs, comments; everything the daemon
// writes stays below dir.
func userConfig(dir string) string {
	return `# Our containerd: private registry mirror, our own pause image.
version = 2

[plugins."io.containerd.internal.v1.opt"]
  path = "` + dir + `/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "nokmem.test/pause:1"
  # No fixed port: other containerds may run on this machine.
  stream_server_port = "0"
  # The CI machine's bounding set lacks CAP_SYS_RESOURCE, which the pause
  # container's oom_score_adj of -998 needs.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "` + dir + `/cni/bin"
    conf_dir = "` + dir + `/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
    endpoint = ["https://mirror.nokmem.test"]
`
}

// configDump runs containerd config dump: the configuration containerd
// would run with, imports merged.
func configDump(t *testing.T, ctx context.Context, containerd, cfg string) map[string]any {
	t.Helper()
	out, err := run.Local{}.Run(ctx, run.Cmd{Args: []string{containerd, "--config", cfg, "config", "dump"}})
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := toml.Unmarshal(out, &m); err != nil {
		t.Fatalf("config dump: %v\n%s", err, out)
	}
	return m
}

var criTable = []string{"plugins", "io.containerd.grpc.v1.cri"}

func criValue(m map[string]any, keys ...string) any { return dig(m, append(criTable, keys...)...) }

// A real containerd (Debian's) with the merged config keeps the operator's
// settings, runs a pod sandbox and a container under runc-nokmem through
// CRI with the runtime handler "nokmem", leaves pods without a handler on
// runc, and with --default runs those under runc-nokmem too.
func TestRealContainerdRunsPodsUnderTheNokmemHandler(t *testing.T) {
	testenv.RequireRoot(t)
	bins := testenv.RequireTools(t, "containerd", "ctr", "containerd-shim-runc-v2", "runc", "go")
	containerd, ctr := bins[0], bins[1]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := (run.Local{}).Run(ctx, run.Cmd{Args: []string{containerd, "--version"}}); err == nil {
		t.Logf("%s", strings.TrimSpace(string(out)))
	}

	// A short directory: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "nokmem-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	address := filepath.Join(dir, "containerd.sock")
	cgroupParent := "/" + uniqueName("nokmem-test")
	var d *daemon
	var client cri.RuntimeServiceClient
	var conns []*grpc.ClientConn
	runDirsBefore := existing("/run/containerd", "/run/containerd/s", "/run/containerd/runc", "/run/containerd/runc/k8s.io")
	t.Cleanup(func() {
		if client != nil {
			cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
			removeAllPods(cctx, t, client)
			ccancel()
		}
		for _, c := range conns {
			c.Close()
		}
		d.stop()
		killByArg(address)
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
	images := imageTar(t, hello,
		imageSpec{Tag: "nokmem.test/pause:1", Entrypoint: []string{"/hello", "pause"}},
		imageSpec{Tag: "nokmem.test/hello:1", Entrypoint: []string{"/hello"}})

	// What the issue saw: the old snippet, imported, drops the operator's
	// CRI settings; nokmem refuses to merge around it.
	broken := filepath.Join(dir, "broken")
	writeFile(t, filepath.Join(broken, "conf.d", "containerd-runc-nokmem.toml"), oldSnippet, 0o644)
	writeFile(t, filepath.Join(broken, "config.toml"), "imports = [\""+broken+"/conf.d/*.toml\"]\n"+userConfig(dir), 0o644)
	if got := criValue(configDump(t, ctx, containerd, filepath.Join(broken, "config.toml")), "sandbox_image"); got == "nokmem.test/pause:1" {
		t.Errorf("containerd kept sandbox_image with the old snippet imported; the premise of the merge is wrong")
	} else {
		t.Logf("old snippet imported: config dump shows sandbox_image = %v (the operator's nokmem.test/pause:1 is gone)", got)
	}
	out, err := (run.Local{}).Run(ctx, run.Cmd{Args: []string{nokmem, "runtime", "containerd", filepath.Join(broken, "config.toml")}})
	if err == nil || !strings.Contains(string(out), "older runc-nokmem packages shipped") {
		t.Errorf("nokmem merged next to the old snippet: %v\n%s", err, out)
	}

	// A config.toml like Debian's, relying on containerd's built-in runc
	// runtime: after the merge, runc is still there.
	debianLike := filepath.Join(dir, "debian", "config.toml")
	writeFile(t, debianLike, "version = 2\n\n[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n    [plugins.\"io.containerd.grpc.v1.cri\".cni]\n      bin_dir = \"/usr/lib/cni\"\n", 0o644)
	if out, err := (run.Local{}).Run(ctx, run.Cmd{Args: []string{nokmem, "runtime", "containerd", debianLike}}); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("nokmem runtime containerd on a config without runtimes:\n%s", out)
	}
	minimal := configDump(t, ctx, containerd, debianLike)
	for _, name := range []string{"runc", "nokmem"} {
		if got := criValue(minimal, "containerd", "runtimes", name, "runtime_type"); got != RuncV2 {
			t.Errorf("config dump of a merged config without runtimes: runtimes.%s.runtime_type = %v", name, got)
		}
	}

	// Merge with the node tool, as an operator would.
	cfg := filepath.Join(dir, "config.toml")
	writeFile(t, cfg, userConfig(dir), 0o644)
	out, err = (run.Local{}).Run(ctx, run.Cmd{Args: []string{nokmem, "runtime", "containerd", "--binary", runcNokmem, cfg}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("nokmem runtime containerd:\n%s", out)
	dump := configDump(t, ctx, containerd, cfg)
	for _, c := range []struct {
		keys []string
		want any
	}{
		{[]string{"sandbox_image"}, "nokmem.test/pause:1"},
		{[]string{"registry", "mirrors", "docker.io", "endpoint"}, []any{"https://mirror.nokmem.test"}},
		{[]string{"containerd", "runtimes", "runc", "runtime_type"}, RuncV2},
		{[]string{"containerd", "runtimes", "nokmem", "runtime_type"}, RuncV2},
		{[]string{"containerd", "runtimes", "nokmem", "options", "BinaryName"}, runcNokmem},
		{[]string{"containerd", "runtimes", "nokmem", "options", "SystemdCgroup"}, false},
		{[]string{"containerd", "default_runtime_name"}, "runc"},
	} {
		got := criValue(dump, c.keys...)
		if !equalTOML(got, c.want) {
			t.Errorf("config dump: %s = %v, want %v", strings.Join(c.keys, "."), got, c.want)
		} else {
			t.Logf("config dump: %s = %v", strings.Join(c.keys, "."), got)
		}
	}

	start := func() {
		d = startDaemon(t, "containerd", filepath.Join(dir, "containerd.log"), containerd, "--config", cfg,
			"--root", filepath.Join(dir, "root"), "--state", filepath.Join(dir, "state"), "--address", address, "--log-level", "info")
		conn, err := grpc.NewClient("unix://"+address, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		client = cri.NewRuntimeServiceClient(conn)
		d.waitFor(t, "CRI answer", func() bool {
			vctx, vcancel := context.WithTimeout(ctx, 2*time.Second)
			defer vcancel()
			v, err := client.Version(vctx, &cri.VersionRequest{})
			if err == nil {
				t.Logf("CRI: %s %s (API %s)", v.RuntimeName, v.RuntimeVersion, v.RuntimeApiVersion)
			}
			return err == nil
		})
	}
	start()
	if out, err := (run.Local{}).Run(ctx, run.Cmd{Args: []string{ctr, "--address", address, "-n", "k8s.io", "images", "import", "--snapshotter", "overlayfs", images}}); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("ctr images import:\n%s", out)
	}

	pod := func(name, handler string) string {
		t.Helper()
		resp, err := client.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: sandboxConfig(dir, name, cgroupParent), RuntimeHandler: handler})
		if err != nil {
			t.Fatalf("RunPodSandbox %s (handler %q): %v\ncontainerd log:\n%s", name, handler, err, d.logTail())
		}
		t.Logf("RunPodSandbox %s, handler %q: %s", name, handler, resp.PodSandboxId)
		return resp.PodSandboxId
	}

	// The handler "nokmem": sandbox and container run under runc-nokmem.
	sandbox := pod("nokmem-pod", Handler)
	container := runHello(t, ctx, client, dir, sandbox, sandboxConfig(dir, "nokmem-pod", cgroupParent))
	recorded := calls(t, callLog)
	if !calledFor(recorded, sandbox) || !calledFor(recorded, container) {
		t.Fatalf("runc-nokmem was not asked to create sandbox %s and container %s; it recorded:\n%s", sandbox, container, strings.Join(recorded, "\n"))
	}
	t.Logf("runc-nokmem created the sandbox and the container: %d recorded calls", len(recorded))
	info, err := (run.Local{}).Run(ctx, run.Cmd{Args: []string{ctr, "--address", address, "-n", "k8s.io", "containers", "info", container}})
	if err != nil {
		t.Fatal(err)
	}
	if name, bin := runtimeOf(t, info); name != RuncV2 || bin != runcNokmem {
		t.Errorf("ctr containers info: Runtime.Name %q, Options.BinaryName %q:\n%s", name, bin, info)
	} else {
		t.Logf("ctr containers info %s: Runtime.Name = %s, Options (containerd.runc.v1.Options) BinaryName = %s", container[:12], name, bin)
	}

	// No handler: runc, untouched.
	plain := pod("plain-pod", "")
	if calledFor(calls(t, callLog), plain) {
		t.Errorf("a pod without a runtime handler ran under runc-nokmem before --default")
	}

	// --default: pods without a RuntimeClass run under runc-nokmem.
	out, err = (run.Local{}).Run(ctx, run.Cmd{Args: []string{nokmem, "runtime", "containerd", "--default", "--binary", runcNokmem, cfg}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("nokmem runtime containerd --default:\n%s", out)
	if got := criValue(configDump(t, ctx, containerd, cfg), "containerd", "default_runtime_name"); got != Handler {
		t.Fatalf("config dump: default_runtime_name = %v", got)
	}
	d.stop()
	start()
	byDefault := pod("default-pod", "")
	if !calledFor(calls(t, callLog), byDefault) {
		t.Errorf("with --default, a pod without a handler did not run under runc-nokmem")
	}
}

func equalTOML(got, want any) bool {
	g, _ := toml.Marshal(map[string]any{"v": got})
	w, _ := toml.Marshal(map[string]any{"v": want})
	return string(g) == string(w)
}

func sandboxConfig(dir, name, cgroupParent string) *cri.PodSandboxConfig {
	return &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: name, Namespace: "default", Uid: name + "-uid"},
		LogDirectory: filepath.Join(dir, "logs", name),
		Linux: &cri.LinuxPodSandboxConfig{
			CgroupParent: cgroupParent,
			// The host network: no CNI on this machine.
			SecurityContext: &cri.LinuxSandboxSecurityContext{NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE}},
		},
	}
}

// runHello creates and starts the hello container in sandbox, waits for it
// to exit and checks its exit code and log.
func runHello(t *testing.T, ctx context.Context, client cri.RuntimeServiceClient, dir, sandbox string, sc *cri.PodSandboxConfig) string {
	t.Helper()
	created, err := client.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: sandbox, SandboxConfig: sc, Config: &cri.ContainerConfig{
		Metadata: &cri.ContainerMetadata{Name: "hello"},
		Image:    &cri.ImageSpec{Image: "nokmem.test/hello:1"},
		LogPath:  "hello.log",
	}})
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	id := created.ContainerId
	t.Logf("CreateContainer: %s", id)
	if _, err := client.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := client.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: id})
		if err != nil {
			t.Fatalf("ContainerStatus: %v", err)
		}
		if st.Status.State == cri.ContainerState_CONTAINER_EXITED {
			if st.Status.ExitCode != 0 {
				t.Fatalf("hello exited %d: %s", st.Status.ExitCode, st.Status.Message)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hello still %v after 30 s", st.Status.State)
		}
		time.Sleep(200 * time.Millisecond)
	}
	b, err := os.ReadFile(filepath.Join(sc.LogDirectory, "hello.log"))
	if err != nil || !strings.Contains(string(b), helloLine) {
		t.Fatalf("container log %q (%v), want %q", b, err, helloLine)
	}
	t.Logf("container log: %s", strings.TrimSpace(string(b)))
	return id
}

// removeAllPods stops and removes every pod sandbox (and so its
// containers) this containerd runs.
func removeAllPods(ctx context.Context, t *testing.T, client cri.RuntimeServiceClient) {
	pods, err := client.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{})
	if err != nil {
		t.Logf("ListPodSandbox: %v", err)
		return
	}
	for _, p := range pods.Items {
		if _, err := client.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			t.Logf("StopPodSandbox %s: %v", p.Id, err)
		}
		if _, err := client.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			t.Logf("RemovePodSandbox %s: %v", p.Id, err)
		}
	}
}

// existing lists which of paths exist now.
func existing(paths ...string) map[string]bool {
	m := map[string]bool{}
	for _, p := range paths {
		_, err := os.Stat(p)
		m[p] = err == nil
	}
	return m
}

// removeCreated removes the directories of before that did not exist then,
// once they are empty (the shim socket and runc state roots under
// /run/containerd: an exiting shim removes its socket a moment later),
// deepest first; it gives up after 10 s on what is still in use.
func removeCreated(before map[string]bool) {
	left := map[string]bool{}
	for p, existed := range before {
		if _, err := os.Stat(p); !existed && err == nil {
			left[p] = true
		}
	}
	for deadline := time.Now().Add(10 * time.Second); len(left) > 0 && time.Now().Before(deadline); {
		changed := false
		for p := range left {
			if os.Remove(p) == nil {
				delete(left, p)
				changed = true
			}
		}
		if !changed {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// runtimeOf reads ctr containers info: the runtime's name and the
// BinaryName of its runc options (containerd.runc.v1.Options, field 6,
// printed as base64 protobuf).
func runtimeOf(t *testing.T, info []byte) (name, binary string) {
	t.Helper()
	var c struct {
		Runtime struct {
			Name    string
			Options struct {
				TypeURL string `json:"type_url"`
				Value   []byte `json:"value"`
			}
		}
	}
	if err := json.Unmarshal(info, &c); err != nil {
		t.Fatalf("ctr containers info: %v\n%s", err, info)
	}
	b := c.Runtime.Options.Value
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			break
		}
		b = b[n:]
		if num == 6 && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				break
			}
			binary = string(v)
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			break
		}
		b = b[m:]
	}
	return c.Runtime.Name, binary
}
