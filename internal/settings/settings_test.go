package settings

import (
	"strings"
	"testing"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaults(t *testing.T) {
	e, err := Read(env(map[string]string{"HOME": "/h", "XDG_CACHE_HOME": "/c"}))
	if err != nil {
		t.Fatal(err)
	}
	if e.RuncRepo != "https://github.com/opencontainers/runc.git" || e.Cache != "/c/nokmem" || e.Mode != "host" || e.Dist != "dist" || e.Dynamic != "auto" || e.Target != "el7" {
		t.Errorf("%+v", e)
	}
}

func TestEveryBadValueReported(t *testing.T) {
	_, err := Read(env(map[string]string{
		"NOKMEM_RUNC_REPO": "-oProxyCommand=x", "NOKMEM_BUILD_MODE": "vm", "NOKMEM_ALLOW_STATIC_ONLY": "yes",
		"NOKMEM_DYNAMIC": "maybe", "NOKMEM_MATRIX_OVERLAY": "/does/not/exist", "NOKMEM_CACHE": "/c",
		"NOKMEM_TARGET": "el6", "NOKMEM_GO_TOOLCHAIN": "latest",
	}))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"NOKMEM_RUNC_REPO", "NOKMEM_BUILD_MODE", "NOKMEM_ALLOW_STATIC_ONLY", "NOKMEM_DYNAMIC", "NOKMEM_MATRIX_OVERLAY",
		`NOKMEM_TARGET: unknown target "el6" (known: el7, el8, el9, debian11)`, `NOKMEM_GO_TOOLCHAIN: want host, era or a Go version`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %s: %v", want, err)
		}
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	h := Help()
	for _, s := range All {
		if !strings.Contains(h, s.Name) {
			t.Errorf("help lacks %s", s.Name)
		}
	}
}
