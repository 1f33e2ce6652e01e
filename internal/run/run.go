// Package run is the single seam through which nokmem starts external
// commands (git, go, docker). Commands are argument vectors, never shell
// strings, and a failure carries the argv, the working directory and the
// captured output so that it can be reproduced by copy-paste.
package run

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// Cmd is one external command.
type Cmd struct {
	Args []string // Args[0] is the program
	Dir  string
	Env  []string // added to (and overriding) the inherited environment
	// Isolated makes Env the whole environment: nothing is inherited.
	Isolated bool
	Stdin    io.Reader
	// Stream, if set, also receives the command's combined output as it runs.
	Stream io.Writer
}

// Runner runs commands. Tests replace it with a fake.
type Runner interface {
	Run(ctx context.Context, c Cmd) ([]byte, error)
}

// Error is returned when a command fails to start or exits non-zero.
type Error struct {
	Args   []string
	Dir    string
	Output []byte
	Err    error
}

func (e *Error) Error() string {
	out := strings.TrimSpace(string(e.Output))
	const max = 4000
	if len(out) > max {
		out = "…" + out[len(out)-max:]
	}
	msg := fmt.Sprintf("command failed (%v): %s", e.Err, Quote(e.Args))
	if e.Dir != "" {
		msg += " (in " + e.Dir + ")"
	}
	if out != "" {
		msg += "\n" + out
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Quote renders argv for humans in a form a POSIX shell would accept.
func Quote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r == '-' || r == '_' || r == '.' || r == '/' || r == '=' || r == ':' || r == ',' || r == '+' || r == '@' ||
				(r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z'))
		}) < 0 {
			q[i] = a
			continue
		}
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// Local runs commands on this machine.
type Local struct{}

// Run executes c and returns its combined output.
func (Local) Run(ctx context.Context, c Cmd) ([]byte, error) {
	if len(c.Args) == 0 {
		return nil, errors.New("run: empty command")
	}
	cmd := exec.CommandContext(ctx, c.Args[0], c.Args[1:]...)
	cmd.Dir = c.Dir
	cmd.Env = MergeEnv(os.Environ(), c.Env)
	if c.Isolated {
		cmd.Env = MergeEnv(nil, c.Env)
	}
	cmd.Stdin = c.Stdin
	var buf bytes.Buffer
	var w io.Writer = &buf
	if c.Stream != nil {
		w = io.MultiWriter(&buf, c.Stream)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return buf.Bytes(), &Error{Args: c.Args, Dir: c.Dir, Output: buf.Bytes(), Err: err}
	}
	return buf.Bytes(), nil
}

// MergeEnv returns base with every KEY=VALUE of over replacing the same KEY.
func MergeEnv(base, over []string) []string {
	idx := map[string]int{}
	out := make([]string, 0, len(base)+len(over))
	for _, kv := range append(append([]string{}, base...), over...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}
