package pipeline

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nokmem/nokmem/internal/build"
	"github.com/nokmem/nokmem/internal/patch"
	"github.com/nokmem/nokmem/internal/run"
)

func mustPatches(t *testing.T, c *Config) *patch.Set {
	s, err := patch.LoadDirs(filepath.Join(c.PatchesDir, "runc"), overlayDir(c.PatchesOverlay, "runc"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func builder() *build.Builder { return &build.Builder{Runner: run.Local{}} }

func kubeletReq(tree, gopath string, tag bool) *build.KubeletRequest {
	r := &build.KubeletRequest{Tree: tree, Tag: tag, Version: "v0.0.0", SourceDate: time.Unix(0, 0), Mode: build.ModeHost,
		Toolchain: build.Toolchain{GoBin: "go", Version: "go"}}
	if _, err := os.Stat(filepath.Join(tree, "go.mod")); err != nil {
		r.GOPATH = gopath // pre-module tree, as BuildKubelet decides
	}
	return r
}

// dirNames lists the entries of dir, space-separated, in order.
func dirNames(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return strings.Join(names, " ")
}
