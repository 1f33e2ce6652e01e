// Package srccheck proves, from source, that the kernel-memory code a build
// will compile cannot write memory.kmem.limit_in_bytes.
//
// It parses the Go files of libcontainer/cgroups/fs that the build's tags
// select (as go/build would for linux/amd64) and requires that
//
//   - no function body names the file, either as the string literal or
//     through a package-level constant or variable holding it, and
//   - EnableKernelMemoryAccounting, where declared, is exactly "return nil".
//
// The same check runs on patched trees (the patch must have taken effect)
// and on build-tag trees (the tag must select kmem_disabled.go).
package srccheck

import (
	"fmt"
	"go/ast"
	"go/build"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// KmemFile is the cgroup v1 file whose first write turns on kernel-memory
// accounting for a memory cgroup.
const KmemFile = "memory.kmem.limit_in_bytes"

// FSPackage is the libcontainer package that owns the kmem code.
const FSPackage = "libcontainer/cgroups/fs"

// Finding is one place that can write the kmem file.
type Finding struct {
	File   string `json:"file"`
	Line   int    `json:"line"`
	Func   string `json:"func"`
	Reason string `json:"reason"`
}

// Result is the outcome of a check.
type Result struct {
	Dir   string   `json:"dir"`
	Tags  []string `json:"tags"`
	Files []string `json:"files"` // the files the tags select
	// KmemFuncs lists the kernel-memory functions found, with their file.
	KmemFuncs map[string]string `json:"kmemFuncs"`
	Findings  []Finding         `json:"findings"`
}

// OK reports whether nothing can write the kmem file.
func (r *Result) OK() bool { return len(r.Findings) == 0 }

// HasKmemCode reports whether the package declares any kmem function.
func (r *Result) HasKmemCode() bool { return len(r.KmemFuncs) > 0 }

func (r *Result) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "source check: %d place(s) in %s can write %s with tags %q:", len(r.Findings), r.Dir, KmemFile, strings.Join(r.Tags, ","))
	for _, f := range r.Findings {
		fmt.Fprintf(&b, "\n  %s:%d %s: %s", f.File, f.Line, f.Func, f.Reason)
	}
	return b.String()
}

var kmemFuncs = map[string]bool{"EnableKernelMemoryAccounting": true, "setKernelMemory": true, "SetKernelMemory": true}

// Check examines dir (a copy of libcontainer/cgroups/fs) as built with tags.
func Check(dir string, tags []string) (*Result, error) {
	ctx := build.Default
	ctx.GOOS, ctx.GOARCH, ctx.CgoEnabled = "linux", "amd64", true
	ctx.BuildTags = append([]string(nil), tags...)
	ctx.ReleaseTags = build.Default.ReleaseTags
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("source check: %w", err)
	}
	res := &Result{Dir: dir, Tags: tags, KmemFuncs: map[string]string{}}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
			continue
		}
		ok, err := ctx.MatchFile(dir, n)
		if err != nil {
			return nil, fmt.Errorf("source check: %s: %w", n, err)
		}
		if !ok {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, n), nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, fmt.Errorf("source check: %w", err)
		}
		res.Files = append(res.Files, n)
		files = append(files, f)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("source check: no Go files in %s are selected for linux with tags %q", dir, strings.Join(tags, ","))
	}
	// Package-level names whose value is the kmem file name.
	holders := map[string]bool{}
	for _, f := range files {
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok {
				continue
			}
			for _, s := range gd.Specs {
				vs, ok := s.(*ast.ValueSpec)
				if !ok {
					continue
				}
				for i, v := range vs.Values {
					if isKmemLit(v) && i < len(vs.Names) {
						holders[vs.Names[i].Name] = true
					}
				}
			}
		}
	}
	for _, f := range files {
		fname := filepath.Base(fset.Position(f.Pos()).Filename)
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			name := fd.Name.Name
			if fd.Recv != nil && len(fd.Recv.List) == 1 {
				name = recvName(fd.Recv.List[0].Type) + "." + name
			}
			if kmemFuncs[fd.Name.Name] {
				res.KmemFuncs[fd.Name.Name] = fname
			}
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				switch x := n.(type) {
				case *ast.BasicLit:
					if isKmemLit(x) {
						res.add(fset, x.Pos(), name, "uses the literal "+strconv.Quote(KmemFile))
					}
				case *ast.Ident:
					if holders[x.Name] {
						res.add(fset, x.Pos(), name, "uses "+x.Name+" (= "+strconv.Quote(KmemFile)+")")
					}
				}
				return true
			})
			if fd.Name.Name == "EnableKernelMemoryAccounting" && !returnsNilOnly(fd.Body) {
				res.add(fset, fd.Pos(), name, "is not a no-op (its body must be exactly `return nil`)")
			}
		}
	}
	sort.Slice(res.Findings, func(i, j int) bool {
		a, b := res.Findings[i], res.Findings[j]
		if a.File != b.File {
			return a.File < b.File
		}
		return a.Line < b.Line
	})
	return res, nil
}

func (r *Result) add(fset *token.FileSet, pos token.Pos, fn, reason string) {
	p := fset.Position(pos)
	r.Findings = append(r.Findings, Finding{File: filepath.Base(p.Filename), Line: p.Line, Func: fn, Reason: reason})
}

func isKmemLit(e ast.Expr) bool {
	bl, ok := e.(*ast.BasicLit)
	if !ok || bl.Kind != token.STRING {
		return false
	}
	s, err := strconv.Unquote(bl.Value)
	return err == nil && strings.Contains(s, KmemFile)
}

func returnsNilOnly(b *ast.BlockStmt) bool {
	if len(b.List) != 1 {
		return false
	}
	r, ok := b.List[0].(*ast.ReturnStmt)
	if !ok || len(r.Results) != 1 {
		return false
	}
	id, ok := r.Results[0].(*ast.Ident)
	return ok && id.Name == "nil"
}

func recvName(e ast.Expr) string {
	switch t := e.(type) {
	case *ast.StarExpr:
		return "(*" + recvName(t.X) + ")"
	case *ast.Ident:
		return t.Name
	case *ast.IndexExpr:
		return recvName(t.X)
	}
	return "?"
}
