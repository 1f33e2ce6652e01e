package kube

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// GolangSh is the Kubernetes script that builds the binaries.
const GolangSh = "hack/lib/golang.sh"

// Scripts is what nokmem reads from a tree's hack/lib/golang.sh before
// running Kubernetes' own make, so that it can set the few variables the
// script reads (never a copy of its logic) and refuse early what the script
// would refuse late.
type Scripts struct {
	// GoldflagsDefault is the value golang.sh gives GOLDFLAGS when it is
	// unset (`${GOLDFLAGS=-s -w}` in 1.18, `${GOLDFLAGS=-s -w -buildid=}`
	// later); HasGoldflagsDefault is false where the script only appends
	// `${GOLDFLAGS:-}` to its own flags (1.9 … 1.17).
	GoldflagsDefault    string `json:"goldflagsDefault,omitempty"`
	HasGoldflagsDefault bool   `json:"hasGoldflagsDefault"`
	// MinimumGo is minimum_go_version (e.g. go1.9.1), if the script has one.
	MinimumGo string `json:"minimumGo,omitempty"`
	// StringCompare says that the script compares `go version` with
	// MinimumGo as strings (`[[ "${go_version[2]}" < "${minimum_go_version}" ]]`,
	// Kubernetes 1.9 and 1.10): go1.10 … go1.19 and go1.2x sort before
	// go1.9.1 there and are refused. Later scripts sort numerically.
	StringCompare bool `json:"stringCompare,omitempty"`
}

var (
	goldflagsDefaultRE = regexp.MustCompile(`\$\{GOLDFLAGS=([^}]*)\}`)
	minimumGoRE        = regexp.MustCompile(`(?m)^\s*minimum_go_version=(go[0-9][0-9.]*)\s*$`)
	stringCompareRE    = regexp.MustCompile(`\[\[\s*"\$\{go_version\[2\]\}"\s*<\s*"\$\{minimum_go_version\}"`)
)

// ReadScripts reads hack/lib/golang.sh of tree.
func ReadScripts(tree string) (*Scripts, error) {
	b, err := os.ReadFile(filepath.Join(tree, filepath.FromSlash(GolangSh)))
	if err != nil {
		return nil, fmt.Errorf("not a Kubernetes tree nokmem can build with make: %w", err)
	}
	return ParseScripts(string(b)), nil
}

// ParseScripts reads the text of a golang.sh.
func ParseScripts(golangSh string) *Scripts {
	s := &Scripts{}
	if m := goldflagsDefaultRE.FindStringSubmatch(golangSh); m != nil {
		s.GoldflagsDefault, s.HasGoldflagsDefault = m[1], true
	}
	if m := minimumGoRE.FindStringSubmatch(golangSh); m != nil {
		s.MinimumGo = m[1]
	}
	s.StringCompare = stringCompareRE.MatchString(golangSh)
	return s
}

// Goldflags returns the GOLDFLAGS to set so that golang.sh links with an
// empty Go build id (whose action hash includes the work-tree path when
// paths are trimmed with -gcflags, as before Go 1.13) and otherwise with
// exactly its own linker flags; set is false when the script's default
// already has -buildid=.
func (s *Scripts) Goldflags() (value string, set bool) {
	if !s.HasGoldflagsDefault {
		// golang.sh appends its own flags (-s -w in 1.13) to ${GOLDFLAGS:-}.
		return "-buildid=", true
	}
	if strings.Contains(" "+s.GoldflagsDefault+" ", " -buildid= ") {
		return "", false
	}
	return strings.TrimSpace(s.GoldflagsDefault + " -buildid="), true
}

// AcceptsGo says whether the script's own Go check lets goVersion (as
// `go version` prints it, e.g. go1.26.8) build, and if not, why.
func (s *Scripts) AcceptsGo(goVersion string) (bool, string) {
	if s.MinimumGo == "" || goVersion == "" || strings.HasPrefix(goVersion, "devel") {
		return true, ""
	}
	if s.StringCompare {
		if goVersion < s.MinimumGo {
			return false, fmt.Sprintf("%s compares Go versions as strings: %q sorts before its minimum %q, so it refuses %s although it is newer. "+
				"Build this release with its own Go (NOKMEM_GO_TOOLCHAIN=era, the default) or any Go that sorts after %s as a string (go1.9.x)",
				GolangSh, goVersion, s.MinimumGo, goVersion, s.MinimumGo)
		}
		return true, ""
	}
	if compareGo(goVersion, s.MinimumGo) < 0 {
		return false, fmt.Sprintf("%s requires %s or newer, and %s is older", GolangSh, s.MinimumGo, goVersion)
	}
	return true, ""
}

// compareGo orders go1.X[.Y] versions numerically.
func compareGo(a, b string) int {
	pa, pb := goParts(a), goParts(b)
	for i := range pa {
		if pa[i] != pb[i] {
			if pa[i] < pb[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}

func goParts(v string) [3]int {
	var p [3]int
	for i, f := range strings.SplitN(strings.TrimPrefix(v, "go"), ".", 3) {
		n, _ := strconv.Atoi(strings.TrimRightFunc(f, func(r rune) bool { return r < '0' || r > '9' }))
		p[i] = n
	}
	return p
}
