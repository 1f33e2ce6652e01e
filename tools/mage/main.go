// Command mage is Mage as this project runs it (`go tool mage <target>`):
// github.com/magefile/mage/mage with two changes.
//
//  1. Mage generates magefiles/mage_output_file.go and compiles it in place,
//     so two runs started together from one checkout delete each other's
//     file ("error compiling magefiles"). Here the magefile is compiled from
//     a private copy of magefiles/ (a hidden directory in the module root,
//     so that imports resolve as in magefiles/), under an exclusive flock,
//     and the binary is moved into place with one rename. The checkout's
//     magefiles/ is never written to.
//
//  2. Mage recompiles on every run whenever `go env GOCACHE` answers,
//     because its binary name hashes only the magefiles, not the packages
//     they import. Here the binary is named by a key over everything the
//     build reads (see fingerprint), so an unchanged tree runs the cached
//     binary at once and any change to magefiles/ or to a package they
//     import, go.mod, go.sum, the Go toolchain or the build environment
//     compiles a new one. A tree whose inputs cannot all be keyed (vendor/,
//     a go.work workspace, local replace directives, -modfile or -overlay in
//     GOFLAGS) is compiled on every run, as Mage does.
//
// Mage's commands and the options that change where it reads or keeps its
// files (-init, -clean, -version, -install, -autocomplete, -d, -w, -keep)
// run Mage unchanged; -compile does too, under the same lock.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/magefile/mage/mage"
	"github.com/magefile/mage/mg"
	"golang.org/x/mod/modfile"
	"golang.org/x/sys/unix"
)

// keySchema changes whenever what the key covers or how the binary is
// compiled changes, so old binaries are never reused by a newer wrapper.
const keySchema = "nokmem-mage-key/1"

// binaryName is what the compiled magefile calls itself in its usage lines
// ("Usage: go tool mage build:runc <version>"): Mage takes it from the base
// name of the output path.
const binaryName = "go tool mage"

// generated is the file Mage writes beside the magefiles; a copy left by a
// killed plain `mage` run is not one of our sources.
const generated = "mage_output_file.go"

// buildDirPrefix names the private copies of magefiles/ in the module root.
const buildDirPrefix = ".mage-build-"

// Leftovers of killed runs: a compile takes seconds, a binary not used for a
// day belongs to sources that are gone.
const (
	abandonedBuildDir = time.Hour
	unusedBinary      = 24 * time.Hour
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	errlog := log.New(stderr, "go tool mage: ", 0)
	inv, cmd, err := mage.Parse(io.Discard, io.Discard, args)
	root, wdErr := os.Getwd()
	if err != nil || wdErr != nil || cmd != mage.None || inv.Dir != "" || inv.WorkDir != "" || inv.Keep || inv.Autocomplete ||
		!isDir(filepath.Join(root, mage.MagefilesDirName)) {
		if cmd == mage.CompileStatic && wdErr == nil {
			unlock, err := lock(stateDir(root), errlog)
			if err != nil {
				errlog.Println(err)
				return 1
			}
			defer unlock()
		}
		return mage.ParseAndRun(stdout, stderr, stdin, args)
	}
	inv.Stdin, inv.Stdout, inv.Stderr = stdin, stdout, stderr
	if inv.GoCmd == "" {
		inv.GoCmd = "go"
	}
	if !inv.List && !inv.Help {
		if err := checkArgs(root, inv.Args, inv.Multiline); err != nil {
			errlog.Println(err)
			return 2
		}
	}
	key, why, err := fingerprint(root, inv.GoCmd, inv.Multiline)
	if err != nil {
		errlog.Println(err)
		return 1
	}
	if (inv.List || inv.Help) && (key == "" || inv.Force || !reuse(filepath.Join(stateDir(root), key))) {
		// Mage lists targets and prints help from the parsed magefiles,
		// without compiling or writing anything (both return before the
		// compile step; CompileOut only names the binary in usage lines).
		inv.Force, inv.CompileOut = true, binaryName
		return mage.Invoke(inv)
	}
	exe, cleanup, err := binary(root, key, why, inv, errlog)
	if err != nil {
		errlog.Println(err)
		return 1
	}
	defer cleanup()
	return runCompiled(inv, exe, stderr)
}

// stateDir holds this checkout's compiled magefiles and the compile lock,
// inside Mage's cache directory (MAGEFILE_CACHE, default ~/.magefile).
func stateDir(root string) string {
	sum := sha256.Sum256([]byte(root))
	return filepath.Join(mg.CacheDir(), "nokmem-"+hex.EncodeToString(sum[:8]))
}

