package progress

import (
	"bytes"
	"errors"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeClock is a time that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestLogLinesAreTimestampedWithElapsedTimes(t *testing.T) {
	var b bytes.Buffer
	c := &fakeClock{t: time.Date(2026, 11, 23, 17, 50, 1, 0, time.UTC)}
	p := New(&b, Options{Now: c.now})
	done := p.Step("fetch", "runc v1.0.0-rc9: the tag from /srv/git/runc.git (depth 1)")
	c.advance(2 * time.Second)
	p.Printf("WARNING: %s", "a note")
	c.advance(2500 * time.Millisecond)
	done(nil)
	build := p.Step("build", "runc v1.0.0-rc9: statically")
	c.advance(87 * time.Second)
	build(errors.New("exit status 2"))
	want := "17:50:01 fetch        runc v1.0.0-rc9: the tag from /srv/git/runc.git (depth 1)\n" +
		"17:50:03 WARNING: a note\n" +
		"17:50:05 fetch        done in 4.5s\n" +
		"17:50:05 build        runc v1.0.0-rc9: statically\n" +
		"17:51:32 build        failed after 1m27s\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	if p.Output() != nil {
		t.Error("not verbose, but commands would stream")
	}
	if v := New(&b, Options{Verbose: true}); v.Output() != io.Writer(&b) {
		t.Error("verbose: commands do not stream to the log")
	}
}

func TestQuietStepsSpeakOnlyWhenSlow(t *testing.T) {
	var b bytes.Buffer
	p := New(&b, Options{Terminal: true})
	p.Quiet("tag check", "instant", time.Hour)(nil)
	if b.Len() != 0 {
		t.Fatalf("an instant quiet step printed %q", b.String())
	}
	done := p.Quiet("toolchain", "downloading go1.12.17", 10*time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	done(nil)
	if !regexp.MustCompile(`^toolchain    downloading go1.12.17\ntoolchain    done in 0\.\ds\n$`).MatchString(b.String()) {
		t.Errorf("slow quiet step: %q", b.String())
	}
}

// openPTY opens a pseudo-terminal: the program side as a file, and the
// user side to read what was drawn.
func openPTY(t *testing.T) (tty, user *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return s, m
}

func TestTerminalDrawsALiveIndicator(t *testing.T) {
	tty, user := openPTY(t)
	var got bytes.Buffer
	read := make(chan struct{})
	go func() { io.Copy(&got, user); close(read) }()

	p := ForFile(tty, false)
	if p.spin == nil {
		t.Fatal("a terminal gets no live indicator")
	}
	done := p.Step("build", "runc v1.0.0-rc9: statically")
	time.Sleep(400 * time.Millisecond)
	done(nil)
	tty.Close()
	user.SetReadDeadline(time.Now().Add(2 * time.Second))
	<-read
	out := got.String()
	// The step line, then the indicator redrawn in place (carriage return,
	// erase line) with the running time, then the closing line.
	for _, want := range []string{"build        runc v1.0.0-rc9: statically", "\r\x1b[K", "build        done in 0."} {
		if !strings.Contains(out, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, out)
		}
	}
	if !regexp.MustCompile(`\r\S+ build        runc v1\.0\.0-rc9: statically  0\.\ds`).MatchString(out) {
		t.Errorf("no live line with the elapsed time:\n%q", out)
	}
	if regexp.MustCompile(`\d\d:\d\d:\d\d `).MatchString(out) {
		t.Errorf("a terminal got log timestamps:\n%q", out)
	}
}

func TestNotATerminalGetsNoIndicator(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := ForFile(f, false)
	p.Step("verify", "runc v1.0.0-rc9")(nil)
	b, _ := os.ReadFile(f.Name())
	if p.spin != nil || !regexp.MustCompile(`^\d\d:\d\d:\d\d verify       runc v1.0.0-rc9\n\d\d:\d\d:\d\d verify       done in 0\.\ds\n$`).Match(b) {
		t.Errorf("log output: %q", b)
	}
	if v := ForFile(f, true); v.spin != nil || v.Output() == nil {
		t.Error("verbose: want streamed output and no indicator")
	}
}
