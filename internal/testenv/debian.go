package testenv

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// DebianRoot makes a minimal Debian root with debootstrap
// (--variant=minbase plus include, comma-separated packages) in a
// temporary directory and returns it, with its repositories removed: what
// it installs later comes only from where the test points it. Suite and
// archive: NOKMEM_TEST_DEBIAN_SUITE (default this host's Debian release,
// else bookworm) and NOKMEM_TEST_DEBIAN_MIRROR (default
// http://deb.debian.org/debian). Outside CI a debootstrap that cannot
// reach the archive skips the test; in CI it fails it.
func DebianRoot(t testing.TB, include ...string) string {
	t.Helper()
	RequireRoot(t)
	RequireTools(t, "debootstrap")
	suite := os.Getenv("NOKMEM_TEST_DEBIAN_SUITE")
	if suite == "" {
		suite = hostDebianSuite()
	}
	archive := os.Getenv("NOKMEM_TEST_DEBIAN_MIRROR")
	if archive == "" {
		archive = "http://deb.debian.org/debian"
	}
	root := filepath.Join(t.TempDir(), "debian")
	t.Cleanup(func() { unmountUnder(t, root) })
	args := []string{"--variant=minbase"}
	if len(include) > 0 {
		args = append(args, "--include="+strings.Join(include, ","))
	}
	args = append(args, suite, root, archive)
	out, err := exec.Command("debootstrap", args...).CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("debootstrap %s: %v\n%s", strings.Join(args, " "), err, tailLines(string(out), 15))
		if InCI() {
			t.Fatal(msg)
		}
		t.Skip("cannot make a Debian root here: " + msg)
	}
	os.Remove(filepath.Join(root, "etc/apt/sources.list"))
	entries, _ := os.ReadDir(filepath.Join(root, "etc/apt/sources.list.d"))
	for _, e := range entries {
		os.Remove(filepath.Join(root, "etc/apt/sources.list.d", e.Name()))
	}
	// The downloaded packages and lists: nothing the root needs.
	for _, d := range []string{"var/lib/apt/lists", "var/cache/apt/archives"} {
		os.RemoveAll(filepath.Join(root, d))
		os.MkdirAll(filepath.Join(root, d, "partial"), 0o755)
	}
	return root
}

// hostDebianSuite is this host's Debian codename, or bookworm.
func hostDebianSuite() string {
	b, _ := os.ReadFile("/etc/os-release")
	var id, codename string
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, "=")
		v = strings.Trim(v, `"`)
		switch k {
		case "ID":
			id = v
		case "VERSION_CODENAME":
			codename = v
		}
	}
	if id == "debian" && codename != "" {
		return codename
	}
	return "bookworm"
}

// unmountUnder detaches whatever a failed debootstrap left mounted in
// root (proc, sys), deepest first, so the temporary directory can go.
func unmountUnder(t testing.TB, root string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 4 && strings.HasPrefix(fs[4], root+"/") {
			mounts = append(mounts, fs[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
	for _, m := range mounts {
		if out, err := exec.Command("umount", "-l", m).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", m, err, out)
		}
	}
}

func tailLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}
