package mirror

import (
	"fmt"
	"os"
	"testing"

	"github.com/nokmem/nokmem/internal/packaging/packagingtest"
)

// rpm, dnf and gpg write into HOME (~/.rpmdb, ~/.gnupg): give them a
// temporary one.
func TestMain(m *testing.M) {
	cleanup, err := packagingtest.IsolateHome()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}
