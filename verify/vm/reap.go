package vm

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/nokmem/nokmem/internal/owner"
)

// buildPrefix names the directory /init is built in:
// nokmem-vm-build-<owner>-<random> (internal/owner), removed before
// BuildInit returns. Only a process killed during the build leaves one;
// the next check removes it once its owner is gone.
const buildPrefix = "nokmem-vm-build-"

// reapOwned removes the entries of dir named <prefix><owner>-<random>
// whose owner is certainly gone, and returns them: what a process killed
// at the wrong moment left (a build directory, a snapshot being written).
func reapOwned(dir, prefix string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok {
			continue
		}
		i := strings.LastIndexByte(rest, '-')
		if i < 0 {
			continue
		}
		id, ok := owner.Parse(rest[:i])
		if !ok || id.Check() != owner.Gone {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if os.RemoveAll(p) == nil {
			out = append(out, p)
		}
	}
	return out
}