// binary returns the compiled magefile of root for key, compiling it if
// needed (always when key is empty, for the reason why). cleanup removes a
// binary that is not kept for reuse.
func binary(root, key, why string, inv mage.Invocation, errlog *log.Logger) (exe string, cleanup func(), err error) {
	cleanup = func() {}
	dir := stateDir(root)
	if key != "" {
		exe = filepath.Join(dir, key)
		if !inv.Force && reuse(exe) {
			return exe, cleanup, nil
		}
	}
	unlock, err := lock(dir, errlog)
	if err != nil {
		return "", nil, err
	}
	defer unlock()
	reason := "first run, or its sources changed"
	if key == "" {
		reason = "on every run: " + why
		exe = filepath.Join(dir, fmt.Sprintf("once-%d", os.Getpid()))
		cleanup = func() { os.Remove(exe) }
	} else if !inv.Force && reuse(exe) {
		// Another run compiled it while we waited.
		return exe, cleanup, nil
	}
	prune(root, dir)
	if err := compile(root, inv, exe, reason); err != nil {
		cleanup()
		return "", nil, err
	}
	return exe, cleanup, nil
}

// reuse reports whether exe exists, and marks it as used so prune keeps it.
func reuse(exe string) bool {
	now := time.Now()
	return os.Chtimes(exe, now, now) == nil
}

