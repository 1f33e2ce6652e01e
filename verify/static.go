package verify

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"debug/gosym"
	"fmt"
	"os"
	"strings"
)

// Strings that tell the variants apart (facts file, §2). Each occurs in
// runc's source only in the place named.
const (
	// The file itself: a constant in the default kmem code. A nokmem build
	// drops it, because nothing references it any more.
	sigKmemFile = KmemFile
	// An error message of the default setKernelMemory.
	sigEnabledMsg = "because either tasks have already joined this cgroup or it has children"
	// The error of kmem_disabled.go's setKernelMemory (runc 8a4629f7, rc7+)
	// and of nokmem's source patches.
	sigDisabledMsg = "kernel memory accounting disabled in this runc build"
)

// Signal is one piece of static evidence.
type Signal struct {
	Name      string `json:"name"`
	Available bool   `json:"available"`
	Value     string `json:"value,omitempty"`
	Points    string `json:"points,omitempty"` // which verdict it supports, if any
}

// StaticResult is the outcome of the static checks.
type StaticResult struct {
	Verdict   Verdict `json:"verdict"`
	GoVersion string  `json:"goVersion,omitempty"`
	// MainFile is the source file of main.main, which tells runc
	// (…/runc/main.go) from kubelet (…/cmd/kubelet/…).
	MainFile string   `json:"mainFile,omitempty"`
	Tags     string   `json:"tags,omitempty"`
	Signals  []Signal `json:"signals"`
	Reasons  []string `json:"reasons"`
}

// Static classifies a binary without running it.
func Static(path string) (*StaticResult, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	res := &StaticResult{}
	sig := func(s Signal) { res.Signals = append(res.Signals, s) }

	bi, biErr := buildinfo.Read(bytes.NewReader(data))
	if biErr != nil {
		sig(Signal{Name: "go-buildinfo", Available: false, Value: biErr.Error()})
	} else {
		res.GoVersion = bi.GoVersion
		for _, s := range bi.Settings {
			if s.Key == "-tags" {
				res.Tags = s.Value
			}
		}
		sig(Signal{Name: "go-buildinfo", Available: true, Value: bi.GoVersion})
		sig(Signal{Name: "build-tags", Available: res.Tags != "", Value: res.Tags})
	}

	hasFile := bytes.Contains(data, []byte(sigKmemFile))
	hasEnabled := bytes.Contains(data, []byte(sigEnabledMsg))
	hasDisabled := bytes.Contains(data, []byte(sigDisabledMsg))
	sig(Signal{Name: "string:" + sigKmemFile, Available: true, Value: fmt.Sprint(hasFile), Points: pick(hasFile, string(KmemEnabled))})
	sig(Signal{Name: "string:default-kmem-error", Available: true, Value: fmt.Sprint(hasEnabled), Points: pick(hasEnabled, string(KmemEnabled))})
	sig(Signal{Name: "string:kmem-disabled-error", Available: true, Value: fmt.Sprint(hasDisabled), Points: pick(hasDisabled, string(NoKmem))})

	syms, symErr := fsSymbols(path)
	if symErr == nil {
		res.MainFile = syms.mainFile
	}
	if symErr != nil {
		sig(Signal{Name: "symbols", Available: false, Value: symErr.Error()})
	} else {
		for _, name := range []string{"EnableKernelMemoryAccounting", "setKernelMemory", "(*MemoryGroup).Apply"} {
			file, ok := syms.funcs[name]
			s := Signal{Name: "symbol:fs." + name, Available: true, Value: "absent"}
			if ok {
				s.Value = file
				switch {
				case strings.HasSuffix(file, "/kmem.go"):
					s.Points = string(KmemEnabled)
				case strings.HasSuffix(file, "/kmem_disabled.go"):
					s.Points = string(NoKmem)
				}
			}
			sig(s)
		}
	}

	tagged := strings.Contains(","+strings.ReplaceAll(res.Tags, " ", ",")+",", ",nokmem,")
	fsPresent := symErr == nil && len(syms.funcs) > 0
	kmemFile := ""
	if symErr == nil {
		kmemFile = syms.funcs["EnableKernelMemoryAccounting"]
	}
	switch {
	case hasFile || hasEnabled || strings.HasSuffix(kmemFile, "/kmem.go"):
		res.Verdict = KmemEnabled
		if hasFile {
			res.Reasons = append(res.Reasons, "the binary contains the string "+sigKmemFile+" that only the kmem-enabled code uses")
		}
		if hasEnabled {
			res.Reasons = append(res.Reasons, "the binary contains the default setKernelMemory error message")
		}
		if strings.HasSuffix(kmemFile, "/kmem.go") {
			res.Reasons = append(res.Reasons, "EnableKernelMemoryAccounting was compiled from kmem.go (the default variant)")
		}
		if tagged {
			res.Reasons = append(res.Reasons, "the build info lists the nokmem tag, but it did not take effect")
		}
	case (hasDisabled || strings.HasSuffix(kmemFile, "/kmem_disabled.go")) && fsPresent:
		res.Verdict = NoKmem
		res.Reasons = append(res.Reasons, "the disabled kmem variant is compiled in and no kmem-enabled evidence was found")
	case hasDisabled:
		// The message alone is one string any program can carry.
		res.Verdict = Unknown
		res.Reasons = append(res.Reasons, "the binary carries the kmem-disabled message but no libcontainer cgroupfs code; it is not a runc or kubelet that static checks can judge")
	case fsPresent && tagged:
		// rc6's kmem_disabled.go returns nil everywhere and inlines away.
		res.Verdict = NoKmem
		res.Reasons = append(res.Reasons, "libcontainer's cgroupfs code is present, built with the nokmem tag, and no kmem-enabled evidence was found")
	case fsPresent && kmemFile == "":
		res.Verdict = NoKmemCode
		res.Reasons = append(res.Reasons, "libcontainer's cgroupfs code is present without any kernel-memory function or string")
	default:
		res.Verdict = Unknown
		res.Reasons = append(res.Reasons, "no libcontainer cgroupfs code was recognised (stripped binary, or not runc/kubelet); static checks cannot decide")
	}
	return res, nil
}

