package dist

import (
	"time"

	"github.com/nokmem/nokmem/internal/build"
)

// ProvenanceSchema identifies the provenance format.
const ProvenanceSchema = "nokmem.provenance/v1"

// Files of the in-toto statement (internal/attest) beside provenance.json.
// provenance.json keeps nokmem's own record (what packaging and release
// read); the statement is what a consumer checks with standard tools: it
// names the binary's sha256 as its subject and pins provenance.json and
// verify.json by digest, and the signature covers it.
const (
	StatementFile = "provenance.intoto.json"
	SignatureFile = "provenance.intoto.json.asc"
)

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
	// Notice is runc's NOTICE file as the source at Commit carries it
	// (kubelet: the vendored runc's), which every package reproduces
	// (Apache-2.0 §4(d)); "" when the source has none.
	Notice string `json:"notice,omitempty"`
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
	Tags        []string `json:"tags"`
	GoRequested string   `json:"goRequested"`
	GoUsed      string   `json:"goUsed"`
	// GoSource is how the Go was chosen: host, era or an exact version.
	GoSource string `json:"goSource,omitempty"`
	Mode     string `json:"mode"`
	Image    string `json:"image,omitempty"`
	// ImageID is the container-mode image that built it, by content.
	ImageID string            `json:"imageID,omitempty"`
	Args    []string          `json:"args"`
	Env     map[string]string `json:"env"`
	// Target is the nodes the binary is for (verify/target), GOAMD64 the
	// x86-64 level it was compiled for.
	Target  string `json:"target,omitempty"`
	GOAMD64 string `json:"goamd64,omitempty"`
	// Static is the release's "make static" that was reproduced.
	Static *build.Static `json:"static,omitempty"`
	// Cgo is the C compiler and the libseccomp linked in.
	Cgo build.CgoInfo `json:"cgo"`
	// Toolkit is the nokmem revision that made the artifact.
	Toolkit string `json:"toolkit,omitempty"`
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