// lock takes the exclusive compile lock of dir, saying so if it must wait.
func lock(dir string, errlog *log.Logger) (func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("mage cache (MAGEFILE_CACHE): %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "compile.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("mage cache (MAGEFILE_CACHE): %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); errors.Is(err, unix.EWOULDBLOCK) {
		errlog.Printf("waiting for another run that compiles the magefile (lock %s)", f.Name())
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}

// compile builds the magefile of root into exe from a private copy of
// magefiles/, so that the checkout is never written to.
func compile(root string, inv mage.Invocation, exe, reason string) error {
	fmt.Fprintf(inv.Stderr, "go tool mage: compiling magefiles/ (%s)\n", reason)
	src := filepath.Join(root, mage.MagefilesDirName)
	files, err := mage.Magefiles(src, "", "", true)
	if err != nil {
		return fmt.Errorf("list magefiles: %w", err)
	}
	tmp, err := os.MkdirTemp(root, buildDirPrefix)
	if err != nil {
		return fmt.Errorf("private copy of magefiles/: %w", err)
	}
	defer os.RemoveAll(tmp)
	dst := filepath.Join(tmp, mage.MagefilesDirName)
	if err := os.Mkdir(dst, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		if filepath.Base(f) == generated {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, filepath.Base(f)), b, 0o644); err != nil {
			return err
		}
	}
	out, err := os.MkdirTemp(filepath.Dir(exe), ".compile-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(out)
	built := filepath.Join(out, binaryName)
	if code := mage.Invoke(mage.Invocation{
		Dir: tmp, CompileOut: built, Force: true, GoCmd: inv.GoCmd, Debug: inv.Debug, Multiline: inv.Multiline,
		Stdout: inv.Stderr, Stderr: inv.Stderr, Stdin: inv.Stdin,
	}); code != 0 {
		return fmt.Errorf("compiling magefiles/ failed (exit status %d)", code)
	}
	return os.Rename(built, exe)
}

// prune removes what killed runs left: private copies in the module root
// and temporary outputs older than an hour, and binaries unused for a day.
// It runs under the compile lock.
func prune(root, dir string) {
	old := func(path string, age time.Duration) bool {
		st, err := os.Lstat(path)
		return err == nil && time.Since(st.ModTime()) > age
	}
	if m, _ := filepath.Glob(filepath.Join(root, buildDirPrefix+"*")); m != nil {
		for _, p := range m {
			if old(p, abandonedBuildDir) {
				os.RemoveAll(p)
			}
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		switch {
		case strings.HasPrefix(e.Name(), ".compile-") && old(p, abandonedBuildDir):
			os.RemoveAll(p)
		case len(e.Name()) == 64 && old(p, unusedBinary):
			os.Remove(p)
		case strings.HasPrefix(e.Name(), "once-"):
			if pid, err := strconv.Atoi(strings.TrimPrefix(e.Name(), "once-")); err == nil && unix.Kill(pid, 0) == unix.ESRCH {
				os.Remove(p)
			}
		}
	}
}

// envKeys are the go env variables that change what `go build` produces.
var envKeys = []string{
	"GOVERSION", "GOROOT", "GOOS", "GOARCH", "GOAMD64", "GOARM", "GOARM64", "GO386", "GOMIPS", "GOMIPS64", "GOPPC64", "GORISCV64", "GOWASM",
	"GOEXPERIMENT", "GOFIPS140", "GODEBUG", "GOFLAGS", "GOTOOLCHAIN", "CGO_ENABLED", "CC", "CXX", "CGO_CFLAGS", "CGO_CPPFLAGS",
	"CGO_CXXFLAGS", "CGO_FFLAGS", "CGO_LDFLAGS", "PKG_CONFIG", "GOMOD", "GOWORK",
}

// fingerprint returns the key of everything the magefile's build reads:
//
//   - every file of magefiles/ and of each package of this module that it
//     imports, directly or not: all files of each package directory, for
//     every build configuration (an over-approximation of what go build
//     reads), and the whole directory tree of a package that uses
//     //go:embed; test files excepted;
//   - go.mod and go.sum, which fix the content of every other module (the
//     go command checks the module cache against go.sum);
//   - the toolchain and the build environment as `go env` reports them
//     (GOVERSION, GOFLAGS, CGO_*, …, also what go env -w set);
//   - this wrapper's executable (so the Mage it embeds) and key schema.
//
// It returns an empty key, and why, for a tree whose inputs are not all
// covered; the caller then compiles every time.
func fingerprint(root, goCmd string, multiline bool) (key, why string, err error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\nmultiline=%v\n", keySchema, multiline)
	// This wrapper (and the Mage it embeds, whose main-file template the
	// binary is generated from): `go tool` runs it from a build-cache path
	// named by its content; elsewhere size and mtime tell a rebuild.
	if exe, err := os.Executable(); err == nil {
		if st, err := os.Stat(exe); err == nil {
			fmt.Fprintf(h, "wrapper %s %d %d\n", exe, st.Size(), st.ModTime().UnixNano())
		}
	}

	cmd := exec.Command(goCmd, append([]string{"env", "-json"}, envKeys...)...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	envJSON, err := cmd.Output()
	if err != nil {
		return "", "", fmt.Errorf("%s env: %v\n%s", goCmd, err, stderr.String())
	}
	h.Write(envJSON)
	env := map[string]string{}
	if err := json.Unmarshal(envJSON, &env); err != nil {
		return "", "", fmt.Errorf("%s env: %w", goCmd, err)
	}
	switch {
	case env["GOWORK"] != "" && env["GOWORK"] != "off":
		return "", "a go.work workspace (" + env["GOWORK"] + ") is in use", nil
	case env["GOMOD"] != filepath.Join(root, "go.mod"):
		return "", "the working directory is not a module root (GOMOD=" + env["GOMOD"] + ")", nil
	case strings.Contains(env["GOFLAGS"], "-modfile") || strings.Contains(env["GOFLAGS"], "-overlay") || strings.Contains(env["GOFLAGS"], "-mod=vendor"):
		return "", "GOFLAGS=" + env["GOFLAGS"] + " reads files outside the key", nil
	}
	if _, err := os.Stat(filepath.Join(root, "vendor")); err == nil {
		return "", "vendor/ exists", nil
	}
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return "", "", err
	}
	mf, err := modfile.Parse("go.mod", gomod, nil)
	if err != nil || mf.Module == nil {
		return "", "go.mod does not parse", nil
	}
	for _, r := range mf.Replace {
		if r.New.Version == "" {
			return "", "go.mod replaces " + r.Old.Path + " by the directory " + r.New.Path, nil
		}
	}
	gosum, _ := os.ReadFile(filepath.Join(root, "go.sum"))
	fmt.Fprintf(h, "go.mod %s\ngo.sum %s\n", sum256(gomod), sum256(gosum))

	files, err := sourceFiles(root, mf.Module.Mod.Path)
	if err != nil {
		return "", err.Error(), nil
	}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return "", "", err
		}
		fmt.Fprintf(h, "%q %s\n", f, sum256(b))
	}
	return hex.EncodeToString(h.Sum(nil)), "", nil
}

func sum256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// sourceFiles lists, relative to root and sorted, the files of magefiles/
// and of every package of module modPath it imports, directly or not.
func sourceFiles(root, modPath string) ([]string, error) {
	seen := map[string]bool{}
	var files []string
	queue := []string{mage.MagefilesDirName}
	for len(queue) > 0 {
		rel := queue[0]
		queue = queue[1:]
		if seen[rel] {
			continue
		}
		seen[rel] = true
		dir := filepath.Join(root, rel)
		entries, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("package directory %s: %w", rel, err)
		}
		embeds := false
		for _, e := range entries {
			name := e.Name()
			if !e.Type().IsRegular() || strings.HasSuffix(name, "_test.go") || (rel == mage.MagefilesDirName && name == generated) {
				continue
			}
			files = append(files, filepath.Join(rel, name))
			if !strings.HasSuffix(name, ".go") {
				continue
			}
			src, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				return nil, err
			}
			embeds = embeds || bytes.Contains(src, []byte("//go:embed"))
			f, err := parser.ParseFile(token.NewFileSet(), name, src, parser.ImportsOnly)
			if err != nil {
				return nil, fmt.Errorf("%s does not parse: %v", filepath.Join(rel, name), err)
			}
			for _, imp := range f.Imports {
				p, err := strconv.Unquote(imp.Path.Value)
				if err != nil {
					continue
				}
				if p == modPath {
					queue = append(queue, ".")
				} else if sub, ok := strings.CutPrefix(p, modPath+"/"); ok {
					queue = append(queue, filepath.Clean(filepath.FromSlash(sub)))
				}
			}
		}
		if embeds {
			err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if d.IsDir() && d.Name() == ".git" {
					return filepath.SkipDir
				}
				if p != dir && d.Type().IsRegular() && filepath.Dir(p) != dir {
					r, _ := filepath.Rel(root, p)
					files = append(files, r)
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
		}
	}
	sort.Strings(files)
	return files, nil
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
