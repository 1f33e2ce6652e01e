package packaging

import (
	"testing"

	"github.com/nokmem/nokmem/internal/packaging/packagingtest"
)

// rpm, rpmlint and lintian write into HOME (~/.rpmdb): give them a
// temporary one.
func TestMain(m *testing.M) { packagingtest.Main(m) }
