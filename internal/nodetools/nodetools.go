// Package nodetools builds the node tool, cmd/nokmem (nokmem verify,
// nokmem runtime), that the nokmem-tools package ships. It is this
// repository's own code, built static (CGO_ENABLED=0, GOAMD64=v1) from an
// allow-listed environment like runc and kubelet, and it must pass the same
// target gate before it may be packaged: the ELF reading and a start in an
// empty root directory. Publish puts a binary that passed into
// dist/tools/v<version>/ with its gate record, which is what the package
// target packages and what a mirror or release admits (Load).
package nodetools

import (
	"context"
	"debug/buildinfo"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nokmem/nokmem/internal/build"
	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/fileutil"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/verify/target"
)

// Package is the import path of the node tool.
const Package = "./cmd/nokmem"

// Binary is a node tool that passed the target gate.
type Binary struct {
	Path   string
	SHA256 string
	// Commit, Time and Modified are the repository state the Go build
	// info records (vcs.revision, vcs.time, vcs.modified).
	Commit   string
	Time     time.Time
	Modified bool
	// Version is the package version: 0.<commit time>.g<commit>, and
	// .dirty for a tree with uncommitted changes; it grows with every
	// commit, in rpm and dpkg alike.
	Version string
	Gate    *target.Result
}

// Builder builds the node tool.
type Builder struct {
	Runner run.Runner
	// Go is the go command; empty means "go".
	Go string
}

// Build builds cmd/nokmem of the module at root into outDir and checks it
// against the target named targetName.
func (b *Builder) Build(ctx context.Context, root, outDir, targetName string) (*Binary, error) {
	tg, err := target.Lookup(targetName)
	if err != nil {
		return nil, err
	}
	goCmd := b.Go
	if goCmd == "" {
		goCmd = "go"
	}
	out := filepath.Join(outDir, "nokmem")
	// -buildvcs=true: the version comes from the commit, and a GOFLAGS of
	// -buildvcs=false (as on the CI machine) must not drop it.
	env := append(build.BaseEnv(os.Environ()), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOAMD64=v1", "GOFLAGS=")
	// BaseEnv keeps GOMODCACHE but not GOPATH, its default parent: keep
	// using the caller's module cache.
	if gp := os.Getenv("GOPATH"); gp != "" && os.Getenv("GOMODCACHE") == "" {
		env = append(env, "GOMODCACHE="+filepath.Join(filepath.SplitList(gp)[0], "pkg", "mod"))
	}
	args := []string{goCmd, "build", "-trimpath", "-buildvcs=true", "-ldflags=-buildid=", "-o", out, Package}
	if _, err := b.Runner.Run(ctx, run.Cmd{Args: args, Dir: root, Env: env, Isolated: true}); err != nil {
		return nil, fmt.Errorf("build the node tool: %w", err)
	}
	gate, err := target.Check(out, tg)
	if err != nil {
		return nil, fmt.Errorf("node tool: %w", err)
	}
	gate.EmptyRoot = target.RunEmptyRoot(ctx, out, outDir, "--version")
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("node tool: interrupted: %w", err)
	}
	if !gate.OK {
		return nil, fmt.Errorf("the node tool misses target %s: %s", tg.Name, strings.Join(gate.Problems, "; "))
	}
	if e := gate.EmptyRoot; e.Status == target.EmptyRootFailed {
		return nil, fmt.Errorf("the node tool does not start in an empty root directory (%s): %s", strings.Join(e.Args, " "), e.Error)
	}
	bin := &Binary{Path: out, Gate: gate}
	bi, err := buildinfo.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("node tool: %w", err)
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			bin.Commit = s.Value
		case "vcs.time":
			bin.Time, err = time.Parse(time.RFC3339, s.Value)
			if err != nil {
				return nil, fmt.Errorf("node tool: vcs.time %q: %w", s.Value, err)
			}
		case "vcs.modified":
			bin.Modified = s.Value == "true"
		}
	}
	if bin.Commit == "" || bin.Time.IsZero() {
		return nil, fmt.Errorf("the node tool records no commit: build it from a git checkout of nokmem (git must be on PATH)")
	}
	if e := gate.EmptyRoot; e.Status == target.EmptyRootOK && !strings.Contains(e.Output, bin.Commit) {
		return nil, fmt.Errorf("the node tool printed %q in the empty root, not its commit %s", e.Output, bin.Commit)
	}
	bin.Version = fmt.Sprintf("0.%s.g%.7s", bin.Time.UTC().Format("20060102.150405"), bin.Commit)
	if bin.Modified {
		bin.Version += ".dirty"
	}
	if bin.SHA256, err = dist.FileSHA256(out); err != nil {
		return nil, err
	}
	return bin, nil
}

