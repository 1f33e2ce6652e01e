// Package progress tells the user where a long run is: a line per step
// with its elapsed time, a live indicator while a step runs when the output
// is a terminal, and plain timestamped lines when it is not (CI logs).
//
// The pipeline calls the narrow Reporter interface; it never knows which
// kind of output it writes to.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/briandowns/spinner"
	"golang.org/x/term"
)

// Reporter is what a run tells about its steps.
type Reporter interface {
	// Step starts step (a short name: fetch, treat, source check, …), with
	// what it does; calling the returned function ends it, with its error.
	Step(step, what string) (done func(err error))
	// Quiet is Step for a step that is usually instant (a toolchain that is
	// already there, a cache hit): its lines appear only once it has taken
	// longer than after.
	Quiet(step, what string, after time.Duration) (done func(err error))
	// Printf prints a note (a warning, a decision) between the step lines.
	Printf(format string, a ...any)
	// Output is where commands stream their own output (go build, make)
	// in verbose mode, or nil.
	Output() io.Writer
}

// Discard reports nothing.
var Discard Reporter = discard{}

type discard struct{}

func (discard) Step(string, string) func(error) { return func(error) {} }
func (discard) Quiet(string, string, time.Duration) func(error) {
	return func(error) {}
}
func (discard) Printf(string, ...any) {}
func (discard) Output() io.Writer     { return nil }

// Options choose how a Writer reports.
type Options struct {
	// Terminal draws a live indicator while a step runs; otherwise every
	// line starts with a timestamp.
	Terminal bool
	// Verbose streams the commands' own output (Output is the writer).
	// It turns the live indicator off, which would draw over it.
	Verbose bool
	// Now is time.Now; tests replace it.
	Now func() time.Time
}

// ForFile reports to f (os.Stderr): live when f is a terminal, timestamped
// lines otherwise.
func ForFile(f *os.File, verbose bool) *Writer {
	w := New(f, Options{Terminal: term.IsTerminal(int(f.Fd())), Verbose: verbose})
	if w.opt.Terminal && !w.opt.Verbose {
		w.spin = spinner.New(spinner.CharSets[14], 120*time.Millisecond, spinner.WithWriterFile(f))
	}
	return w
}

// New reports to w with opt. It draws no indicator: w is not known to be
// a terminal (ForFile adds one when it is).
func New(w io.Writer, opt Options) *Writer {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Writer{w: w, opt: opt}
}

// Writer is the Reporter for a terminal or a log.
type Writer struct {
	mu   sync.Mutex
	w    io.Writer
	opt  Options
	spin *spinner.Spinner
	// the running step, redrawn by the indicator
	step, what string
	since      time.Time
}

// width is how much of a step's description the live line shows.
const width = 72

// Step implements Reporter.
func (p *Writer) Step(step, what string) func(error) {
	return p.begin(step, what, p.opt.Now())
}

// begin starts step, which started at start.
func (p *Writer) begin(step, what string, start time.Time) func(error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopSpin()
	p.step, p.what, p.since = step, what, start
	p.line("%-12s %s", step, what)
	p.startSpin()
	var once sync.Once
	return func(err error) {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			elapsed := Round(p.opt.Now().Sub(start))
			p.stopSpin()
			if err != nil {
				p.line("%-12s failed after %s", step, elapsed)
			} else {
				p.line("%-12s done in %s", step, elapsed)
			}
			if p.step == step {
				p.step = ""
			}
		})
	}
}

// Quiet implements Reporter.
func (p *Writer) Quiet(step, what string, after time.Duration) func(error) {
	var (
		mu      sync.Mutex
		done    func(error)
		stopped bool
	)
	start := p.opt.Now()
	timer := time.AfterFunc(after, func() {
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			done = p.begin(step, what, start)
		}
	})
	return func(err error) {
		timer.Stop()
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		if done != nil {
			done(err)
		}
	}
}

// Printf implements Reporter.
func (p *Writer) Printf(format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopSpin()
	p.line(format, a...)
	p.startSpin()
}

// Output implements Reporter.
func (p *Writer) Output() io.Writer {
	if !p.opt.Verbose {
		return nil
	}
	return p.w
}

// line writes one line: on a terminal as it is, in a log after a timestamp.
func (p *Writer) line(format string, a ...any) {
	msg := strings.TrimRight(fmt.Sprintf(format, a...), "\n")
	if !p.opt.Terminal {
		msg = p.opt.Now().Format("15:04:05") + " " + msg
	}
	fmt.Fprintln(p.w, msg)
}

func (p *Writer) stopSpin() {
	if p.spin != nil {
		p.spin.Stop()
	}
}

// startSpin draws the running step, if any, with its elapsed time.
func (p *Writer) startSpin() {
	if p.spin == nil || p.step == "" {
		return
	}
	what := p.what
	if r := []rune(what); len(r) > width {
		what = string(r[:width-1]) + "…"
	}
	step, since := p.step, p.since
	p.spin.Prefix = ""
	p.spin.PreUpdate = func(s *spinner.Spinner) {
		s.Suffix = fmt.Sprintf(" %-12s %s  %s", step, what, Round(time.Since(since)))
	}
	p.spin.Start()
}

// Round is how elapsed times are shown: seconds with a tenth under a
// minute (4.5s), whole seconds above (1m27s).
func Round(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return d.Round(time.Second).String()
}
