package nodetools

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/run"
	"github.com/nokmem/nokmem/internal/testenv"
	"github.com/nokmem/nokmem/verify/target"
)

func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// The real node tool from this checkout: static, passes the el7 gate,
// prints its commit in an empty root, and is versioned by that commit.
func TestBuildsTheNodeToolForEL7(t *testing.T) {
	testenv.RequireTools(t, "go", "git")
	root := moduleRoot(t)
	if _, err := os.Stat(filepath.Join(root, ".git")); err != nil {
		t.Skip("not a git checkout: the node tool's version comes from the commit")
	}
	ctx := context.Background()
	bin, err := (&Builder{Runner: run.Local{}}).Build(ctx, root, t.TempDir(), "el7")
	if err != nil {
		t.Fatal(err)
	}
	head, err := (run.Local{}).Run(ctx, run.Cmd{Args: []string{"git", "rev-parse", "HEAD"}, Dir: root})
	if err != nil {
		t.Fatal(err)
	}
	if bin.Commit != strings.TrimSpace(string(head)) {
		t.Errorf("commit %s, HEAD is %s", bin.Commit, head)
	}
	if !regexp.MustCompile(`^0\.[0-9]{8}\.[0-9]{6}\.g[0-9a-f]{7}(\.dirty)?$`).MatchString(bin.Version) {
		t.Errorf("version %q", bin.Version)
	}
	if bin.Gate.Linkage != "static" || !bin.Gate.OK || bin.Gate.GOAMD64 != "v1" || bin.Gate.CGOEnabled != "0" {
		t.Errorf("gate: %s", bin.Gate.Summary())
	}
	switch e := bin.Gate.EmptyRoot; e.Status {
	case target.EmptyRootOK:
		t.Logf("empty root: %s", e.Output)
	case target.EmptyRootUnavailable:
		if testenv.InCI() {
			t.Errorf("CI=true but the empty-root run could not be made: %s", e.Error)
		}
	default:
		t.Errorf("empty root: %+v", e)
	}
	if len(bin.SHA256) != 64 {
		t.Errorf("sha256 %q", bin.SHA256)
	}
}

// fakeGo "builds" by copying a prepared file to the -o path, or fails.
type fakeGo struct {
	src string
	err error
}

func (f fakeGo) Run(_ context.Context, c run.Cmd) ([]byte, error) {
	if f.err != nil {
		return []byte("compile error"), &run.Error{Args: c.Args, Dir: c.Dir, Output: []byte("compile error"), Err: f.err}
	}
	for i, a := range c.Args {
		if a == "-o" {
			b, err := os.ReadFile(f.src)
			if err != nil {
				return nil, err
			}
			return nil, os.WriteFile(c.Args[i+1], b, 0o755)
		}
	}
	return nil, os.ErrInvalid
}

func TestBuildRefusals(t *testing.T) {
	dir := t.TempDir()
	noVCS := filepath.Join(dir, "novcs")
	if _, err := (run.Local{}).Run(context.Background(), run.Cmd{Args: []string{"go", "build", "-buildvcs=false", "-trimpath", "-o", noVCS, "."},
		Dir: filepath.Join(moduleRoot(t), "cmd", "nokmem"), Env: []string{"CGO_ENABLED=0"}}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		r    run.Runner
		want string
	}{
		{"go build fails", fakeGo{err: os.ErrPermission}, "build the node tool: command failed"},
		{"no commit recorded", fakeGo{src: noVCS}, "records no commit"},
	}
	// A dynamic binary of this machine misses el7 (GLIBC_2.3x).
	for _, p := range []string{"/usr/sbin/runc", "/usr/bin/containerd"} {
		if _, err := os.Stat(p); err == nil {
			cases = append(cases, struct {
				name string
				r    run.Runner
				want string
			}{"dynamic binary", fakeGo{src: p}, "misses target el7"})
			break
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := (&Builder{Runner: tc.r}).Build(context.Background(), moduleRoot(t), t.TempDir(), "el7")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := (&Builder{Runner: fakeGo{src: noVCS}}).Build(context.Background(), moduleRoot(t), t.TempDir(), "el6"); err == nil {
		t.Error("an unknown target was accepted")
	}
}

// Publish moves a gated build into dist/tools/v<version>/; Load admits it
// only while its bytes and record hold.
func TestPublishAndLoad(t *testing.T) {
	testenv.RequireTools(t, "go", "git")
	root := moduleRoot(t)
	if _, err := os.Stat(filepath.Join(root, ".git")); err != nil {
		t.Skip("not a git checkout")
	}
	d := t.TempDir()
	bin, err := (&Builder{Runner: run.Local{}}).Publish(context.Background(), root, d, "el7")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(d, Project, "v"+bin.Version)
	if bin.Path != filepath.Join(dir, "nokmem") {
		t.Errorf("published at %s", bin.Path)
	}
	recs, skipped := Load(d)
	if len(recs) != 1 || len(skipped) != 0 || recs[0].SHA256 != bin.SHA256 || recs[0].Commit != bin.Commit {
		t.Fatalf("Load: %+v %v", recs, skipped)
	}
	if left, _ := filepath.Glob(filepath.Join(d, ".*")); len(left) > 0 {
		t.Errorf("staging left: %v", left)
	}
	// A record that does not vouch for these bytes.
	rec := recs[0]
	rec.SHA256 = strings.Repeat("0", 64)
	b, _ := json.Marshal(rec)
	os.WriteFile(filepath.Join(dir, RecordFile), b, 0o644)
	if err := dist.WriteSums(dir); err != nil {
		t.Fatal(err)
	}
	if recs, skipped := Load(d); len(recs) != 0 || len(skipped) != 1 || !strings.Contains(skipped[0], "no passed target gate") {
		t.Errorf("wrong record admitted: %+v %v", recs, skipped)
	}
	// Changed bytes.
	os.WriteFile(bin.Path, []byte("tampered"), 0o755)
	if recs, skipped := Load(d); len(recs) != 0 || !strings.Contains(strings.Join(skipped, " "), "not intact") {
		t.Errorf("tampered binary admitted: %+v %v", recs, skipped)
	}
}
