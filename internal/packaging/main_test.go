package packaging

import (
	"fmt"
	"os"
	"testing"

	"github.com/nokmem/nokmem/internal/packaging/packagingtest"
)

// rpm, rpmlint and lintian write into HOME (~/.rpmdb): give them a
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
