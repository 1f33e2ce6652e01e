package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const compiling = "compiling magefiles/"

var (
	wrapperOnce sync.Once
	wrapperPath string
	wrapperErr  error
)

// wrapper builds this command once, as `go tool mage` would.
func wrapper(t *testing.T) string {
	t.Helper()
	wrapperOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nokmem-mage-wrapper-")
		if err != nil {
			wrapperErr = err
			return
		}
		wrapperPath = filepath.Join(dir, "mage")
		out, err := exec.Command("go", "build", "-o", wrapperPath, ".").CombinedOutput()
		if err != nil {
			wrapperErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if wrapperErr != nil {
		t.Fatal(wrapperErr)
	}
	return wrapperPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if wrapperPath != "" {
		os.RemoveAll(filepath.Dir(wrapperPath))
	}
	os.Exit(code)
}

// fixtureModule writes a module whose magefile prints a constant of a
// package it imports through another package.
func fixtureModule(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range map[string]string{
		"go.mod": "module example.com/fixture\n\ngo 1.22\n",
		"magefiles/magefile.go": `//go:build mage

package main

import (
	"fmt"

	"example.com/fixture/lib"
)

// Hello prints the message of lib/deep.
func Hello() { fmt.Println(lib.Message()) }
`,
		"lib/lib.go":            "package lib\n\nimport \"example.com/fixture/lib/deep\"\n\nfunc Message() string { return deep.Msg }\n",
		"lib/deep/deep.go":      "package deep\n\nconst Msg = \"one\"\n",
		"lib/deep/deep_test.go": "package deep\n",
		"unrelated/u.go":        "package unrelated\n",
	} {
		writeFile(t, filepath.Join(root, name), content)
	}
	return root
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

type result struct {
	stdout, stderr string
	err            error
}

func runIn(t *testing.T, bin, dir string, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	return result{o.String(), e.String(), err}
}

// concurrently starts every command at once and waits for all of them.
func concurrently(t *testing.T, n int, f func() result) []result {
	t.Helper()
	res := make([]result, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range res {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res[i] = f()
		}()
	}
	close(start)
	wg.Wait()
	return res
}

// gocacheModes are the environments Mage behaved differently in: GOCACHE
// unset (go env answers the default), set explicitly, and Mage's own fast
// path switched on.
func gocacheModes(t *testing.T) map[string][]string {
	out, err := exec.Command("go", "env", "GOCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	base := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOCACHE=") && !strings.HasPrefix(kv, "MAGEFILE_") {
			base = append(base, kv)
		}
	}
	return map[string][]string{
		"GOCACHE unset":     base,
		"GOCACHE set":       append(append([]string{}, base...), "GOCACHE="+strings.TrimSpace(string(out))),
		"MAGEFILE_HASHFAST": append(append([]string{}, base...), "MAGEFILE_HASHFAST=1"),
	}
}

func runEnv(t *testing.T, bin, dir string, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = env
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	return result{o.String(), e.String(), err}
}

// Two runs started together from one checkout, with a cold magefile cache
// so that both need the compiled magefile: both succeed, one compiles while
// the other waits and then reuses its binary, and the checkout is left as
// it was.
func TestConcurrentRunsFromOneCheckout(t *testing.T) {
	bin := wrapper(t)
	root := fixtureModule(t)
	for mode, env := range gocacheModes(t) {
		for trial := 0; trial < 4; trial++ {
			t.Run(fmt.Sprintf("%s/%d", mode, trial), func(t *testing.T) {
				e := append(append([]string{}, env...), "MAGEFILE_CACHE="+t.TempDir())
				res := concurrently(t, 2, func() result { return runEnv(t, bin, root, e, "hello") })
				compiles := 0
				for i, r := range res {
					if r.err != nil || r.stdout != "one\n" {
						t.Errorf("run %d: %v\nstdout:\n%s\nstderr:\n%s", i, r.err, r.stdout, r.stderr)
					}
					compiles += strings.Count(r.stderr, compiling)
				}
				if compiles != 1 {
					t.Errorf("%d compiles for two runs of one tree, want 1", compiles)
				}
				if got := listDir(t, filepath.Join(root, "magefiles")); got != "magefile.go" {
					t.Errorf("magefiles/ holds %s", got)
				}
				if m, _ := filepath.Glob(filepath.Join(root, buildDirPrefix+"*")); len(m) != 0 {
					t.Errorf("private copies left: %v", m)
				}
			})
		}
	}
}

// -l and -h with nothing compiled yet do not compile, and name the command
// as the README runs it.
func TestListAndHelpWithoutCompiling(t *testing.T) {
	bin := wrapper(t)
	root := fixtureModule(t)
	env := []string{"MAGEFILE_CACHE=" + t.TempDir()}
	res := concurrently(t, 2, func() result { return runIn(t, bin, root, env, "-l") })
	for _, r := range res {
		if r.err != nil || !strings.Contains(r.stdout, "hello") || strings.Contains(r.stderr, compiling) {
			t.Errorf("-l: %v\n%s%s", r.err, r.stdout, r.stderr)
		}
	}
	r := runIn(t, bin, root, env, "-h", "hello")
	if r.err != nil || !strings.Contains(r.stdout, "go tool mage hello") {
		t.Errorf("-h hello: %v\n%s%s", r.err, r.stdout, r.stderr)
	}
	// Once compiled, the binary answers with the same usage line.
	if r := runIn(t, bin, root, env, "hello"); r.err != nil {
		t.Fatalf("hello: %v\n%s", r.err, r.stderr)
	}
	r = runIn(t, bin, root, env, "-h", "hello")
	if r.err != nil || !strings.Contains(r.stdout, "go tool mage hello") || strings.Contains(r.stderr, compiling) {
		t.Errorf("-h hello (compiled): %v\n%s%s", r.err, r.stdout, r.stderr)
	}
}

// The compiled magefile is never stale: a change to any package it imports,
// however deep, to go.mod or to the build environment compiles a new one;
// changes to nothing it builds from reuse the binary.
func TestRebuildsExactlyWhenInputsChange(t *testing.T) {
	bin := wrapper(t)
	root := fixtureModule(t)
	env := []string{"MAGEFILE_CACHE=" + t.TempDir()}
	steps := []struct {
		name    string
		change  func()
		env     []string
		want    string
		compile bool
	}{
		{"first run", func() {}, nil, "one", true},
		{"nothing changed", func() {}, nil, "one", false},
		{"deep import changed", func() { writeFile(t, filepath.Join(root, "lib/deep/deep.go"), "package deep\n\nconst Msg = \"two\"\n") }, nil, "two", true},
		{"file added to an imported package", func() {
			writeFile(t, filepath.Join(root, "lib/deep/more.go"), "package deep\n\nfunc init() { println(\"init\") }\n")
		}, nil, "two", true},
		{"test file changed", func() { writeFile(t, filepath.Join(root, "lib/deep/deep_test.go"), "package deep\n\n// x\n") }, nil, "two", false},
		{"package not imported changed", func() { writeFile(t, filepath.Join(root, "unrelated/u.go"), "package unrelated\n\n// x\n") }, nil, "two", false},
		{"magefile changed", func() {
			b, _ := os.ReadFile(filepath.Join(root, "magefiles/magefile.go"))
			writeFile(t, filepath.Join(root, "magefiles/magefile.go"), strings.Replace(string(b), "fmt.Println(lib.Message())", `fmt.Println(lib.Message() + "!")`, 1))
		}, nil, "two!", true},
		{"go.mod changed", func() { writeFile(t, filepath.Join(root, "go.mod"), "module example.com/fixture\n\ngo 1.23\n") }, nil, "two!", true},
		{"build environment changed", func() {}, []string{"GOFLAGS=-tags=extra"}, "two!", true},
		{"back to the first environment", func() {}, nil, "two!", false},
	}
	for _, s := range steps {
		s.change()
		// A same-size edit within the mtime granularity must still count.
		r := runIn(t, bin, root, append(append([]string{}, env...), s.env...), "hello")
		if r.err != nil {
			t.Fatalf("%s: %v\n%s", s.name, r.err, r.stderr)
		}
		if strings.TrimSpace(r.stdout) != s.want {
			t.Errorf("%s: printed %q, want %q (stale magefile binary)", s.name, r.stdout, s.want)
		}
		if got := strings.Contains(r.stderr, compiling); got != s.compile {
			t.Errorf("%s: compiled=%v, want %v\n%s", s.name, got, s.compile, r.stderr)
		}
	}
}

// Trees whose inputs the key cannot cover are compiled on every run.
func TestUnkeyableTreesCompileEveryRun(t *testing.T) {
	for name, setup := range map[string]func(root string){
		"vendor directory": func(root string) { writeFile(t, filepath.Join(root, "vendor/modules.txt"), "") },
		"local replace": func(root string) {
			writeFile(t, filepath.Join(root, "go.mod"), "module example.com/fixture\n\ngo 1.22\n\nreplace example.com/other => ../other\n")
		},
	} {
		t.Run(name, func(t *testing.T) {
			root := fixtureModule(t)
			setup(root)
			key, why, err := fingerprint(root, "go", false)
			if err != nil || key != "" || why == "" {
				t.Fatalf("key %q, why %q, err %v", key, why, err)
			}
		})
	}
	root := fixtureModule(t)
	writeFile(t, filepath.Join(root, "go.work"), "go 1.22\n\nuse .\n")
	bin := wrapper(t)
	env := []string{"MAGEFILE_CACHE=" + t.TempDir()}
	for i := 0; i < 2; i++ {
		r := runIn(t, bin, root, env, "hello")
		if r.err != nil || r.stdout != "one\n" || !strings.Contains(r.stderr, compiling) {
			t.Fatalf("run %d in a workspace: %v\n%s%s", i, r.err, r.stdout, r.stderr)
		}
	}
	entries, _ := os.ReadDir(stateDirIn(t, env, root))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "once-") {
			t.Errorf("one-off binary %s kept", e.Name())
		}
	}
}