func pick(b bool, s string) string {
	if b {
		return s
	}
	return ""
}

type symbols struct {
	funcs    map[string]string // short name in package fs → source file
	mainFile string            // source file of main.main
}

// fsSymbols reads the Go symbol table (pclntab) for functions of any
// package path ending in libcontainer/cgroups/fs (runc's own or vendored).
func fsSymbols(path string) (*symbols, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	pcln := f.Section(".gopclntab")
	text := f.Section(".text")
	if pcln == nil || text == nil {
		return nil, fmt.Errorf("no Go symbol table (.gopclntab); the binary may be stripped")
	}
	data, err := pcln.Data()
	if err != nil {
		return nil, err
	}
	tab, err := gosym.NewTable(nil, gosym.NewLineTable(data, text.Addr))
	if err != nil {
		return nil, err
	}
	s := &symbols{funcs: map[string]string{}}
	const marker = "libcontainer/cgroups/fs."
	for _, fn := range tab.Funcs {
		if fn.Name == "main.main" {
			s.mainFile, _, _ = tab.PCToLine(fn.Entry)
		}
		i := strings.LastIndex(fn.Name, marker)
		if i < 0 {
			continue
		}
		short := fn.Name[i+len(marker):]
		file, _, _ := tab.PCToLine(fn.Entry)
		s.funcs[short] = file
	}
	return s, nil
}

// KindMismatch says why a binary is not of kind ("runc" or "kubelet"),
// from where its main function was compiled; "" when nothing contradicts
// the kind (binaries built outside a GOPATH or module path name nothing).
func (s *StaticResult) KindMismatch(kind string) string {
	isKubelet := strings.Contains(s.MainFile, "/cmd/kubelet/")
	isRunc := strings.HasSuffix(s.MainFile, "opencontainers/runc/main.go")
	switch {
	case kind == "runc" && isKubelet:
		return "this is a kubelet (main in " + s.MainFile + "), not a runc"
	case kind == "kubelet" && isRunc:
		return "this is a runc (main in " + s.MainFile + "), not a kubelet"
	}
	return ""
}
