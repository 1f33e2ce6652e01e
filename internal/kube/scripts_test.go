package kube

import (
	"strings"
	"testing"
)

// Shapes of hack/lib/golang.sh, reduced to the lines nokmem reads.
const (
	golangSh19 = `  minimum_go_version=go1.9.1
  if [[ "${go_version[2]}" < "${minimum_go_version}" && "${go_version[2]}" != "devel" ]]; then
    goldflags="${GOLDFLAGS:-} $(kube::version::ldflags)"`
	golangSh113 = `  minimum_go_version=go1.10.2
  if [[ "${minimum_go_version}" != $(echo -e "${minimum_go_version}\n${go_version[2]}" | sort -s -t. -k 1,1 -k 2,2n -k 3,3n | head -n1) && "${go_version[2]}" != "devel" ]]; then
    goldflags="${GOLDFLAGS:-} -s -w $(kube::version::ldflags)"`
	golangSh118 = `  minimum_go_version=go1.13.4
    goldflags="${GOLDFLAGS=-s -w} $(kube::version::ldflags)"`
	golangSh120 = `  minimum_go_version=go1.15.0
    goldflags="${GOLDFLAGS=-s -w -buildid=} $(kube::version::ldflags)"`
)

func TestScriptsGoldflagsKeepTheScriptsOwnFlags(t *testing.T) {
	for _, c := range []struct {
		name, sh, want string
		set            bool
	}{
		{"1.9 appends to ${GOLDFLAGS:-}", golangSh19, "-buildid=", true},
		{"1.13 appends -s -w itself", golangSh113, "-buildid=", true},
		{"1.18 default without -buildid=", golangSh118, "-s -w -buildid=", true},
		{"1.20 default has -buildid=", golangSh120, "", false},
	} {
		got, set := ParseScripts(c.sh).Goldflags()
		if got != c.want || set != c.set {
			t.Errorf("%s: GOLDFLAGS %q set=%v, want %q set=%v", c.name, got, set, c.want, c.set)
		}
	}
}

func TestScriptsGoCheck(t *testing.T) {
	for _, c := range []struct {
		sh, goVersion string
		ok            bool
		why           string
	}{
		// 1.9's string comparison refuses every Go from 1.10 on.
		{golangSh19, "go1.26.8", false, "compares Go versions as strings"},
		{golangSh19, "go1.10.8", false, "sorts before its minimum"},
		{golangSh19, "go1.9.3", true, ""},
		{golangSh19, "go1.9", false, "sorts before"},
		// Numeric from 1.11 on: no maximum.
		{golangSh113, "go1.26.8", true, ""},
		{golangSh113, "go1.11.13", true, ""},
		{golangSh113, "go1.9.7", false, "requires go1.10.2 or newer"},
		{golangSh118, "go1.13.4", true, ""},
		{golangSh118, "go1.13.3", false, "requires go1.13.4"},
	} {
		s := ParseScripts(c.sh)
		ok, why := s.AcceptsGo(c.goVersion)
		if ok != c.ok || !strings.Contains(why, c.why) {
			t.Errorf("%s with %.40q: ok=%v %q", c.goVersion, c.sh, ok, why)
		}
	}
	if s := ParseScripts(golangSh19); !s.StringCompare || s.MinimumGo != "go1.9.1" {
		t.Errorf("1.9: %+v", s)
	}
	if s := ParseScripts(golangSh113); s.StringCompare || s.MinimumGo != "go1.10.2" {
		t.Errorf("1.13: %+v", s)
	}
}

func TestReadScriptsNeedsGolangSh(t *testing.T) {
	if _, err := ReadScripts(t.TempDir()); err == nil || !strings.Contains(err.Error(), "hack/lib/golang.sh") {
		t.Fatalf("want a missing golang.sh named, got %v", err)
	}
	dir := t.TempDir()
	write(t, dir, GolangSh, golangSh118)
	if s, err := ReadScripts(dir); err != nil || s.GoldflagsDefault != "-s -w" {
		t.Fatalf("%+v %v", s, err)
	}
}
