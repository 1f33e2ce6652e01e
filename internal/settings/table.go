package settings

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// secrets are settings whose values are never printed, only whether they
// are set.
var secrets = map[string]bool{"NOKMEM_SIGNING_PASSPHRASE": true, "GITHUB_TOKEN": true}

// tableWidth is where the meaning column wraps.
const tableWidth = 110

// Table renders every setting for the settings target: its name, the value
// in effect (what getenv answers, secrets redacted, or "(default)"), its
// default, and below them its meaning, wrapped; columns aligned to the
// longest name and value.
func Table(getenv func(string) string) string {
	type row struct{ name, value, def, help string }
	rows := make([]row, 0, len(All))
	nameW, valueW := len("NAME"), len("IN EFFECT")
	for _, s := range All {
		r := row{name: s.Name, value: "(default)", def: s.Default, help: s.Help}
		if r.def == "" {
			r.def = "unset"
		}
		if v := getenv(s.Name); v != "" {
			r.value = v
			if secrets[s.Name] {
				r.value = "set (not shown)"
			}
		}
		nameW = max(nameW, utf8.RuneCountInString(r.name))
		valueW = max(valueW, min(utf8.RuneCountInString(r.value), 44))
		rows = append(rows, r)
	}
	var b strings.Builder
	pad := func(s string, w int) string { return s + strings.Repeat(" ", max(w-utf8.RuneCountInString(s), 0)) }
	fmt.Fprintf(&b, "%s  %s  %s\n", pad("NAME", nameW), pad("IN EFFECT", valueW), "DEFAULT")
	indent := strings.Repeat(" ", nameW+2)
	for _, r := range rows {
		fmt.Fprintf(&b, "%s  %s  %s\n", pad(r.name, nameW), pad(r.value, valueW), r.def)
		for _, l := range wrap(r.help, tableWidth-len(indent)) {
			b.WriteString(indent + l + "\n")
		}
	}
	return b.String()
}

// wrap breaks s into lines of at most width runes, at spaces.
func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		switch {
		case line == "":
			line = w
		case utf8.RuneCountInString(line)+1+utf8.RuneCountInString(w) > width:
			lines = append(lines, line)
			line = w
		default:
			line += " " + w
		}
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}
