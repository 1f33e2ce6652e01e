package targets

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// Every action is pinned by full commit SHA, with the tag it had in a
// comment for humans and Dependabot, and Dependabot proposes updates.
func TestWorkflowActionsArePinnedBySHA(t *testing.T) {
	files, _ := filepath.Glob("../../.github/workflows/*.yml")
	uses := regexp.MustCompile(`(?m)^\s*(?:-\s+)?uses:\s*(\S+)(.*)$`)
	pinned := regexp.MustCompile(`^[\w.-]+/[\w./-]+@[0-9a-f]{40}$`)
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range uses.FindAllStringSubmatch(string(b), -1) {
			n++
			if strings.HasPrefix(m[1], "./") {
				continue
			}
			if !pinned.MatchString(m[1]) || !regexp.MustCompile(`#\s*v\d`).MatchString(m[2]) {
				t.Errorf("%s: %s%s is not pinned by full SHA with its tag in a comment", filepath.Base(f), m[1], m[2])
			}
		}
	}
	if n == 0 {
		t.Fatal("no uses: found")
	}
	b, err := os.ReadFile("../../.github/dependabot.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Version int
		Updates []struct {
			Ecosystem string `yaml:"package-ecosystem"`
		}
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	var eco []string
	for _, u := range cfg.Updates {
		eco = append(eco, u.Ecosystem)
	}
	if cfg.Version != 2 || !strings.Contains(strings.Join(eco, " "), "github-actions") {
		t.Errorf("dependabot.yml: %+v", cfg)
	}
}

// A workflow that pull requests trigger never runs a fork's code on a
// self-hosted runner (root on a long-lived host): each such job is
// guarded by the head repository.
func TestUntrustedPullRequestsStayOffSelfHostedRunners(t *testing.T) {
	files, _ := filepath.Glob("../../.github/workflows/*.yml")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var wf struct {
			On   yaml.Node `yaml:"on"`
			Jobs map[string]struct {
				If     string    `yaml:"if"`
				RunsOn yaml.Node `yaml:"runs-on"`
			}
		}
		if err := yaml.Unmarshal(b, &wf); err != nil {
			t.Fatal(err)
		}
		var on []string
		collect := func(n *yaml.Node) {
			switch n.Kind {
			case yaml.ScalarNode:
				on = append(on, n.Value)
			case yaml.SequenceNode:
				for _, c := range n.Content {
					on = append(on, c.Value)
				}
			case yaml.MappingNode:
				for i := 0; i < len(n.Content); i += 2 {
					on = append(on, n.Content[i].Value)
				}
			}
		}
		collect(&wf.On)
		prs := false
		for _, e := range on {
			prs = prs || strings.HasPrefix(e, "pull_request")
		}
		for name, j := range wf.Jobs {
			var labels []string
			if err := j.RunsOn.Decode(&labels); err != nil {
				var one string
				j.RunsOn.Decode(&one)
				labels = []string{one}
			}
			selfHosted := strings.Contains(strings.Join(labels, " "), "self-hosted")
			if !selfHosted {
				continue
			}
			if on := strings.Join(on, " "); strings.Contains(on, "pull_request_target") {
				t.Errorf("%s: pull_request_target with a self-hosted job (%s)", filepath.Base(f), name)
			}
			if prs && !strings.Contains(j.If, "github.event.pull_request.head.repo.full_name == github.repository") {
				t.Errorf("%s: job %s runs pull requests on a self-hosted runner without the fork guard (if: %q)", filepath.Base(f), name, j.If)
			}
		}
	}
}
