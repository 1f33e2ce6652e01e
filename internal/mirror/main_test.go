package mirror

import (
	"testing"

	"github.com/nokmem/nokmem/internal/packaging/packagingtest"
)

// rpm, dnf and gpg write into HOME (~/.rpmdb, ~/.gnupg): give them a
// temporary one.
func TestMain(m *testing.M) { packagingtest.Main(m) }
