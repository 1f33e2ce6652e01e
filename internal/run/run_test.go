package run

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestLocalRunCapturesFailure(t *testing.T) {
	_, err := Local{}.Run(context.Background(), Cmd{Args: []string{"sh", "-c", "echo boom >&2; exit 3", "x; rm -rf /"}, Dir: "/"})
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("want *Error, got %v", err)
	}
	msg := e.Error()
	for _, want := range []string{"boom", "exit status 3", "'x; rm -rf /'", "(in /)"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
}

func TestLocalRunNoShellExpansion(t *testing.T) {
	out, err := Local{}.Run(context.Background(), Cmd{Args: []string{"echo", "$HOME", "`id`", "a;b"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != "$HOME `id` a;b" {
		t.Fatalf("arguments were interpreted: %q", got)
	}
}

func TestMergeEnv(t *testing.T) {
	got := MergeEnv([]string{"A=1", "B=2"}, []string{"B=3", "C=4"})
	if strings.Join(got, " ") != "A=1 B=3 C=4" {
		t.Fatalf("got %v", got)
	}
}
