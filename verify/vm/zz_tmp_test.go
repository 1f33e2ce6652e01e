package vm

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nokmem/nokmem/internal/fixture"
	"github.com/nokmem/nokmem/verify/guest"
)

type stamp struct {
	start time.Time
	buf   string
}

func (s *stamp) Write(p []byte) (int, error) {
	s.buf += string(p)
	for {
		i := strings.IndexByte(s.buf, '\n')
		if i < 0 {
			break
		}
		fmt.Fprintf(os.Stderr, "%6.2f %s\n", time.Since(s.start).Seconds(), strings.TrimRight(s.buf[:i], "\r"))
		s.buf = s.buf[i+1:]
	}
	return len(p), nil
}

func TestZZProfile(t *testing.T) {
	bin := os.Getenv("ZZ_BIN")
	if bin == "" {
		repoOnce.Do(func() { repo = fixture.NewRuncRepoIn(t, sharedDir) })
		bin = repo.BuildRuncLinked(t, "v1.0.0-rc9", []string{"seccomp", "nokmem"}, false, fixture.LinkStatic)
		copyTo(bin, "/tmp/vmwork/fixture-rc9-nokmem")
	}
	v := testVerifier(t, t.TempDir())
	v.Append = strings.Fields(os.Getenv("ZZ_APPEND"))
	v.Console = &stamp{start: time.Now()}
	v.launcher = argLauncher{}
	boot, err := v.Check(context.Background(), []Binary{{Name: "runc", Path: bin, Kind: guest.KindRunc}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("wall %s uptime %.2f\n%s", boot.Wall, boot.Result.Uptime, boot.Result.Items[0].Dynamic.TimingSummary())
}

type argLauncher struct{}

func (argLauncher) launch(ctx context.Context, argv []string, extra []*os.File, console io.Writer, limit time.Duration) (exit, error) {
	var out []string
	for i := 0; i < len(argv); i++ {
		if r := os.Getenv("ZZ_REPL_" + strings.TrimPrefix(argv[i], "-")); r != "" && i+1 < len(argv) {
			out = append(out, argv[i], r)
			i++
			continue
		}
		out = append(out, argv[i])
	}
	out = append(out, strings.Fields(os.Getenv("ZZ_EXTRA"))...)
	fmt.Fprintln(os.Stderr, strings.Join(out, " "))
	return processLauncher{}.launch(ctx, out, extra, console, limit)
}
