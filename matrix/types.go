// Package matrix holds the version matrix: for each supported upstream
// release, the pinned commit and how a nokmem build of it is made. The data
// lives in YAML files beside this package (runc.yaml); Load decodes them
// strictly and Validate reports every problem at once.
package matrix

// APIVersion is the schema version every matrix file must declare.
const APIVersion = "nokmem/v1"

// Strategy says how kernel-memory accounting is disabled for a release.
type Strategy string

const (
	// StrategyPatch: the release has no nokmem build tag; a source patch
	// stubs the kmem functions in libcontainer/cgroups/fs/memory.go.
	StrategyPatch Strategy = "patch"
	// StrategyTag: the release has kmem_disabled.go; build with the nokmem tag.
	StrategyTag Strategy = "tag"
	// StrategyNone: the release carries no kernel-memory code at all.
	StrategyNone Strategy = "none"
)

// Layout says how the release's Go sources are arranged for building.
type Layout string

const (
	LayoutGodeps Layout = "godeps" // Godeps/_workspace on GOPATH (rc1, rc2)
	LayoutGOPATH Layout = "gopath" // vendor/ without go.mod, GO111MODULE=off (rc3 … rc10)
	LayoutGoMod  Layout = "gomod"  // go.mod + vendor/, -mod=vendor (rc91 …)
)

// File is one matrix file as written on disk.
type File struct {
	APIVersion string    `yaml:"apiVersion"`
	Kind       string    `yaml:"kind"`
	Releases   []Release `yaml:"releases"`
}

// Release is one upstream release.
type Release struct {
	Version  string   `yaml:"version"`
	Commit   string   `yaml:"commit"`
	Strategy Strategy `yaml:"strategy"`
	// BuildTags is the exact tag list to build with: the release's own
	// Makefile default plus "nokmem" where the tag exists.
	BuildTags []string `yaml:"buildTags"`
	// Go is the Go minor of the release's era (its Dockerfile), e.g. "1.12".
	Go      string   `yaml:"go"`
	Layout  Layout   `yaml:"layout"`
	Patches []string `yaml:"patches"`
	// Static is the release's own `make static`: the tags it adds to
	// BuildTags and its -installsuffix (runc only).
	Static *Static `yaml:"static"`
	// Toolchain is the default Go for this release: "era" (its own Go
	// minor, latest patch, from the module proxy) or "host". Chosen from
	// measured builds; NOKMEM_GO_TOOLCHAIN overrides it.
	Toolchain string `yaml:"toolchain"`
	Notes     string `yaml:"notes"`

	// Origin is the file this entry was read from (set by Load).
	Origin string `yaml:"-"`
	parsed Version
}

// Parsed returns the parsed version (valid after Load).
func (r Release) Parsed() Version { return r.parsed }

// Static is how a release's Makefile builds its static binary.
type Static struct {
	Tags          []string `yaml:"tags"`
	InstallSuffix string   `yaml:"installSuffix"`
}
