package main

import (
	"fmt"
	"io"
	"log"
	"path/filepath"
	"sort"
	"strings"

	"github.com/magefile/mage/mage"
	"github.com/magefile/mage/parse"
)

// usageError is a command line that names an unknown target or gives a
// target the wrong number of arguments: exit status 2, as Mage's own.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// checkArgs checks the targets and arguments of a command line against the
// magefile's signatures before anything is compiled or run. Mage's
// generated main runs each target as soon as it has read its arguments, so
// `build:runc v1.0.0-rc9 extra` would build runc and only then fail on
// "extra" ("Unknown target"). The magefile is parsed, not compiled (a few
// milliseconds: go/parser and go/doc over magefiles/).
func checkArgs(root string, args []string, multiline bool) error {
	if len(args) == 0 {
		return nil
	}
	dir := filepath.Join(root, mage.MagefilesDirName)
	files, err := mage.Magefiles(dir, "", "", true)
	if err != nil {
		return nil // Mage reports it as it runs
	}
	var own []string
	for _, f := range files {
		if filepath.Base(f) != generated {
			own = append(own, filepath.Base(f)) // parse wants them relative to dir
		}
	}
	quiet := log.Writer()
	log.SetOutput(io.Discard) // parse's warnings are Mage's to print
	info, err := parse.PrimaryPackage("go", dir, own, multiline)
	log.SetOutput(quiet)
	if err != nil {
		return nil
	}
	targets := map[string]*parse.Function{}
	for _, f := range info.Funcs {
		targets[strings.ToLower(f.TargetName())] = f
	}
	for _, imp := range info.Imports {
		for _, f := range imp.Info.Funcs {
			targets[strings.ToLower(f.TargetName())] = f
		}
	}
	for alias, f := range info.Aliases {
		targets[strings.ToLower(alias)] = f
	}
	for i := 0; i < len(args); {
		name := args[i]
		f, ok := targets[strings.ToLower(name)]
		if !ok {
			return &usageError{fmt.Sprintf("unknown target %q; nothing was run (%s -l lists the targets)", name, binaryName)}
		}
		i++
		req := f.RequiredArgs()
		if len(args)-i < len(req) {
			return &usageError{fmt.Sprintf("%s needs %s; nothing was run. Usage: %s", name, argNames(req), usage(f))}
		}
		i += len(req)
		for f.HasOptionalArgs() && i < len(args) && strings.HasPrefix(args[i], "-") {
			i++
		}
		if i < len(args) {
			if _, next := targets[strings.ToLower(args[i])]; !next {
				return &usageError{fmt.Sprintf("%s takes %s, but %q follows; nothing was run. Usage: %s",
					name, argNames(req), args[i], usage(f))}
			}
		}
	}
	return nil
}

// argNames says what a target takes: "1 argument (<version>)".
func argNames(req []parse.Arg) string {
	if len(req) == 0 {
		return "no arguments"
	}
	names := make([]string, len(req))
	for i, a := range req {
		names[i] = "<" + a.Name + ">"
	}
	n := "1 argument"
	if len(req) > 1 {
		n = fmt.Sprintf("%d arguments", len(req))
	}
	return n + " (" + strings.Join(names, " ") + ")"
}

// usage is the line Mage's -h prints for f.
func usage(f *parse.Function) string {
	u := binaryName + " " + strings.ToLower(f.TargetName())
	for _, a := range f.RequiredArgs() {
		u += " <" + a.Name + ">"
	}
	opt := f.OptionalArgs()
	sort.Slice(opt, func(i, j int) bool { return opt[i].Name < opt[j].Name })
	for _, a := range opt {
		u += " [-" + a.Name + "=<" + a.Type + ">]"
	}
	return u
}
