// Package target decides whether a binary can start on the nodes it is
// built for. A verified nokmem binary that dies before main on a CentOS 7
// node ("version 'GLIBC_2.34' not found") is as useless as one that leaks,
// so the gate reads the ELF file the way the node's dynamic loader and
// kernel will: its linkage (PT_INTERP, DT_NEEDED), the glibc symbol
// versions it imports, the oldest kernel it declares (the GNU ABI note of a
// glibc-linked binary, and the Go release's documented minimum), and the
// x86-64 level it was compiled for (Go's GOAMD64 from the build info, and
// the GNU property note of C objects). RunEmptyRoot then shows the result
// by starting the binary in an empty root directory.
package target

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"

	goversion "github.com/hashicorp/go-version"
)

// Target describes the oldest node of a fleet.
type Target struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// Glibc is the C library version of the target (2.17 on EL7).
	Glibc string `json:"glibc"`
	// Libseccomp is the libseccomp version the target ships.
	Libseccomp string `json:"libseccomp"`
	// Kernel is the oldest kernel of the target.
	Kernel string `json:"kernel"`
	// AMD64Level is the x86-64 micro-architecture level (1 = baseline).
	AMD64Level int `json:"amd64Level"`
	// Libraries are the shared objects every node of the target has, by
	// soname. A dynamic binary may need only these.
	Libraries []string `json:"libraries"`
}

// glibcLibs are the sonames of glibc itself (present on every target).
var glibcLibs = []string{"libc.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libm.so.6", "libresolv.so.2", "ld-linux-x86-64.so.2"}

// Targets are the supported targets. Versions are those of the oldest
// minor release of each distribution line (GA media), because a fleet is
// only as new as its oldest node.
var Targets = []Target{
	{Name: "el7", Description: "CentOS 7 / RHEL 7", Glibc: "2.17", Libseccomp: "2.3.1", Kernel: "3.10.0", AMD64Level: 1,
		Libraries: append(slices.Clone(glibcLibs), "libseccomp.so.2")},
	{Name: "el8", Description: "RHEL 8 / Rocky 8 / Alma 8", Glibc: "2.28", Libseccomp: "2.4.1", Kernel: "4.18.0", AMD64Level: 1,
		Libraries: append(slices.Clone(glibcLibs), "libseccomp.so.2")},
	{Name: "el9", Description: "RHEL 9 / Rocky 9 / Alma 9", Glibc: "2.34", Libseccomp: "2.5.2", Kernel: "5.14.0", AMD64Level: 2,
		Libraries: append(slices.Clone(glibcLibs), "libseccomp.so.2")},
	{Name: "debian11", Description: "Debian 11 (bullseye)", Glibc: "2.31", Libseccomp: "2.5.1", Kernel: "5.10.0", AMD64Level: 1,
		Libraries: append(slices.Clone(glibcLibs), "libseccomp.so.2")},
}

// Names lists the target names.
func Names() []string {
	var n []string
	for _, t := range Targets {
		n = append(n, t.Name)
	}
	return n
}

// Lookup finds a target by name.
func Lookup(name string) (Target, error) {
	for _, t := range Targets {
		if t.Name == name {
			return t, nil
		}
	}
	return Target{}, fmt.Errorf("unknown target %q (known: %s)", name, strings.Join(Names(), ", "))
}

// GoMinKernel returns the oldest Linux kernel a Go release supports on
// amd64 (go.dev/wiki/Linux: 2.6.23 up to Go 1.18, 2.6.32 for 1.19–1.23,
// 3.2 from Go 1.24, go.dev/doc/go1.24#linux).
func GoMinKernel(goVersion string) string {
	minor := GoMinor(goVersion)
	switch {
	case minor == 0:
		return ""
	case minor <= 18:
		return "2.6.23"
	case minor <= 23:
		return "2.6.32"
	default:
		return "3.2.0"
	}
}

// GoMinor parses "go1.12.17", "go1.21rc2" or "1.12" into 12 (0 if not a Go version).
func GoMinor(v string) int {
	v = strings.TrimPrefix(v, "go")
	if !strings.HasPrefix(v, "1.") {
		return 0
	}
	v = v[2:]
	end := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' })
	if end >= 0 {
		v = v[:end]
	}
	n, _ := strconv.Atoi(v)
	return n
}

