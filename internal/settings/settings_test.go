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

func TestTableShowsValuesInEffectAlignedAndNoSecret(t *testing.T) {
	tab := Table(env(map[string]string{"NOKMEM_RUNC_REPO": "/srv/git/runc.git", "NOKMEM_SIGNING_PASSPHRASE": "hunter2", "GITHUB_TOKEN": "ghp_secret"}))
	if strings.Contains(tab, "hunter2") || strings.Contains(tab, "ghp_secret") {
		t.Fatalf("a secret is printed:\n%s", tab)
	}
	lines := strings.Split(strings.TrimSuffix(tab, "\n"), "\n")
	valueCol, defaultCol := strings.Index(lines[0], "IN EFFECT"), strings.Index(lines[0], "DEFAULT")
	if valueCol < 0 || defaultCol < valueCol {
		t.Fatalf("header %q", lines[0])
	}
	seen := map[string]string{}
	for _, l := range lines[1:] {
		if strings.HasPrefix(l, " ") {
			// the meaning, under the value column, never past the width
			if strings.TrimLeft(l, " ") != l[valueCol:] || len([]rune(l)) > tableWidth {
				t.Errorf("meaning line not aligned or too long: %q", l)
			}
			continue
		}
		name := strings.TrimRight(l[:valueCol], " ")
		if l[valueCol-1] != ' ' || l[valueCol] == ' ' {
			t.Errorf("%s runs into its value: %q", name, l)
		}
		seen[name] = strings.TrimSpace(l[valueCol:defaultCol]) + "|" + strings.TrimSpace(l[defaultCol:])
	}
	for name, want := range map[string]string{
		"NOKMEM_RUNC_REPO":          "/srv/git/runc.git|https://github.com/opencontainers/runc.git",
		"NOKMEM_SIGNING_PASSPHRASE": "set (not shown)|unset",
		"GITHUB_TOKEN":              "set (not shown)|unset",
		"NOKMEM_DOCKER_PRIVILEGED":  "(default)|1",
		"NOKMEM_PUBLISH":            "(default)|0",
	} {
		if seen[name] != want {
			t.Errorf("%s: %q, want %q", name, seen[name], want)
		}
	}
	if len(seen) != len(All) {
		t.Errorf("%d settings in the table, want %d", len(seen), len(All))
	}
	// One default each: none in the meaning.
	for _, s := range All {
		if strings.Contains(s.Help, "(default") {
			t.Errorf("%s names a second default in its meaning: %s", s.Name, s.Help)
		}
	}
}
