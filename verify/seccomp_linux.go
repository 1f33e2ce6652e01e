package verify

import (
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The ptrace detector does not stop the traced tree on every syscall: a
// seccomp-bpf filter, installed in the traced process before it runs the
// binary and inherited by everything it starts, returns SECCOMP_RET_TRACE
// (a PTRACE_EVENT_SECCOMP stop) only for the syscalls below and lets every
// other syscall run at full speed, as `strace --seccomp-bpf` does. Why the
// list is complete: docs/verifier.md, "What the ptrace detector stops on".

// callKind says what the tracer does at a traced syscall.
type callKind int

const (
	// callOpen opens a file: the descriptor it returns is resolved at the
	// syscall's exit, and counts if it names the kmem file with write access.
	callOpen callKind = iota + 1
	// callWrite writes through the descriptor in argument fdArg: resolved
	// at entry, it counts if it names the kmem file, however it was opened
	// (inherited, passed over a socket by a process outside the tree, …).
	callWrite
	// callOpaque does file I/O the tracer cannot attribute to a descriptor
	// it sees (io_uring, Linux AIO): a run that uses it is not a pass.
	callOpaque
	// callRemove may remove a directory (a cgroup): the fanotify detector
	// reads its queue first, while the kernel can still open the files
	// under it for the events (see fanWatch). Not a write.
	callRemove
)

// tracedCall is one x86-64 syscall the filter stops on.
type tracedCall struct {
	nr    uint32
	name  string
	kind  callKind
	fdArg int // callWrite: the argument holding the descriptor written to
	// flagsArg, if not 0, is the argument holding open(2) flags: the
	// filter stops only when they ask for write access (O_WRONLY, O_RDWR;
	// a read-only or O_PATH descriptor can write nothing).
	flagsArg int
}

// tracedCalls are the syscalls through which a process can open a file for
// writing or write to one (x86-64 numbers), and those that remove a
// directory.
var tracedCalls = []tracedCall{
	{nr: unix.SYS_OPEN, name: "open", kind: callOpen, flagsArg: 1},
	{nr: unix.SYS_CREAT, name: "creat", kind: callOpen},
	{nr: unix.SYS_OPENAT, name: "openat", kind: callOpen, flagsArg: 2},
	{nr: unix.SYS_OPENAT2, name: "openat2", kind: callOpen}, // flags in a struct the filter cannot read
	{nr: unix.SYS_OPEN_BY_HANDLE_AT, name: "open_by_handle_at", kind: callOpen, flagsArg: 2},
	{nr: unix.SYS_WRITE, name: "write", kind: callWrite},
	{nr: unix.SYS_PWRITE64, name: "pwrite64", kind: callWrite},
	{nr: unix.SYS_WRITEV, name: "writev", kind: callWrite},
	{nr: unix.SYS_PWRITEV, name: "pwritev", kind: callWrite},
	{nr: unix.SYS_PWRITEV2, name: "pwritev2", kind: callWrite},
	{nr: unix.SYS_SENDFILE, name: "sendfile", kind: callWrite},
	{nr: unix.SYS_SPLICE, name: "splice", kind: callWrite, fdArg: 2},
	{nr: unix.SYS_COPY_FILE_RANGE, name: "copy_file_range", kind: callWrite, fdArg: 2},
	{nr: unix.SYS_IO_SETUP, name: "io_setup", kind: callOpaque},
	{nr: unix.SYS_IO_URING_SETUP, name: "io_uring_setup", kind: callOpaque},
	{nr: unix.SYS_IO_URING_ENTER, name: "io_uring_enter", kind: callOpaque},
	{nr: unix.SYS_IO_URING_REGISTER, name: "io_uring_register", kind: callOpaque},
	{nr: unix.SYS_RMDIR, name: "rmdir", kind: callRemove},
	{nr: unix.SYS_UNLINKAT, name: "unlinkat", kind: callRemove},
}

func lookupCall(nr uint64) (tracedCall, bool) {
	for _, c := range tracedCalls {
		if uint64(c.nr) == nr {
			return c, true
		}
	}
	return tracedCall{}, false
}

// What the filter tells the tracer (SECCOMP_RET_DATA, read with
// PTRACE_GETEVENTMSG): the ABI of the stopped syscall. The high byte is a
// mark of ours: a stop whose data lacks it came from another filter that
// also asked for a trace (a seccomp profile the binary installed itself).
const (
	seccompMark     = 0x6b00
	seccompNative   = seccompMark | 1 // x86-64 syscall from tracedCalls
	seccompCompat   = seccompMark | 2 // another architecture: i386 (int 0x80, sysenter)
	seccompX32      = seccompMark | 3 // x32 ABI (nr | __X32_SYSCALL_BIT)
	x32SyscallBit   = 0x40000000
	seccompDataNr   = 0  // offsetof(struct seccomp_data, nr)
	seccompDataArc  = 4  // offsetof(struct seccomp_data, arch)
	seccompDataArgs = 16 // offsetof(struct seccomp_data, args): six u64, little-endian
)

// seccompFilter is the BPF program: every syscall of another ABI than
// x86-64 (a 32-bit int 0x80 open, an x32 open) is traced, so that none can
// slip past the x86-64 numbers; of the x86-64 ones, tracedCalls, the open
// calls with a flags argument only when it asks for write access.
//
//	ld arch; jeq x86-64 or trace(compat); ld nr; jlt x32 bit or trace(x32)
//	jeq nr[i] → trace, or → the flags test of its argument   (one per call)
//	ret ALLOW
//	ld args[k] (low 32 bits); jset O_WRONLY|O_RDWR → trace, else → allow   (one per flags argument)
//	ret ALLOW
//	trace: ret TRACE|native
func seccompFilter() []bpf.Instruction {
	trace := func(data uint32) bpf.Instruction {
		return bpf.RetConstant{Val: unix.SECCOMP_RET_TRACE | data}
	}
	allow := bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW}
	p := []bpf.Instruction{
		bpf.LoadAbsolute{Off: seccompDataArc, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.AUDIT_ARCH_X86_64, SkipTrue: 1},
		trace(seccompCompat),
		bpf.LoadAbsolute{Off: seccompDataNr, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpLessThan, Val: x32SyscallBit, SkipTrue: 1},
		trace(seccompX32),
	}
	var flagArgs []int // the arguments with a flags test, in order
	for _, c := range tracedCalls {
		if c.flagsArg != 0 && !slices.Contains(flagArgs, c.flagsArg) {
			flagArgs = append(flagArgs, c.flagsArg)
		}
	}
	chain, n := len(p), len(tracedCalls)
	firstTest := chain + n + 1               // after the chain and its ALLOW
	lastAllow := firstTest + 2*len(flagArgs) // after the flags tests
	traceAt := lastAllow + 1
	for i, c := range tracedCalls {
		to := traceAt
		if c.flagsArg != 0 {
			to = firstTest + 2*slices.Index(flagArgs, c.flagsArg)
		}
		p = append(p, bpf.JumpIf{Cond: bpf.JumpEqual, Val: c.nr, SkipTrue: uint8(to - (chain + i + 1))})
	}
	p = append(p, allow)
	for j, arg := range flagArgs {
		at := firstTest + 2*j + 1 // the jset
		p = append(p,
			bpf.LoadAbsolute{Off: seccompDataArgs + 8*uint32(arg), Size: 4}, // the low half: flags are an int
			bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: unix.O_WRONLY | unix.O_RDWR, SkipTrue: uint8(traceAt - (at + 1)), SkipFalse: uint8(lastAllow - (at + 1))})
	}
	return append(p, allow, trace(seccompNative))
}