func stateDirIn(t *testing.T, env []string, root string) string {
	t.Setenv("MAGEFILE_CACHE", strings.TrimPrefix(env[0], "MAGEFILE_CACHE="))
	return stateDir(root)
}

// A magefile compile left by a killed run is removed once it is old; a
// fresh one (a compile in progress under another MAGEFILE_CACHE) is kept.
func TestPruneKeepsWorkInProgress(t *testing.T) {
	root, dir := t.TempDir(), t.TempDir()
	oldCopy := filepath.Join(root, buildDirPrefix+"old")
	newCopy := filepath.Join(root, buildDirPrefix+"new")
	unused := filepath.Join(dir, strings.Repeat("a", 64))
	used := filepath.Join(dir, strings.Repeat("b", 64))
	for _, p := range []string{oldCopy, newCopy} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, unused, "")
	writeFile(t, used, "")
	long := time.Now().Add(-48 * time.Hour)
	os.Chtimes(oldCopy, long, long)
	os.Chtimes(unused, long, long)
	prune(root, dir)
	for p, want := range map[string]bool{oldCopy: false, newCopy: true, unused: false, used: true} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s: exists=%v, want %v", filepath.Base(p), err == nil, want)
		}
	}
}

// The real thing: two `go tool mage` runs from this checkout with a cold
// magefile cache, with and without GOCACHE set.
func TestGoToolMageConcurrentInThisCheckout(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the project's magefile")
	}
	for mode, env := range gocacheModes(t) {
		if mode == "MAGEFILE_HASHFAST" {
			continue
		}
		t.Run(mode, func(t *testing.T) {
			e := append(append([]string{}, env...), "MAGEFILE_CACHE="+t.TempDir())
			res := concurrently(t, 2, func() result { return runEnv(t, "go", "../..", e, "tool", "mage", "matrix:json") })
			compiles := 0
			for i, r := range res {
				if r.err != nil || !strings.Contains(r.stdout, `"include"`) {
					t.Errorf("run %d: %v\nstdout:\n%s\nstderr:\n%s", i, r.err, r.stdout, r.stderr)
				}
				compiles += strings.Count(r.stderr, compiling)
			}
			if compiles != 1 {
				t.Errorf("%d compiles, want 1", compiles)
			}
			if _, err := os.Stat(filepath.Join("../../magefiles", generated)); err == nil {
				t.Errorf("%s left in magefiles/", generated)
			}
		})
	}
}