// Project is the dist/ directory of the node tool: dist/tools/v<version>/.
const Project = "tools"

// RecordFile is the gate record beside the binary.
const RecordFile = "gate.json"

// Record is what dist/tools/v<version>/gate.json says about the binary.
type Record struct {
	Commit   string         `json:"commit"`
	Time     time.Time      `json:"time"`
	Modified bool           `json:"modified"`
	Version  string         `json:"version"`
	SHA256   string         `json:"sha256"`
	Gate     *target.Result `json:"gate"`
}

// Publish builds the node tool and, once it passed the gate, moves it with
// its record into dist/tools/v<version>/ (replacing a previous build of
// the same version). The returned Binary's Path is the published one.
func (b *Builder) Publish(ctx context.Context, root, distRoot, targetName string) (*Binary, error) {
	tmp, err := os.MkdirTemp("", "nokmem-tools-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	bin, err := b.Build(ctx, root, tmp, targetName)
	if err != nil {
		return nil, err
	}
	st, err := dist.NewStaging(distRoot, Project, "v"+bin.Version)
	if err != nil {
		return nil, err
	}
	if err := copyFile(bin.Path, st.Path("nokmem"), 0o755); err != nil {
		st.Abort()
		return nil, err
	}
	rec := Record{Commit: bin.Commit, Time: bin.Time, Modified: bin.Modified, Version: bin.Version, SHA256: bin.SHA256, Gate: bin.Gate}
	if err := st.WriteJSON(RecordFile, rec); err != nil {
		st.Abort()
		return nil, err
	}
	dir, err := st.Publish()
	if err != nil {
		st.Abort()
		return nil, err
	}
	bin.Path = filepath.Join(dir, "nokmem")
	return bin, nil
}

// Load returns the published node tools of distRoot that are intact (their
// SHA256SUMS holds) and passed the gate, and why the others do not count.
func Load(distRoot string) (recs []Record, skipped []string) {
	entries, err := os.ReadDir(filepath.Join(distRoot, Project))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			skipped = append(skipped, err.Error())
		}
		return nil, skipped
	}
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		dir := dist.Dir(distRoot, Project, e.Name())
		if _, err := dist.CheckSums(dir); err != nil {
			skipped = append(skipped, fmt.Sprintf("node tool %s: not intact: %v", e.Name(), err))
			continue
		}
		var rec Record
		if err := dist.ReadJSON(dir, RecordFile, &rec); err != nil {
			skipped = append(skipped, fmt.Sprintf("node tool %s: %v", e.Name(), err))
			continue
		}
		sum, err := dist.FileSHA256(filepath.Join(dir, "nokmem"))
		switch {
		case err != nil:
			skipped = append(skipped, fmt.Sprintf("node tool %s: %v", e.Name(), err))
		case rec.Gate == nil || !rec.Gate.OK || sum != rec.SHA256 || "v"+rec.Version != e.Name():
			skipped = append(skipped, fmt.Sprintf("node tool %s: no passed target gate for this binary in %s", e.Name(), RecordFile))
		default:
			recs = append(recs, rec)
		}
	}
	return recs, skipped
}

func copyFile(src, dst string, mode os.FileMode) error {
	return fileutil.Copy(src, dst, mode, os.O_EXCL)
}
