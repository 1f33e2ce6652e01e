package verify

import (
	"bytes"
	"encoding/binary"
	"os"

	"github.com/nokmem/nokmem/internal/fileutil"
)

// Two tiny static x86-64 programs, assembled from the source in the
// comments (GNU as, Intel syntax) and wrapped in a minimal ELF by tinyELF.
// They need no libc, no Go runtime and no toolchain on the host under test.

// initCode is the container process of the dynamic check: it reads stdin
// until EOF, then exits 0, so the verifier decides how long the container
// (and its memory cgroup) lives.
//
//	_start: xor eax,eax; xor edi,edi; lea rsi,[rsp-128]; mov edx,64; syscall  // read(0, buf, 64)
//	        test rax,rax; jg _start
//	        xor edi,edi; mov eax,60; syscall                                  // exit(0)
var initCode = []byte{
	0x31, 0xc0, 0x31, 0xff, 0x48, 0x8d, 0x74, 0x24, 0x80, 0xba, 0x40, 0x00,
	0x00, 0x00, 0x0f, 0x05, 0x48, 0x85, 0xc0, 0x7f, 0xeb, 0x31, 0xff, 0xb8,
	0x3c, 0x00, 0x00, 0x00, 0x0f, 0x05,
}

// canaryCode is the self-test's kmem writer: chdir(argv[1]), then
// open("memory.kmem.limit_in_bytes", O_WRONLY) by a relative path, and
// write "-1". On Linux 3.10 writing the unlimited value to a cgroup whose
// kmem accounting is off does not activate it (memcg_update_kmem_limit only
// activates for a limit other than RESOURCE_MAX), so the canary does not
// cause the leak it is there to detect. Exit status 0 means it wrote.
//
//	mov rdi,[rsp+16]; mov eax,80; syscall; test rax,rax; jnz fail           // chdir(argv[1])
//	lea rdi,[rip+path]; mov esi,1; mov eax,2; syscall; test rax,rax; js fail // open(path, O_WRONLY)
//	mov rdi,rax; lea rsi,[rip+val]; mov edx,2; mov eax,1; syscall           // write(fd, "-1", 2)
//	cmp rax,2; jne fail; xor edi,edi; mov eax,60; syscall                   // exit(0)
//	fail: mov edi,1; mov eax,60; syscall                                    // exit(1)
//	path: .asciz "memory.kmem.limit_in_bytes"; val: .ascii "-1"
var canaryCode = []byte{
	0x48, 0x8b, 0x7c, 0x24, 0x10, 0xb8, 0x50, 0x00, 0x00, 0x00, 0x0f, 0x05,
	0x48, 0x85, 0xc0, 0x75, 0x3d, 0x48, 0x8d, 0x3d, 0x42, 0x00, 0x00, 0x00,
	0xbe, 0x01, 0x00, 0x00, 0x00, 0xb8, 0x02, 0x00, 0x00, 0x00, 0x0f, 0x05,
	0x48, 0x85, 0xc0, 0x78, 0x25, 0x48, 0x89, 0xc7, 0x48, 0x8d, 0x35, 0x42,
	0x00, 0x00, 0x00, 0xba, 0x02, 0x00, 0x00, 0x00, 0xb8, 0x01, 0x00, 0x00,
	0x00, 0x0f, 0x05, 0x48, 0x83, 0xf8, 0x02, 0x75, 0x09, 0x31, 0xff, 0xb8,
	0x3c, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xbf, 0x01, 0x00, 0x00, 0x00, 0xb8,
	0x3c, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x6d, 0x65, 0x6d, 0x6f, 0x72, 0x79,
	0x2e, 0x6b, 0x6d, 0x65, 0x6d, 0x2e, 0x6c, 0x69, 0x6d, 0x69, 0x74, 0x5f,
	0x69, 0x6e, 0x5f, 0x62, 0x79, 0x74, 0x65, 0x73, 0x00, 0x2d, 0x31,
}

// tinyELF wraps position-independent code in an ELF64 executable with one
// read+execute PT_LOAD segment at 0x400000; the code starts at offset 120.
func tinyELF(code []byte) []byte {
	const base, hdr = 0x400000, 64 + 56
	b := make([]byte, hdr, hdr+len(code))
	le := binary.LittleEndian
	copy(b, []byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0})
	le.PutUint16(b[16:], 2)        // ET_EXEC
	le.PutUint16(b[18:], 62)       // EM_X86_64
	le.PutUint32(b[20:], 1)        // EV_CURRENT
	le.PutUint64(b[24:], base+hdr) // e_entry
	le.PutUint64(b[32:], 64)       // e_phoff
	le.PutUint16(b[52:], 64)       // e_ehsize
	le.PutUint16(b[54:], 56)       // e_phentsize
	le.PutUint16(b[56:], 1)        // e_phnum
	p := b[64:]
	le.PutUint32(p[0:], 1)                      // PT_LOAD
	le.PutUint32(p[4:], 5)                      // PF_R|PF_X
	le.PutUint64(p[16:], base)                  // p_vaddr
	le.PutUint64(p[24:], base)                  // p_paddr
	le.PutUint64(p[32:], uint64(hdr+len(code))) // p_filesz
	le.PutUint64(p[40:], uint64(hdr+len(code))) // p_memsz
	le.PutUint64(p[48:], 0x1000)                // p_align
	return append(b, code...)
}

func writeExecutable(path string, code []byte) error {
	return writeFileNoFork(path, tinyELF(code))
}

// writeFileNoFork writes an executable file with no fork in between (the
// self-test and a run go on side by side; see fileutil.Write).
func writeFileNoFork(path string, content []byte) error {
	return fileutil.Write(path, bytes.NewReader(content), 0o755, os.O_TRUNC)
}