func listDir(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return strings.Join(names, " ")
}

// Arguments are checked against the targets' signatures before anything is
// compiled or run: `go tool mage build:runc v1.0.0-rc9 extra` in this
// checkout, with an empty magefile cache and a dist/ and cache that must
// stay untouched, is refused with Mage's usage status.
func TestGoToolMageRefusesWrongArgumentsBeforeWork(t *testing.T) {
	mageCache, work := t.TempDir(), t.TempDir()
	env := append(os.Environ(), "MAGEFILE_CACHE="+mageCache, "NOKMEM_DIST="+filepath.Join(work, "dist"), "NOKMEM_CACHE="+filepath.Join(work, "cache"),
		"NOKMEM_RUNC_REPO="+filepath.Join(work, "no-such-repo"))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"build:runc", "v1.0.0-rc9", "extra"}, `build:runc takes 1 argument (<version>), but "extra" follows; nothing was run. Usage: go tool mage build:runc <version>`},
		{[]string{"build:runc"}, "build:runc needs 1 argument (<version>); nothing was run"},
		{[]string{"verify:file", "runc"}, "verify:file needs 2 arguments (<kind> <path>)"},
		{[]string{"Build:Runc", "v1.0.0-rc9", "matrix:list", "bogus"}, `matrix:list takes no arguments, but "bogus" follows`},
		{[]string{"bogus"}, `unknown target "bogus"; nothing was run (go tool mage -l lists the targets)`},
	} {
		r := runEnv(t, "go", "../..", env, append([]string{"tool", "mage"}, tc.args...)...)
		var exit *exec.ExitError
		if !errors.As(r.err, &exit) || exit.ExitCode() != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: %v\nstderr: %s\nwant exit status 2 and %q", tc.args, r.err, r.stderr, tc.want)
		}
		if strings.Contains(r.stderr, compiling) || r.stdout != "" {
			t.Errorf("%v: work was done before the refusal:\nstdout: %s\nstderr: %s", tc.args, r.stdout, r.stderr)
		}
	}
	if got := listDir(t, work) + "|" + listDir(t, mageCache); got != "|" {
		t.Errorf("written before the refusal: %s", got)
	}
}
