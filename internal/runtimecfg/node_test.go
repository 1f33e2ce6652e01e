package runtimecfg

// Helpers of the tests that run containers under a real containerd or
// dockerd: a static test program, a FROM-scratch image of it, a
// runc-nokmem that records each call, and cleanup of what the daemons
// leave (processes, mounts, cgroups).

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/internal/testenv"
)

// helloSource is the program in the test images: "pause" waits for
// SIGTERM (the pod sandbox), anything else prints a line and exits 0.
const helloSource = `package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "pause" {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
		<-c
		return
	}
	fmt.Println("hello from nokmem")
}
`

// HelloLine is what the hello container prints.
const helloLine = "hello from nokmem"

func goBuild(t *testing.T, dir, out string, pkg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := (run.Local{}).Run(ctx, run.Cmd{Args: []string{"go", "build", "-trimpath", "-o", out, pkg}, Dir: dir,
		Env: []string{"CGO_ENABLED=0", "GOFLAGS=-buildvcs=false"}}); err != nil {
		t.Fatal(err)
	}
}

// buildHello builds the static test program.
func buildHello(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "go.mod"), "module hello\n\ngo 1.21\n", 0o644)
	writeFile(t, filepath.Join(dir, "main.go"), helloSource, 0o644)
	out := filepath.Join(dir, "hello")
	goBuild(t, dir, out, ".")
	return out
}

// buildNokmem builds the node tool the nokmem-tools package ships.
func buildNokmem(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "nokmem")
	goBuild(t, ".", out, "github.com/nokmem/nokmem/cmd/nokmem")
	return out
}

// recordingRunc writes a runc-nokmem that appends its arguments to log and
// runs the host's runc: the test's stand-in for /usr/bin/runc-nokmem.
func recordingRunc(t *testing.T, dir, log string) string {
	t.Helper()
	runc := testenv.RequireTools(t, "runc")[0]
	path := filepath.Join(dir, "runc-nokmem")
	script := "#!/bin/sh\necho \"$*\" >> " + shQuote(log) + "\nexec " + shQuote(runc) + " \"$@\"\n"
	writeFile(t, path, script, 0o755)
	return path
}

func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// calls returns the recorded runc-nokmem invocations.
func calls(t *testing.T, log string) []string {
	t.Helper()
	b, err := os.ReadFile(log)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// calledFor reports whether runc-nokmem was asked to create container id.
func calledFor(lines []string, id string) bool {
	return slices.ContainsFunc(lines, func(l string) bool {
		f := strings.Fields(l)
		return slices.Contains(f, "create") && f[len(f)-1] == id
	})
}

type imageSpec struct {
	Tag        string
	Entrypoint []string
}

// imageTar writes a docker-archive (docker save format, which ctr images
// import and docker load read) holding one FROM-scratch layer with binary
// as /hello, and one image per spec.
func imageTar(t *testing.T, binary string, images ...imageSpec) string {
	t.Helper()
	bin, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	epoch := time.Unix(0, 0)
	if err := lw.WriteHeader(&tar.Header{Name: "hello", Mode: 0o755, Size: int64(len(bin)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	lw.Write(bin)
	if err := lw.Close(); err != nil {
		t.Fatal(err)
	}
	layerSum := sha256.Sum256(layer.Bytes())
	layerID := hex.EncodeToString(layerSum[:])
	out := filepath.Join(t.TempDir(), "images.tar")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	add := func(name string, b []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(b)
	}
	add(layerID+"/layer.tar", layer.Bytes())
	type entry struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	var manifest []entry
	for _, im := range images {
		cfg, _ := json.Marshal(map[string]any{
			"architecture": "amd64", "os": "linux", "created": epoch.UTC().Format(time.RFC3339),
			"config": map[string]any{"Entrypoint": im.Entrypoint},
			"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + layerID}},
		})
		sum := sha256.Sum256(cfg)
		name := hex.EncodeToString(sum[:]) + ".json"
		add(name, cfg)
		manifest = append(manifest, entry{Config: name, RepoTags: []string{im.Tag}, Layers: []string{layerID + "/layer.tar"}})
	}
	m, _ := json.Marshal(manifest)
	add("manifest.json", m)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// daemon is a containerd or dockerd this test started; stop ends it by
// its pid.
type daemon struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan error
}

func startDaemon(t *testing.T, name, log string, args ...string) *daemon {
	t.Helper()
	lf, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// Its own process group, so that a Ctrl-C of go test reaches it only
	// through stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		t.Fatalf("start %s: %v", run.Quote(args), err)
	}
	d := &daemon{name: name, cmd: cmd, log: log, done: make(chan error, 1)}
	go func() { d.done <- cmd.Wait(); lf.Close() }()
	return d
}

// stop sends SIGTERM, then SIGKILL after 20 s.
func (d *daemon) stop() {
	if d == nil || d.cmd.Process == nil {
		return
	}
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(20 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
}

// logTail is the end of the daemon's log, for failure messages.
func (d *daemon) logTail() string {
	b, _ := os.ReadFile(d.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// waitFor polls ok until it holds, the daemon exits, or 60 s pass.
func (d *daemon) waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("%s exited (%v) before %s; its log:\n%s", d.name, err, what, d.logTail())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s after 60 s; its log:\n%s", d.name, what, d.logTail())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// killByArg ends, by pid, the processes whose command line holds arg (the
// shims a daemon of this test started for its own socket) and waits until
// they are gone.
func killByArg(arg string) {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if slices.Contains(strings.Split(string(b), "\x00"), arg) {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				pids = append(pids, pid)
			}
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for time.Now().Before(deadline) {
			// Gone, or a zombie whose parent has not reaped it yet.
			b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
			if err != nil {
				break
			}
			if i := strings.LastIndexByte(string(b), ')'); i > 0 && len(b) > i+2 && b[i+2] == 'Z' {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(t *testing.T, dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var mounts []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 {
			// Mount points escape blanks as \040; ours have none.
			if p := fields[4]; strings.HasPrefix(p, dir+"/") {
				mounts = append(mounts, p)
			}
		}
	}
	slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
	for _, m := range mounts {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Logf("unmount %s: %v", m, err)
		}
	}
}

// removeCgroups removes the test's cgroup parent from every v1 hierarchy
// (runc removed the containers' cgroups below it).
func removeCgroups(t *testing.T, parent string) {
	hier, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range hier {
		p := filepath.Join(h, parent)
		if _, err := os.Stat(p); err != nil {
			continue
		}
		// Children first: whatever a container left below the parent.
		var dirs []string
		filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil {
				t.Logf("rmdir %s: %v", dirs[i], err)
			}
		}
	}
}

func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), time.Now().UnixNano()%1e9)
}
