package dist

import "time"

// ProvenanceSchema identifies the provenance format.
const ProvenanceSchema = "nokmem.provenance/v1"

// Provenance records how an artifact was made. Its fields are stable.
type Provenance struct {
	Schema   string `json:"schema"`
	Project  string `json:"project"`
	Version  string `json:"version"`
	Strategy string `json:"strategy"`
	// InputKey hashes every input of the build; an equal key means a
	// rebuild would reproduce the artifact.
	InputKey string         `json:"inputKey"`
	Source   SourceInfo     `json:"source"`
	Patches  []PatchInfo    `json:"patches"`
	Build    BuildInfo      `json:"build"`
	Output   OutputInfo     `json:"output"`
	Checks   map[string]any `json:"checks"`
	Verified VerifiedInfo   `json:"verification"`
}

// SourceInfo says where the source came from.
type SourceInfo struct {
	URL        string    `json:"url"`
	Tag        string    `json:"tag"`
	Commit     string    `json:"commit"`
	CommitDate time.Time `json:"commitDate"`
	// TreeCommit is the local commit holding the patched tree (equal to
	// Commit when nothing was patched).
	TreeCommit string `json:"treeCommit"`
	Matrix     string `json:"matrix"`
	Pinned     string `json:"pinned"` // "pinned" or "unpinned"
}

// PatchInfo is one applied patch.
type PatchInfo struct {
	Name         string `json:"name"`
	SHA256       string `json:"sha256"`
	Target       string `json:"target"`
	BaseSHA256   string `json:"baseSHA256"`
	ResultSHA256 string `json:"resultSHA256"`
}

// BuildInfo says how the binary was compiled.
type BuildInfo struct {
	Tags        []string          `json:"tags"`
	GoRequested string            `json:"goRequested"`
	GoUsed      string            `json:"goUsed"`
	Mode        string            `json:"mode"`
	Image       string            `json:"image,omitempty"`
	Args        []string          `json:"args"`
	Env         map[string]string `json:"env"`
}

// OutputInfo names the binary.
type OutputInfo struct {
	File   string `json:"file"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// VerifiedInfo summarises the verification report (verify.json).
type VerifiedInfo struct {
	Passed  bool     `json:"passed"`
	Verdict string   `json:"verdict"`
	Dynamic string   `json:"dynamic"`
	Notes   []string `json:"notes,omitempty"`
}
