package pipeline

import (
	"context"
	"io"

	"github.com/nokmem/nokmem/internal/progress"
	"github.com/nokmem/nokmem/internal/run"
)

// reporter is where the pipeline tells its steps: Config.Progress, else
// plain lines to Config.Log, else nowhere.
func (c *Config) reporter() progress.Reporter {
	switch {
	case c.Progress != nil:
		return c.Progress
	case c.Log != nil:
		return progress.New(c.Log, progress.Options{Terminal: true})
	}
	return progress.Discard
}

// step starts one of the steps a user sees (fetch, treat, source check,
// toolchain, build, verify, publish); the returned function ends it with
// the step's error.
func (c *Config) step(name, what string) func(error) {
	return c.reporter().Step(name, what)
}

// streaming is c.Runner, with the commands' own output also streamed to
// the reporter in verbose mode (go build, make).
func (c *Config) streaming() run.Runner {
	out := c.reporter().Output()
	if out == nil {
		return c.Runner
	}
	return streamRunner{Runner: c.Runner, out: out}
}

type streamRunner struct {
	run.Runner
	out io.Writer
}

func (s streamRunner) Run(ctx context.Context, cmd run.Cmd) ([]byte, error) {
	if cmd.Stream == nil {
		cmd.Stream = s.out
	}
	return s.Runner.Run(ctx, cmd)
}
