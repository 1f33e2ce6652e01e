package verify_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// fakeRuncEnv selects the behaviour of the runc-shaped test program (see
// fakeRuncSource); the verifier passes its environment on.
const fakeRuncEnv = "NOKMEM_TEST_FAKE_RUNC"

var (
	fakeOnce sync.Once
	fakeBin  string
	fakeErr  error
)

// fakeRuncBinary returns the runc-shaped test program, which behaves as a
// runc (or a kubelet probe) in the given mode when the verifier runs it. It
// is built once, without the race detector, so that runs under ptrace stay
// fast under go test -race too.
func fakeRuncBinary(t *testing.T, mode string) string {
	t.Helper()
	fakeOnce.Do(func() {
		src := filepath.Join(repoDir, "fakerunc", "main.go")
		if fakeErr = os.MkdirAll(filepath.Dir(src), 0o755); fakeErr != nil {
			return
		}
		if fakeErr = os.WriteFile(src, []byte(fakeRuncSource), 0o644); fakeErr != nil {
			return
		}
		bin := filepath.Join(repoDir, "fakerunc", "runc")
		cmd := exec.Command("go", "build", "-o", bin, "main.go")
		cmd.Dir = filepath.Dir(src)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GO111MODULE=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			fakeErr = fmt.Errorf("go build the fake runc: %v\n%s", err, out)
			return
		}
		fakeBin = bin
	})
	if fakeErr != nil {
		t.Fatal(fakeErr)
	}
	t.Setenv(fakeRuncEnv, mode)
	return fakeBin
}

// fakeRuncSource does what real runc's run does, in the order real runc
// does it (libcontainer's process_linux.go: Apply creates the cgroup and
// joins the container's process to it, then Set writes the limits), and
// what a kubelet probe does (probe <cgroupsPath>: create the memory cgroup,
// as Apply(-1)). It never touches the kmem file. Each mode other than "ok"
// misbehaves in one way:
//
//	late-limit       300 ms pass between joining the cgroup and writing the limit
//	no-cgroup        exit 0 at once, creating nothing
//	no-limit         never write the memory limit
//	killed           SIGKILL itself once the cgroup and limit are in place
//	hang             sleep for an hour once the cgroup and limit are in place
//	kernel-accepted  ignore a kernel-memory limit (as rc6 nokmem does)
//	kernel-killed    SIGKILL itself when given a kernel-memory limit
//	kernel-failed    fail with an unrelated error when given a kernel-memory limit
//	io_uring         set up an io_uring (whose I/O the ptrace detector cannot see)
//
// "ok" refuses a kernel-memory limit as rc7+ nokmem builds do.
const fakeRuncSource = `package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

func main() { os.Exit(fakeRunc(os.Getenv("` + fakeRuncEnv + `"))) }

func fakeRunc(mode string) int {
	args := os.Args[1:]
	root := "/run/fake-runc"
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "--root", "--log":
			if len(args) < 2 {
				return die("%s needs a value", args[0])
			}
			if args[0] == "--root" {
				root = args[1]
			}
			args = args[2:]
		default:
			args = args[1:]
		}
	}
	if len(args) == 1 && strings.HasPrefix(args[0], "/") {
		return probe(mode, args[0])
	}
	if len(args) == 0 {
		return die("no command")
	}
	switch args[0] {
	case "run":
		bundle, id := ".", ""
		for i := 1; i < len(args); i++ {
			if args[i] == "--bundle" && i+1 < len(args) {
				i++
				bundle = args[i]
				continue
			}
			id = args[i]
		}
		return run(mode, root, bundle, id)
	case "delete":
		id := args[len(args)-1]
		if b, err := os.ReadFile(filepath.Join(root, id, "cgroup")); err == nil {
			syscall.Rmdir(string(b))
		}
		os.RemoveAll(filepath.Join(root, id))
		return 0
	}
	return die("unknown command %q", args[0])
}

func die(format string, a ...interface{}) int {
	fmt.Fprintf(os.Stderr, "fake runc: "+format+"\n", a...)
	return 1
}

// memoryMount reads the cgroup v1 memory hierarchy from mountinfo.
func memoryMount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, x := range fields {
			if x == "-" && i+3 < len(fields) && fields[i+1] == "cgroup" {
				for _, o := range strings.Split(fields[i+3], ",") {
					if o == "memory" {
						return fields[4], nil
					}
				}
			}
		}
	}
	return "", fmt.Errorf("no cgroup v1 memory hierarchy")
}

func probe(mode, cgroupsPath string) int {
	if mode == "no-cgroup" {
		return 0
	}
	mount, err := memoryMount()
	if err != nil {
		return die("%v", err)
	}
	if err := os.Mkdir(filepath.Join(mount, cgroupsPath), 0755); err != nil {
		return die("%v", err)
	}
	switch mode {
	case "killed":
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	case "hang":
		time.Sleep(time.Hour)
	}
	return 0
}

func run(mode, root, bundle, id string) int {
	if mode == "no-cgroup" {
		return 0
	}
	if mode == "io_uring" {
		params := make([]byte, 120) // struct io_uring_params
		if fd, _, e := syscall.Syscall(425, 1, uintptr(unsafe.Pointer(&params[0])), 0); e == 0 { // io_uring_setup
			syscall.Close(int(fd))
		}
	}
	var spec struct {
		Process struct{ Args []string }
		Root    struct{ Path string }
		Linux   struct {
			CgroupsPath string
			Resources   struct{ Memory struct{ Limit, Kernel int64 } }
		}
	}
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err == nil {
		err = json.Unmarshal(b, &spec) // field names match case-insensitively
	}
	if err != nil {
		return die("config.json: %v", err)
	}
	mount, err := memoryMount()
	if err != nil {
		return die("%v", err)
	}
	cg := filepath.Join(mount, spec.Linux.CgroupsPath)
	if err := os.MkdirAll(filepath.Join(root, id), 0700); err != nil {
		return die("%v", err)
	}
	os.WriteFile(filepath.Join(root, id, "cgroup"), []byte(cg), 0600)
	defer syscall.Rmdir(cg)
	if err := os.Mkdir(cg, 0755); err != nil {
		return die("%v", err)
	}
	// Apply: start the container's process and join it to the cgroup.
	c := exec.Command(filepath.Join(bundle, spec.Root.Path, spec.Process.Args[0]))
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := c.Start(); err != nil {
		return die("%v", err)
	}
	stop := func() { c.Process.Kill(); c.Wait() }
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(c.Process.Pid)), 0644); err != nil {
		stop()
		return die("join cgroup: %v", err)
	}
	// Set: write the limits.
	if mode == "late-limit" {
		time.Sleep(300 * time.Millisecond)
	}
	if mode != "no-limit" {
		if err := os.WriteFile(filepath.Join(cg, "memory.limit_in_bytes"), []byte(strconv.FormatInt(spec.Linux.Resources.Memory.Limit, 10)), 0644); err != nil {
			stop()
			return die("set memory limit: %v", err)
		}
	}
	if spec.Linux.Resources.Memory.Kernel != 0 {
		switch mode {
		case "kernel-accepted":
		case "kernel-killed":
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		case "kernel-failed":
			stop()
			return die("container_linux.go: starting container process caused: something unrelated went wrong")
		default:
			stop()
			return die("container_linux.go: starting container process caused: process_linux.go: setting cgroup config: kernel memory accounting disabled in this runc build")
		}
	}
	switch mode {
	case "killed":
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	case "hang":
		time.Sleep(time.Hour)
	}
	if err := c.Wait(); err != nil {
		return 1
	}
	return 0
}
`