// Result is the gate's finding for one binary.
type Result struct {
	Target string `json:"target"`
	OK     bool   `json:"ok"`
	// Linkage is "static" or "dynamic".
	Linkage     string   `json:"linkage"`
	Interpreter string   `json:"interpreter,omitempty"`
	Needed      []string `json:"needed,omitempty"`
	// MaxGlibc is the newest GLIBC_x.y symbol version imported.
	MaxGlibc string `json:"maxGlibc,omitempty"`
	// TooNew lists imported symbols whose version the target lacks.
	TooNew []string `json:"tooNew,omitempty"`
	// ABIKernel is the minimum kernel recorded in the GNU ABI note.
	ABIKernel  string `json:"abiKernel,omitempty"`
	GoVersion  string `json:"goVersion,omitempty"`
	GoKernel   string `json:"goKernel,omitempty"`
	GOAMD64    string `json:"goamd64,omitempty"`
	CGOEnabled string `json:"cgoEnabled,omitempty"`
	// ISALevel is the x86-64 level required by the GNU property note (0 if none).
	ISALevel int      `json:"isaLevel,omitempty"`
	Problems []string `json:"problems,omitempty"`
	// EmptyRoot is the run of the binary in an empty root directory.
	EmptyRoot *EmptyRootRun `json:"emptyRoot,omitempty"`
}

// Check reads the ELF file at path and decides whether it can start on t.
func Check(path string, t Target) (*Result, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s is not an ELF binary: %w", path, err)
	}
	defer f.Close()
	r := &Result{Target: t.Name, Linkage: "static"}
	problem := func(format string, a ...any) { r.Problems = append(r.Problems, fmt.Sprintf(format, a...)) }

	if f.Machine != elf.EM_X86_64 || f.Class != elf.ELFCLASS64 {
		problem("built for %s/%s, but %s is x86-64", f.Class, f.Machine, t.Name)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, _ := io.ReadAll(p.Open())
			r.Interpreter = strings.TrimRight(string(b), "\x00")
		}
	}
	if libs, err := f.ImportedLibraries(); err == nil {
		r.Needed = libs
	}
	if r.Interpreter != "" || len(r.Needed) > 0 {
		r.Linkage = "dynamic"
	}
	for _, lib := range r.Needed {
		if !slices.Contains(t.Libraries, lib) {
			problem("needs the shared library %s, which %s nodes do not have (%s provides %s)", lib, t.Name, t.Description, strings.Join(t.Libraries, " "))
		}
	}
	if r.Interpreter != "" && r.Interpreter != "/lib64/ld-linux-x86-64.so.2" {
		problem("needs the program interpreter %s; %s has /lib64/ld-linux-x86-64.so.2", r.Interpreter, t.Name)
	}
	if syms, err := f.ImportedSymbols(); err == nil {
		r.checkGlibc(syms, t)
	}
	if k := abiKernel(f); k != "" {
		r.ABIKernel = k
		if newer(k, t.Kernel) {
			problem("its C runtime requires Linux %s (GNU ABI note), but %s runs %s", k, t.Name, t.Kernel)
		}
	}
	if lvl := isaLevel(f); lvl > 0 {
		r.ISALevel = lvl
		if lvl > t.AMD64Level {
			problem("its C code requires x86-64-v%d (GNU property note), but %s guarantees only x86-64-v%d", lvl, t.Name, t.AMD64Level)
		}
	}
	if bi, err := buildinfo.ReadFile(path); err == nil {
		r.GoVersion = bi.GoVersion
		r.GoKernel = GoMinKernel(bi.GoVersion)
		if r.GoKernel != "" && newer(r.GoKernel, t.Kernel) {
			problem("built with %s, which requires Linux %s or later, but %s runs %s", bi.GoVersion, r.GoKernel, t.Name, t.Kernel)
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "GOAMD64":
				r.GOAMD64 = s.Value
			case "CGO_ENABLED":
				r.CGOEnabled = s.Value
			}
		}
		if r.GOAMD64 == "" && GoMinor(bi.GoVersion) >= 18 {
			// Go 1.18+ records GOAMD64 only when it is not the default v1.
			r.GOAMD64 = "v1"
		}
		if lvl, err := strconv.Atoi(strings.TrimPrefix(r.GOAMD64, "v")); err == nil && lvl > t.AMD64Level {
			problem("built with GOAMD64=%s, but %s guarantees only x86-64-v%d", r.GOAMD64, t.Name, t.AMD64Level)
		}
	}
	r.OK = len(r.Problems) == 0
	return r, nil
}

func (r *Result) checkGlibc(syms []elf.ImportedSymbol, t Target) {
	var max *goversion.Version
	limit := goversion.Must(goversion.NewVersion(t.Glibc))
	var tooNew []string
	for _, s := range syms {
		v, ok := strings.CutPrefix(s.Version, "GLIBC_")
		if !ok {
			continue
		}
		if v == "PRIVATE" {
			tooNew = append(tooNew, s.Name+"@"+s.Version)
			continue
		}
		gv, err := goversion.NewVersion(v)
		if err != nil {
			continue
		}
		if max == nil || gv.GreaterThan(max) {
			max = gv
		}
		if gv.GreaterThan(limit) {
			tooNew = append(tooNew, s.Name+"@"+s.Version)
		}
	}
	if max != nil {
		r.MaxGlibc = "GLIBC_" + max.Original()
	}
	if len(tooNew) > 0 {
		sort.Strings(tooNew)
		tooNew = slices.Compact(tooNew)
		r.TooNew = tooNew
		shown := tooNew
		if len(shown) > 5 {
			shown = append(slices.Clone(shown[:5]), fmt.Sprintf("… %d more", len(tooNew)-5))
		}
		r.Problems = append(r.Problems, fmt.Sprintf("needs %s but %s has glibc %s: %s (build static, or on a host with glibc ≤ %s)",
			r.MaxGlibc, t.Name, t.Glibc, strings.Join(shown, ", "), t.Glibc))
	}
}