// launcherCode is the seccomp launcher: the first program the traced
// process runs, assembled from launcherSource (a test assembles it again
// and compares). It installs the filter that follows it in memory, then
// replaces itself with the binary: launcher PATH ARGV0 ARGS... runs PATH
// with ARGV0 ARGS... and the environment unchanged. Exit status 125: the
// kernel refused the filter; 127: execve failed.
//
// A static program of a few instructions, rather than a re-executed Go
// binary, because the filter must be installed between fork and exec,
// where os/exec runs no code of ours: a Go program would need a hidden
// entry point in every binary that links this package (tests, Mage, the
// VM's init), and its runtime threads and syscalls would run before and
// under the filter. This one needs nothing from the host and makes two
// syscalls before the binary starts.
//
// The filter is installed with prctl(PR_SET_SECCOMP), which Linux has had
// since 3.5 (seccomp(2) came with 3.17, after EL7's kernel), without
// PR_SET_NO_NEW_PRIVS: the verifier runs as root (CAP_SYS_ADMIN), and
// no_new_privs would change what the binary may do (setuid programs, file
// capabilities). No filter flag is needed for the binary's own filters
// (runc installs a container's seccomp profile) to stack on ours: filters
// always stack, and the strictest action wins (runc's ERRNO over our
// TRACE: the syscall then does not happen).
var launcherCode = []byte{
	0xbf, 0x16, 0x00, 0x00, 0x00, 0xbe, 0x02, 0x00, 0x00, 0x00, 0x48, 0x8d,
	0x15, 0x3f, 0x00, 0x00, 0x00, 0x45, 0x31, 0xd2, 0x45, 0x31, 0xc0, 0xb8,
	0x9d, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x48, 0x85, 0xc0, 0x75, 0x21, 0x48,
	0x8b, 0x7c, 0x24, 0x10, 0x48, 0x8d, 0x74, 0x24, 0x18, 0x48, 0x8b, 0x0c,
	0x24, 0x48, 0x8d, 0x54, 0xcc, 0x10, 0xb8, 0x3b, 0x00, 0x00, 0x00, 0x0f,
	0x05, 0xbf, 0x7f, 0x00, 0x00, 0x00, 0xeb, 0x05, 0xbf, 0x7d, 0x00, 0x00,
	0x00, 0xb8, 0xe7, 0x00, 0x00, 0x00, 0x0f, 0x05,
}

