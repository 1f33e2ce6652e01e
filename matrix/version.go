package matrix

import (
	"fmt"
	"regexp"
	"strings"

	goversion "github.com/hashicorp/go-version"
)

// Version is an upstream release tag such as "v1.0.0-rc9" or "v1.13.12".
//
// Upstream runc names its pre-releases "rcN"; semantic-version precedence
// compares such identifiers as text, which would sort rc10 before rc9. Parse
// rewrites "rcN" to "rc.N" so that go-version compares the number.
type Version struct {
	Tag string
	v   *goversion.Version
}

var (
	tagRE = regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+(-(rc|alpha|beta)(\.)?[0-9]+)?$`)
	rcRE  = regexp.MustCompile(`-(rc|alpha|beta)([0-9]+)$`)
)

// ParseVersion accepts only release tags of the form vX.Y.Z or vX.Y.Z-rcN.
func ParseVersion(tag string) (Version, error) {
	if !tagRE.MatchString(tag) {
		return Version{}, fmt.Errorf("%q is not a release tag (want the form v1.0.0-rc9 or v1.13.12)", tag)
	}
	v, err := goversion.NewSemver(rcRE.ReplaceAllString(strings.TrimPrefix(tag, "v"), "-$1.$2"))
	if err != nil {
		return Version{}, fmt.Errorf("%q: %w", tag, err)
	}
	return Version{Tag: tag, v: v}, nil
}

// MustVersion is ParseVersion for constants in code.
func MustVersion(tag string) Version {
	v, err := ParseVersion(tag)
	if err != nil {
		panic(err)
	}
	return v
}

// Compare returns -1, 0 or 1.
func (a Version) Compare(b Version) int { return a.v.Compare(b.v) }

// Less orders versions by precedence.
func (a Version) Less(b Version) bool { return a.Compare(b) < 0 }

// Minor returns "X.Y", e.g. "1.13".
func (a Version) Minor() string {
	s := a.v.Segments()
	return fmt.Sprintf("%d.%d", s[0], s[1])
}

func (a Version) String() string { return a.Tag }

// Between reports whether lo <= a <= hi.
func (a Version) Between(lo, hi Version) bool { return a.Compare(lo) >= 0 && a.Compare(hi) <= 0 }