// newer reports a > b for dotted versions; unparsable versions are not newer.
func newer(a, b string) bool {
	va, err1 := goversion.NewVersion(a)
	vb, err2 := goversion.NewVersion(b)
	return err1 == nil && err2 == nil && va.GreaterThan(vb)
}

// abiKernel reads NT_GNU_ABI_TAG (.note.ABI-tag): OS 0 (Linux) and the
// minimum kernel the C runtime was configured for.
func abiKernel(f *elf.File) string {
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOTE {
			continue
		}
		data, err := s.Data()
		if err != nil {
			continue
		}
		for _, n := range notes(data, f.ByteOrder) {
			if n.name == "GNU" && n.typ == 1 && len(n.desc) >= 16 {
				bo := f.ByteOrder
				if bo.Uint32(n.desc) != 0 {
					continue
				}
				return fmt.Sprintf("%d.%d.%d", bo.Uint32(n.desc[4:]), bo.Uint32(n.desc[8:]), bo.Uint32(n.desc[12:]))
			}
		}
	}
	return ""
}

// isaLevel reads GNU_PROPERTY_X86_ISA_1_NEEDED from .note.gnu.property:
// bit 0 baseline, 1 v2, 2 v3, 3 v4. Returns the highest level needed.
func isaLevel(f *elf.File) int {
	const ntGNUPropertyType0 = 5
	const x86ISA1Needed = 0xc0008002
	s := f.Section(".note.gnu.property")
	if s == nil {
		return 0
	}
	data, err := s.Data()
	if err != nil {
		return 0
	}
	level := 0
	bo := f.ByteOrder
	for _, n := range notes(data, bo) {
		if n.name != "GNU" || n.typ != ntGNUPropertyType0 {
			continue
		}
		d := n.desc
		for len(d) >= 8 {
			typ, size := bo.Uint32(d), int(bo.Uint32(d[4:]))
			if 8+size > len(d) {
				break
			}
			if typ == x86ISA1Needed && size >= 4 {
				bits := bo.Uint32(d[8:])
				for i := 3; i >= 0; i-- {
					if bits&(1<<i) != 0 {
						level = max(level, i+1)
						break
					}
				}
			}
			d = d[8+((size+7)&^7):]
		}
	}
	return level
}

type note struct {
	name string
	typ  uint32
	desc []byte
}

// notes splits an ELF note section (4-byte aligned name and desc).
func notes(data []byte, bo binary.ByteOrder) []note {
	var out []note
	align := func(n int) int { return (n + 3) &^ 3 }
	for len(data) >= 12 {
		nsz, dsz, typ := int(bo.Uint32(data)), int(bo.Uint32(data[4:])), bo.Uint32(data[8:])
		data = data[12:]
		if align(nsz) > len(data) {
			break
		}
		name := string(bytes.TrimRight(data[:nsz], "\x00"))
		data = data[align(nsz):]
		if dsz > len(data) {
			break
		}
		desc := data[:dsz]
		// .note.gnu.property uses 8-byte alignment on 64-bit targets.
		step := align(dsz)
		if typ == 5 && name == "GNU" {
			step = (dsz + 7) &^ 7
		}
		out = append(out, note{name: name, typ: typ, desc: desc})
		if step > len(data) {
			break
		}
		data = data[step:]
	}
	return out
}

// Summary renders the result in a few lines.
func (r *Result) Summary() string {
	var b strings.Builder
	status := "ok"
	if !r.OK {
		status = "MISSES THE TARGET"
	}
	fmt.Fprintf(&b, "target %s: %s (%s", r.Target, status, r.Linkage)
	if len(r.Needed) > 0 {
		fmt.Fprintf(&b, ", needs %s", strings.Join(r.Needed, " "))
	}
	if r.MaxGlibc != "" {
		fmt.Fprintf(&b, ", up to %s", r.MaxGlibc)
	}
	if r.GOAMD64 != "" {
		fmt.Fprintf(&b, ", GOAMD64=%s", r.GOAMD64)
	}
	b.WriteString(")\n")
	if e := r.EmptyRoot; e != nil {
		fmt.Fprintf(&b, "    empty-root run %s: %s\n", strings.Join(e.Args, " "), e.Status)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "    - %s\n", p)
	}
	return b.String()
}