// tinyELFCode is the address where tinyELF loads the code: its fixed base
// 0x400000 plus the ELF and program headers (a test holds it to tinyELF).
const tinyELFCode = 0x400000 + 64 + 56

// launcherSource is launcherCode's source (GNU as); the filter's struct
// sock_fprog follows the last instruction, then the filter (launcherELF).
const launcherSource = `.intel_syntax noprefix
_start:
	mov edi, 22                 # PR_SET_SECCOMP
	mov esi, 2                  # SECCOMP_MODE_FILTER
	lea rdx, [rip+fprog]
	xor r10d, r10d
	xor r8d, r8d
	mov eax, 157                # prctl
	syscall
	test rax, rax
	jnz refused
	mov rdi, [rsp+16]           # argv[1]: the program
	lea rsi, [rsp+24]           # &argv[2]: its argv, argv[0] first
	mov rcx, [rsp]              # argc
	lea rdx, [rsp+rcx*8+16]     # envp
	mov eax, 59                 # execve
	syscall
	mov edi, 127
	jmp quit
refused:
	mov edi, 125
quit:
	mov eax, 231                # exit_group
	syscall
fprog:
`

// Exit statuses of the launcher itself (see launcherCode).
const (
	launcherRefused    = 125
	launcherExecFailed = 127
)

// launcherELF is the launcher with its filter: code, struct sock_fprog
// (16 bytes: length, padding, absolute address of the filter: the ELF is
// loaded at its fixed address), then the filter's sock_filter entries.
func launcherELF() ([]byte, error) {
	raw, err := bpf.Assemble(seccompFilter())
	if err != nil {
		return nil, fmt.Errorf("assemble the seccomp filter: %w", err)
	}
	le := binary.LittleEndian
	code := append([]byte(nil), launcherCode...)
	fprog := make([]byte, 16)
	le.PutUint16(fprog, uint16(len(raw)))
	le.PutUint64(fprog[8:], tinyELFCode+uint64(len(code))+16)
	code = append(code, fprog...)
	for _, in := range raw {
		var f [8]byte
		le.PutUint16(f[0:], in.Op)
		f[2], f[3] = in.Jt, in.Jf
		le.PutUint32(f[4:], in.K)
		code = append(code, f[:]...)
	}
	return tinyELF(code), nil
}

// procStatusField returns a field of /proc/<pid>/status ("" if absent).
func procStatusField(pid int, name string) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// seccompFilterActive reports whether a process runs under a seccomp
// filter (/proc/<pid>/status "Seccomp: 2", Linux 3.8+).
func seccompFilterActive(pid int) bool {
	return procStatusField(pid, "Seccomp") == strconv.Itoa(unix.SECCOMP_MODE_FILTER)
}
