package verify_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/nokmem/nokmem/internal/testenv"
	"github.com/nokmem/nokmem/verify"
)

// Every syscall route to memory.kmem.limit_in_bytes, taken by a small
// writer under both detectors as a run of the dynamic check takes them:
// the routes the seccomp filter stops on must each be reported by the
// ptrace detector (and any write that happened by fanotify too), and the
// routes it lets through must each be shown unable to change the file's
// value. docs/verifier.md, "What the ptrace detector stops on", says why
// the list is complete.
func TestEveryRouteToTheKmemFile(t *testing.T) {
	testenv.RequireDynamic(t)
	mount, err := verify.MemoryMount()
	if err != nil {
		t.Fatal(err)
	}
	writer := routesBinary(t)
	cases := []struct {
		route string
		// inherit: fd 3 is the file, opened for writing by the test, i.e.
		// outside the traced tree: only the write family can see the write.
		inherit bool
		// ptrace: the syscalls the ptrace detector must report, in order;
		// none for a route it does not stop on.
		ptrace []string
		// untraced: what the detector's list of syscalls it cannot see
		// through must name (the run is then not a pass).
		untraced string
		// result: how the writer's "result:" line must start.
		result string
		// other: the report must come from another task than the writer's
		// first one (a child process, another thread).
		other bool
	}{
		// Traced: the open family, checked at the syscall's exit.
		{route: "open", ptrace: []string{"open(write)"}, result: "opened"},
		{route: "creat", ptrace: []string{"creat(write)"}, result: "opened"},
		{route: "openat-relative", ptrace: []string{"openat(write)", "write"}, result: "wrote"},
		{route: "openat2-dirfd", ptrace: []string{"openat2(write)", "write"}, result: "wrote"},
		{route: "open-by-handle", ptrace: []string{"open_by_handle_at(write)", "write"}, result: "wrote"},
		{route: "opath-reopen", ptrace: []string{"open(write)", "write"}, result: "wrote"},
		{route: "symlink-writev", ptrace: []string{"open(write)", "writev"}, result: "wrote"},
		{route: "write-rmdir", ptrace: []string{"open(write)", "write"}, result: "wrote"},
		{route: "child", ptrace: []string{"openat(write)", "write"}, result: "wrote", other: true},
		{route: "thread", ptrace: []string{"open(write)", "write"}, result: "wrote", other: true},
		// Traced: the write family, checked at entry, on a descriptor no
		// traced open produced.
		{route: "write", inherit: true, ptrace: []string{"write"}, result: "wrote"},
		{route: "dup-write", inherit: true, ptrace: []string{"write"}, result: "wrote"},
		{route: "pwrite64", inherit: true, ptrace: []string{"pwrite64"}, result: "wrote"},
		{route: "writev", inherit: true, ptrace: []string{"writev"}, result: "wrote"},
		{route: "pwritev", inherit: true, ptrace: []string{"pwritev"}, result: "wrote"},
		{route: "pwritev2", inherit: true, ptrace: []string{"pwritev2"}, result: "wrote"},
		{route: "sendfile", inherit: true, ptrace: []string{"sendfile"}, result: "wrote"},
		{route: "splice", inherit: true, ptrace: []string{"splice"}, result: "wrote"},
		// The kernel refuses it across filesystems today; the attempt counts.
		{route: "copy_file_range", inherit: true, ptrace: []string{"copy_file_range"}, result: ""},
		// Traced, and not seen through: a run that uses them is not a pass.
		{route: "io_uring", untraced: "io_uring_setup", result: "io_uring_setup"},
		{route: "aio", untraced: "io_setup", result: "io_setup"},
		{route: "x32", untraced: "x32 syscall 2", result: "x32 open"},
		{route: "int80", untraced: "32-bit syscall 5 (int 0x80)", result: ""},
		// Not traced: none of them can change a cgroup file's value.
		{route: "rdonly", result: "read"},
		{route: "truncate", result: "value unchanged"},
		{route: "mmap", result: "refused"},
		{route: "ioctl", result: "refused"},
		{route: "rename-link", result: "refused"},
		{route: "fallocate", inherit: true, result: "refused"},
		{route: "tee", inherit: true, result: "refused"},
		{route: "vmsplice", inherit: true, result: "refused"},
	}
	for _, c := range cases {
		t.Run(c.route, func(t *testing.T) {
			cg := filepath.Join(mount, fmt.Sprintf("nokmem-selftest-route-%s-%d", c.route, os.Getpid()))
			if err := os.Mkdir(cg, 0o755); err != nil {
				t.Fatal(err)
			}
			defer syscall.Rmdir(cg)
			scratch := t.TempDir()
			out, err := os.Create(filepath.Join(t.TempDir(), "output"))
			if err != nil {
				t.Fatal(err)
			}
			defer out.Close()
			cmd := exec.Command(writer, c.route, cg, scratch)
			if c.route == "int80" {
				cmd = exec.Command(int80Writer(t), cg)
			}
			cmd.Stdout, cmd.Stderr = out, out
			if c.inherit {
				f, err := os.OpenFile(filepath.Join(cg, verify.KmemFile), os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				cmd.ExtraFiles = []*os.File{f}
			}
			keep := func(p string) bool { return strings.HasPrefix(p, cg+"/") }
			w, err := verify.WatchCommand(context.Background(), cmd, mount, t.TempDir(), keep)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := os.ReadFile(out.Name())
			output := string(b)
			if w.Finished && w.ExitCode == 3 {
				t.Skipf("the route does not exist on this kernel: %s", output)
			}
			if c.route == "int80" && !w.Finished {
				t.Skipf("no 32-bit syscalls on this kernel (the writer ended: %s)", w.End)
			}
			if !w.Finished || w.ExitCode != 0 {
				t.Fatalf("the writer failed (%s):\n%s", w.End, output)
			}
			result := line(output, "result: ")
			if !strings.HasPrefix(result, c.result) {
				t.Fatalf("the writer's result is %q, want %q…:\n%s", result, c.result, output)
			}
			pid, _ := strconv.Atoi(line(output, "pid: "))
			var calls, fan []string
			for _, e := range w.Events {
				if e.Detector == "fanotify" {
					fan = append(fan, e.Syscall)
					continue
				}
				calls = append(calls, e.Syscall)
				if !strings.HasSuffix(e.Path, "/"+verify.KmemFile) {
					t.Errorf("ptrace event on another file: %+v", e)
				}
				if c.other && e.Pid == pid {
					t.Errorf("the event names the writer's first task %d, not the one that wrote: %+v", pid, e)
				}
			}
			// ptrace: exactly the expected syscalls.
			if strings.Join(calls, " ") != strings.Join(c.ptrace, " ") {
				t.Errorf("ptrace reported %q, want %q", calls, c.ptrace)
			}
			untraced := strings.Join(w.Untraced, "; ")
			if (c.untraced == "") != (untraced == "") || !strings.Contains(untraced, c.untraced) {
				t.Errorf("syscalls the tracer cannot see through: %q, want %q", untraced, c.untraced)
			}
			// fanotify, on its own: every write that happened, and the close
			// of every descriptor the traced tree opened for writing.
			fanSaw := strings.Join(fan, " ")
			switch {
			case (strings.HasPrefix(result, "wrote") || c.route == "int80") && !strings.Contains(fanSaw, "write"):
				t.Errorf("the writer wrote the file, fanotify reported %q", fan)
			case result == "opened" && !strings.Contains(fanSaw, "close-after-open-for-write"):
				t.Errorf("the writer opened the file for writing, fanotify reported %q", fan)
			case c.ptrace == nil && c.untraced == "" && len(fan) > 0:
				t.Errorf("a route that cannot write the file, fanotify reported %q", fan)
			}
			t.Logf("ptrace %q, untraced %q, fanotify %q, %d ptrace stops", calls, w.Untraced, fan, w.Stops)
		})
	}
}

// line returns the rest of the first line of output that starts with prefix.
func line(output, prefix string) string {
	sc := bufio.NewScanner(strings.NewReader(output))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			return v
		}
	}
	return ""
}

