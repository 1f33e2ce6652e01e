package targets

import (
	"io"
	"path/filepath"
	"testing"

	"github.com/rhysd/actionlint"
)

// The workflow files are linted with actionlint: expression types, job
// needs, matrix references, runner labels, action inputs.
func TestWorkflowsLint(t *testing.T) {
	files, _ := filepath.Glob("../../.github/workflows/*.yml")
	if len(files) < 2 {
		t.Fatalf("workflows: %v", files)
	}
	l, err := actionlint.NewLinter(io.Discard, &actionlint.LinterOptions{ConfigFile: "../../.github/actionlint.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	errs, err := l.LintFiles(files, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range errs {
		t.Errorf("%s:%d:%d: %s [%s]", e.Filepath, e.Line, e.Column, e.Message, e.Kind)
	}
}

// A deliberately broken workflow is reported: the lint is not a no-op.
func TestWorkflowsLintCatchesErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yml")
	writeFile(t, bad, "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.nope }}\n  b:\n    needs: missing\n    runs-on: ubuntu-latest\n    steps:\n      - run: true\n")
	l, _ := actionlint.NewLinter(io.Discard, &actionlint.LinterOptions{})
	errs, err := l.LintFiles([]string{bad}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) < 2 {
		t.Fatalf("broken workflow passed: %v", errs)
	}
}
