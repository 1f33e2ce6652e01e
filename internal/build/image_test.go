package build

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/nokmem/nokmem/internal/run"
)

// callRunner records every command and fails the first.
type callRunner struct{ calls [][]string }

func (c *callRunner) Run(ctx context.Context, cmd run.Cmd) ([]byte, error) {
	c.calls = append(c.calls, cmd.Args)
	if len(c.calls) == 1 {
		return nil, errors.New("signal: killed")
	}
	return nil, nil
}

// A container build that fails or is cancelled has its container removed
// by name: killing the docker client leaves the container running.
func TestFailedContainerBuildRemovesItsContainer(t *testing.T) {
	cmd := dockerRun("docker", []string{"/w"}, "/w", map[string]string{"A": "1"}, "img", "make", "all")
	i := slices.Index(cmd.Args, "--name")
	if i < 0 || !strings.HasPrefix(cmd.Args[i+1], ContainerPrefix) || slices.Index(cmd.Args, "img") < i {
		t.Fatalf("the build container is not named: %q", cmd.Args)
	}
	if other := dockerRun("docker", nil, "/w", nil, "img"); slices.Contains(other.Args, cmd.Args[i+1]) {
		t.Error("two builds got the same container name")
	}
	r := &callRunner{}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (&Builder{Runner: r}).runBuild(ctx, cmd); err == nil {
		t.Fatal("the failure was swallowed")
	}
	if len(r.calls) != 2 || strings.Join(r.calls[1], " ") != "docker rm -f "+cmd.Args[i+1] {
		t.Fatalf("calls: %q", r.calls)
	}
	// A host build's failure runs nothing more.
	r = &callRunner{}
	(&Builder{Runner: r}).runBuild(context.Background(), run.Cmd{Args: []string{"go", "build"}})
	if len(r.calls) != 1 {
		t.Errorf("calls: %q", r.calls)
	}
}