var (
	routesOnce sync.Once
	routesBin  string
	routesErr  error
)

// routesBinary builds the route writer (routesSource) once.
func routesBinary(t *testing.T) string {
	t.Helper()
	routesOnce.Do(func() {
		dir := filepath.Join(repoDir, "routes")
		if routesErr = os.MkdirAll(dir, 0o755); routesErr != nil {
			return
		}
		if routesErr = os.WriteFile(filepath.Join(dir, "main.go"), []byte(routesSource), 0o644); routesErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", "routes", "main.go")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GO111MODULE=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			routesErr = fmt.Errorf("go build the route writer: %v\n%s", err, out)
			return
		}
		routesBin = filepath.Join(dir, "routes")
	})
	if routesErr != nil {
		t.Fatal(routesErr)
	}
	return routesBin
}

// int80Writer writes the 32-bit-ABI writer, a tiny static program.
func int80Writer(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "int80")
	if err := os.WriteFile(p, verify.TinyELF(int80Code), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// int80Code writes the file through the 32-bit ABI from a 64-bit process:
// chdir(argv[1]) natively, then open (i386 number 5) and write (4) with
// int 0x80, whose numbers mean fstat and stat on x86-64. Exit 0: it wrote.
//
//	mov rdi,[rsp+16]; mov eax,80; syscall; test rax,rax; jnz fail   // chdir(argv[1])
//	lea ebx,[rip+path]; mov ecx,1; mov eax,5; int 0x80               // open(path, O_WRONLY)
//	test eax,eax; js fail; mov ebx,eax
//	lea ecx,[rip+val]; mov edx,2; mov eax,4; int 0x80                // write(fd, "-1", 2)
//	cmp eax,2; jne fail; xor edi,edi; mov eax,60; syscall            // exit(0)
//	fail: mov edi,1; mov eax,60; syscall                             // exit(1)
//	path: .asciz "memory.kmem.limit_in_bytes"; val: .ascii "-1"
var int80Code = []byte{
	0x48, 0x8b, 0x7c, 0x24, 0x10, 0xb8, 0x50, 0x00, 0x00, 0x00, 0x0f, 0x05,
	0x48, 0x85, 0xc0, 0x75, 0x38, 0x8d, 0x1d, 0x3e, 0x00, 0x00, 0x00, 0xb9,
	0x01, 0x00, 0x00, 0x00, 0xb8, 0x05, 0x00, 0x00, 0x00, 0xcd, 0x80, 0x85,
	0xc0, 0x78, 0x22, 0x89, 0xc3, 0x8d, 0x0d, 0x41, 0x00, 0x00, 0x00, 0xba,
	0x02, 0x00, 0x00, 0x00, 0xb8, 0x04, 0x00, 0x00, 0x00, 0xcd, 0x80, 0x83,
	0xf8, 0x02, 0x75, 0x09, 0x31, 0xff, 0xb8, 0x3c, 0x00, 0x00, 0x00, 0x0f,
	0x05, 0xbf, 0x01, 0x00, 0x00, 0x00, 0xb8, 0x3c, 0x00, 0x00, 0x00, 0x0f,
	0x05, 0x6d, 0x65, 0x6d, 0x6f, 0x72, 0x79, 0x2e, 0x6b, 0x6d, 0x65, 0x6d,
	0x2e, 0x6c, 0x69, 0x6d, 0x69, 0x74, 0x5f, 0x69, 0x6e, 0x5f, 0x62, 0x79,
	0x74, 0x65, 0x73, 0x00, 0x2d, 0x31,
}

// routesSource is the route writer: routes ROUTE CGROUPDIR SCRATCHDIR. It
// uses the standard library only (built in GOPATH mode, offline).
const routesSource = `// Command routes reaches memory.kmem.limit_in_bytes of a cgroup through one
// syscall route: routes ROUTE CGROUPDIR SCRATCHDIR. Fd 3, when the route
// needs it, is the file opened for writing by the caller. It prints
// "result: wrote" when "-1" reached the file, "result: refused <errno>"
// when the route's syscall failed as the route expects, and exits 0; 3
// when the route does not exist on this kernel; 1 otherwise.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"unsafe"
)

const kmem = "memory.kmem.limit_in_bytes"

// x86-64 syscall numbers the standard library's syscall package lacks.
const (
	sysOpenat2        = 437
	sysPwritev2       = 328
	sysCopyFileRange  = 326
	sysIoUringSetup   = 425
	sysNameToHandleAt = 303
	sysOpenByHandleAt = 304
	x32Bit            = 0x40000000
	inherited         = 3
	handleBytes       = 128
	oPath             = 0x200000
)

var val = []byte("-1")

// The main goroutine keeps the main thread, so the "thread" route's writer
// runs on another one.
func init() { runtime.LockOSThread() }

func main() {
	if len(os.Args) != 4 {
		die("usage: routes ROUTE CGROUPDIR SCRATCHDIR")
	}
	route, cg, scratch := os.Args[1], os.Args[2], os.Args[3]
	f, ok := routes[route]
	if !ok {
		die("unknown route %q", route)
	}
	fmt.Printf("pid: %d\n", os.Getpid())
	f(cg, scratch)
}

func die(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "routes: "+format+"\n", a...)
	os.Exit(1)
}

func wrote()                  { fmt.Println("result: wrote"); os.Exit(0) }
func refused(e syscall.Errno) { fmt.Println("result: refused " + e.Error()); os.Exit(0) }
func unavailable(why string)  { fmt.Println("unavailable: " + why); os.Exit(3) }
func check(n uintptr, e syscall.Errno, what string) {
	if e != 0 {
		die("%s: %v", what, e)
	}
}

func ptr(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

func cstr(s string) []byte { return append([]byte(s), 0) }

// expect says the syscall must have failed with one of errs.
func expect(e syscall.Errno, what string, errs ...syscall.Errno) {
	for _, x := range errs {
		if e == x {
			refused(e)
		}
	}
	die("%s: got %v, want one of %v", what, e, errs)
}

// writeAll writes "-1" with write(2) on fd and reports it.
func writeAll(fd uintptr, what string) {
	n, _, e := syscall.Syscall(syscall.SYS_WRITE, fd, ptr(val), uintptr(len(val)))
	check(n, e, what)
	wrote()
}

func open(path string, flags int) uintptr {
	p := cstr(path)
	fd, _, e := syscall.Syscall(syscall.SYS_OPEN, ptr(p), uintptr(flags), 0)
	check(fd, e, "open "+path)
	return fd
}

func pipe() (r, w uintptr) {
	var p [2]int
	if err := syscall.Pipe(p[:]); err != nil {
		die("pipe: %v", err)
	}
	return uintptr(p[0]), uintptr(p[1])
}

// source returns a file in scratch holding "-1", opened for reading.
func source(scratch string) uintptr {
	p := filepath.Join(scratch, "source")
	if err := os.WriteFile(p, val, 0o644); err != nil {
		die("%v", err)
	}
	return open(p, syscall.O_RDONLY)
}

var routes = map[string]func(cg, scratch string){
	// The open family, each opening the file for writing (and nothing else).
	"open": func(cg, _ string) {
		open(filepath.Join(cg, kmem), syscall.O_WRONLY)
		fmt.Println("result: opened")
	},
	"creat": func(cg, _ string) {
		p := cstr(filepath.Join(cg, kmem))
		_, _, e := syscall.Syscall(syscall.SYS_CREAT, ptr(p), 0o644, 0)
		check(0, e, "creat")
		fmt.Println("result: opened")
	},
	"openat-relative": func(cg, _ string) {
		if err := os.Chdir(cg); err != nil {
			die("%v", err)
		}
		p := cstr(kmem)
		fd, _, e := syscall.Syscall6(syscall.SYS_OPENAT, uintptr(0xffffffffffffff9c), ptr(p), syscall.O_WRONLY, 0, 0, 0) // AT_FDCWD
		check(fd, e, "openat")
		writeAll(fd, "write")
	},
	// openat2 relative to a directory fd of the memory hierarchy, as runc
	// rc93 does through libcontainer's securejoin.
	"openat2-dirfd": func(cg, _ string) {
		dir := open(filepath.Dir(cg), oPath|syscall.O_DIRECTORY)
		p := cstr(filepath.Join(filepath.Base(cg), kmem))
		how := struct{ flags, mode, resolve uint64 }{flags: syscall.O_WRONLY}
		fd, _, e := syscall.Syscall6(sysOpenat2, dir, ptr(p), uintptr(unsafe.Pointer(&how)), unsafe.Sizeof(how), 0, 0)
		if e == syscall.ENOSYS {
			unavailable("openat2: ENOSYS (Linux < 5.6)")
		}
		check(fd, e, "openat2")
		writeAll(fd, "write")
	},
	"open-by-handle": func(cg, _ string) {
		p := cstr(filepath.Join(cg, kmem))
		h := make([]byte, 8+handleBytes)
		*(*uint32)(unsafe.Pointer(&h[0])) = handleBytes
		var mountID int32
		_, _, e := syscall.Syscall6(sysNameToHandleAt, uintptr(0xffffffffffffff9c), ptr(p), ptr(h), uintptr(unsafe.Pointer(&mountID)), 0, 0)
		if e == syscall.EOPNOTSUPP {
			unavailable("name_to_handle_at: the cgroup filesystem exports no file handles here")
		}
		check(0, e, "name_to_handle_at")
		mnt := open(filepath.Dir(cg), syscall.O_RDONLY|syscall.O_DIRECTORY)
		fd, _, e := syscall.Syscall(sysOpenByHandleAt, mnt, ptr(h), syscall.O_WRONLY)
		if e == syscall.EOPNOTSUPP || e == syscall.ESTALE {
			unavailable("open_by_handle_at: " + e.Error())
		}
		check(fd, e, "open_by_handle_at")
		writeAll(fd, "write")
	},
	// A read-only open, which the filter lets run: it can write nothing.
	"rdonly": func(cg, _ string) {
		fd := open(filepath.Join(cg, kmem), syscall.O_RDONLY)
		b := make([]byte, 64)
		if _, err := syscall.Read(int(fd), b); err != nil {
			die("read: %v", err)
		}
		fmt.Println("result: read")
	},
	// An O_PATH descriptor (let through as read-only) made writable: only
	// a new open can, through /proc/self/fd.
	"opath-reopen": func(cg, _ string) {
		fd := open(filepath.Join(cg, kmem), oPath)
		writeAll(open(fmt.Sprintf("/proc/self/fd/%d", fd), syscall.O_WRONLY), "write")
	},
	// A symlink elsewhere that names the file, then writev.
	"symlink-writev": func(cg, scratch string) {
		link := filepath.Join(scratch, "link")
		if err := os.Symlink(filepath.Join(cg, kmem), link); err != nil {
			die("%v", err)
		}
		fd := open(link, syscall.O_WRONLY)
		iov := syscall.Iovec{Base: &val[0], Len: uint64(len(val))}
		n, _, e := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov)), 1)
		check(n, e, "writev")
		wrote()
	},
	// A writer that removes its cgroup right after writing, as runc's
	// cleanup does: fanotify must read the event while the file can still
	// be opened.
	"write-rmdir": func(cg, _ string) {
		sub := filepath.Join(cg, "sub")
		if err := os.Mkdir(sub, 0o755); err != nil {
			die("%v", err)
		}
		fd := open(filepath.Join(sub, kmem), syscall.O_WRONLY)
		n, _, e := syscall.Syscall(syscall.SYS_WRITE, fd, ptr(val), uintptr(len(val)))
		check(n, e, "write")
		syscall.Close(int(fd))
		if err := syscall.Rmdir(sub); err != nil {
			die("rmdir: %v", err)
		}
		wrote()
	},
	// A writer in a child process (fork and exec) and in another thread.
	"child": func(cg, scratch string) {
		c := exec.Command(os.Args[0], "openat-relative", cg, scratch)
		c.Stdout, c.Stderr = os.Stdout, os.Stderr
		if err := c.Run(); err != nil {
			die("child: %v", err)
		}
	},
	"thread": func(cg, _ string) {
		done := make(chan uintptr)
		go func() {
			fd := open(filepath.Join(cg, kmem), syscall.O_WRONLY)
			n, _, e := syscall.Syscall(syscall.SYS_WRITE, fd, ptr(val), uintptr(len(val)))
			check(n, e, "write")
			done <- uintptr(syscall.Gettid())
		}()
		if tid := <-done; int(tid) == os.Getpid() {
			die("the write ran on the main thread")
		}
		wrote()
	},
	// The write family, on the descriptor the caller opened (fd 3): no
	// open in the traced tree names the file.
	"write": func(string, string) { writeAll(inherited, "write") },
	"dup-write": func(string, string) {
		fd, err := syscall.Dup(inherited)
		if err != nil {
			die("dup: %v", err)
		}
		writeAll(uintptr(fd), "write")
	},
	"pwrite64": func(string, string) {
		n, _, e := syscall.Syscall6(syscall.SYS_PWRITE64, inherited, ptr(val), uintptr(len(val)), 0, 0, 0)
		check(n, e, "pwrite64")
		wrote()
	},
	"writev": func(string, string) {
		iov := syscall.Iovec{Base: &val[0], Len: uint64(len(val))}
		n, _, e := syscall.Syscall(syscall.SYS_WRITEV, inherited, uintptr(unsafe.Pointer(&iov)), 1)
		check(n, e, "writev")
		wrote()
	},
	"pwritev": func(string, string) {
		iov := syscall.Iovec{Base: &val[0], Len: uint64(len(val))}
		n, _, e := syscall.Syscall6(syscall.SYS_PWRITEV, inherited, uintptr(unsafe.Pointer(&iov)), 1, 0, 0, 0)
		check(n, e, "pwritev")
		wrote()
	},
	"pwritev2": func(string, string) {
		iov := syscall.Iovec{Base: &val[0], Len: uint64(len(val))}
		n, _, e := syscall.Syscall6(sysPwritev2, inherited, uintptr(unsafe.Pointer(&iov)), 1, ^uintptr(0), 0, 0) // offset -1: the file position
		if e == syscall.ENOSYS {
			unavailable("pwritev2: ENOSYS (Linux < 4.6)")
		}
		check(n, e, "pwritev2")
		wrote()
	},
	"sendfile": func(_, scratch string) {
		in := source(scratch)
		_, _, e := syscall.Syscall6(syscall.SYS_SENDFILE, inherited, in, 0, uintptr(len(val)), 0, 0)
		if e != 0 {
			expect(e, "sendfile", syscall.EINVAL)
		}
		wrote()
	},
	"splice": func(string, string) {
		r, w := pipe()
		syscall.Write(int(w), val)
		_, _, e := syscall.Syscall6(syscall.SYS_SPLICE, r, 0, inherited, 0, uintptr(len(val)), 0)
		if e != 0 {
			expect(e, "splice", syscall.EINVAL)
		}
		wrote()
	},
	"copy_file_range": func(_, scratch string) {
		in := source(scratch)
		_, _, e := syscall.Syscall6(sysCopyFileRange, in, 0, inherited, 0, uintptr(len(val)), 0)
		if e != 0 {
			expect(e, "copy_file_range", syscall.EXDEV, syscall.EINVAL, syscall.EOPNOTSUPP)
		}
		wrote()
	},
	// Interfaces whose I/O the tracer cannot attribute: using one at all
	// makes the run unjudgeable.
	"io_uring": func(string, string) {
		params := make([]byte, 120) // struct io_uring_params
		fd, _, e := syscall.Syscall(sysIoUringSetup, 1, ptr(params), 0)
		if e == 0 {
			syscall.Close(int(fd))
		}
		fmt.Printf("result: io_uring_setup %v\n", e)
	},
	"aio": func(string, string) {
		var ctx uintptr
		_, _, e := syscall.Syscall(syscall.SYS_IO_SETUP, 1, uintptr(unsafe.Pointer(&ctx)), 0)
		fmt.Printf("result: io_setup %v\n", e)
	},
	// An x32 open: traced whatever the kernel then does with it (x32 is
	// usually compiled out or switched off: ENOSYS).
	"x32": func(cg, _ string) {
		p := cstr(filepath.Join(cg, kmem))
		fd, _, e := syscall.Syscall(x32Bit|syscall.SYS_OPEN, ptr(p), syscall.O_WRONLY, 0)
		if e == 0 {
			writeAll(fd, "write")
		}
		fmt.Printf("result: x32 open %v\n", e)
	},
	// Routes that cannot change a cgroup file's value, each shown failing
	// or leaving the value alone.
	"truncate": func(cg, _ string) {
		// memory.limit_in_bytes stands in for the kmem file (whose value
		// no write changes on Linux 6.x): same kernfs file operations.
		limit := filepath.Join(cg, "memory.limit_in_bytes")
		if err := os.WriteFile(limit, []byte("67108864"), 0); err != nil {
			die("%v", err)
		}
		for _, p := range []string{limit, filepath.Join(cg, kmem)} {
			if err := syscall.Truncate(p, 0); err != nil {
				die("truncate %s: %v", p, err)
			}
		}
		b, err := os.ReadFile(limit)
		if err != nil || strings.TrimSpace(string(b)) != "67108864" {
			die("truncate changed memory.limit_in_bytes to %q (%v)", b, err)
		}
		fmt.Println("result: value unchanged")
	},
	"mmap": func(cg, _ string) {
		fd := open(filepath.Join(cg, kmem), syscall.O_RDONLY)
		_, err := syscall.Mmap(int(fd), 0, 4096, syscall.PROT_READ, syscall.MAP_SHARED)
		if err == nil {
			die("mmap of a cgroup file succeeded")
		}
		expect(err.(syscall.Errno), "mmap", syscall.ENODEV, syscall.EINVAL)
	},
	"ioctl": func(cg, _ string) {
		fd := open(filepath.Join(cg, kmem), syscall.O_RDONLY)
		var flags int
		_, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, 0x80086601, uintptr(unsafe.Pointer(&flags))) // FS_IOC_GETFLAGS
		expect(e, "ioctl", syscall.ENOTTY, syscall.EINVAL, syscall.EOPNOTSUPP)
	},
	"fallocate": func(string, string) {
		_, _, e := syscall.Syscall6(syscall.SYS_FALLOCATE, inherited, 0, 0, 2, 0, 0)
		expect(e, "fallocate", syscall.EOPNOTSUPP, syscall.ENODEV, syscall.EINVAL)
	},
	"tee": func(string, string) {
		r, w := pipe()
		syscall.Write(int(w), val)
		_, _, e := syscall.Syscall6(syscall.SYS_TEE, r, inherited, uintptr(len(val)), 0, 0, 0)
		expect(e, "tee", syscall.EINVAL)
	},
	"vmsplice": func(string, string) {
		iov := syscall.Iovec{Base: &val[0], Len: uint64(len(val))}
		_, _, e := syscall.Syscall6(syscall.SYS_VMSPLICE, inherited, uintptr(unsafe.Pointer(&iov)), 1, 0, 0, 0)
		expect(e, "vmsplice", syscall.EBADF)
	},
	"rename-link": func(cg, scratch string) {
		p := filepath.Join(cg, kmem)
		for what, err := range map[string]error{
			"rename":         os.Rename(p, filepath.Join(cg, "moved")),
			"link":           os.Link(p, filepath.Join(cg, "linked")),
			"link elsewhere": os.Link(p, filepath.Join(scratch, "linked")),
		} {
			if err == nil {
				die("%s of a cgroup file succeeded", what)
			}
		}
		fmt.Println("result: refused")
	},
}
`
