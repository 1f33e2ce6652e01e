package packaging

// Reading packages back: what a .rpm or .deb says it is (name, version)
// and the sha256 of every regular file in its payload, so that a release
// or a mirror takes only packages that carry a verified artifact. Only
// what nfpm writes is needed (RPM: newc cpio, gzip or uncompressed; DEB:
// gzip or uncompressed tar); anything else is refused, which is safe: such
// a package did not come from Build.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nokmem/nokmem/internal/dist"
)

// Contents is what a package file holds.
type Contents struct {
	Format  string // "rpm" or "deb"
	Name    string
	Version string // upstream version, e.g. 1.0.0~rc9
	Release string // package release, e.g. 1.nokmem.el7
	Arch    string // x86_64 (rpm), amd64 (deb)
	// Files maps each regular file's absolute path to its sha256.
	Files map[string]string
}

// ReadPackage reads a .rpm or .deb.
func ReadPackage(p string) (*Contents, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var c *Contents
	switch {
	case strings.HasSuffix(p, ".rpm"):
		c, err = readRPM(r)
	case strings.HasSuffix(p, ".deb"):
		c, err = readDeb(r)
	default:
		return nil, fmt.Errorf("%s: not a .rpm or .deb", p)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Base(p), err)
	}
	return c, nil
}

// RPM tags read from the main header.
const (
	tagName              = 1000
	tagVersion           = 1001
	tagRelease           = 1002
	tagArch              = 1022
	tagPayloadFormat     = 1124
	tagPayloadCompressor = 1125
)

func readRPM(r io.Reader) (*Contents, error) {
	lead := make([]byte, 96)
	if _, err := io.ReadFull(r, lead); err != nil || !bytes.Equal(lead[:4], []byte{0xed, 0xab, 0xee, 0xdb}) {
		return nil, errors.New("not an RPM (no lead)")
	}
	// The signature header, padded to 8 bytes, then the main header.
	n, err := rpmHeader(r, nil)
	if err != nil {
		return nil, fmt.Errorf("signature header: %w", err)
	}
	if pad := (8 - n%8) % 8; pad > 0 {
		if _, err := io.CopyN(io.Discard, r, int64(pad)); err != nil {
			return nil, err
		}
	}
	tags := map[int]string{}
	if _, err := rpmHeader(r, tags); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	c := &Contents{Format: "rpm", Name: tags[tagName], Version: tags[tagVersion], Release: tags[tagRelease], Arch: tags[tagArch], Files: map[string]string{}}
	if f := tags[tagPayloadFormat]; f != "" && f != "cpio" {
		return nil, fmt.Errorf("payload format %q", f)
	}
	var payload io.Reader = r
	switch comp := tags[tagPayloadCompressor]; comp {
	case "gzip", "":
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("payload: %w", err)
		}
		payload = zr
	case "identity":
	default:
		return nil, fmt.Errorf("payload compressed with %q, not gzip", comp)
	}
	return c, readCpio(payload, c.Files)
}

// SameButSignature says whether the package at existing holds exactly what
// the freshly built one at built holds, but for the RPM signature header
// (whose signatures record when they were made), and is signed if
// signed is set. Packages that are not RPMs must be equal byte for byte.
func SameButSignature(built, existing string, signed bool) (bool, error) {
	a, err := os.ReadFile(built)
	if err != nil {
		return false, err
	}
	b, err := os.ReadFile(existing)
	if err != nil {
		return false, err
	}
	if !strings.HasSuffix(existing, ".rpm") {
		return bytes.Equal(a, b), nil
	}
	restA, _, err := afterSignature(a)
	if err != nil {
		return false, err
	}
	restB, sigB, err := afterSignature(b)
	if err != nil {
		return false, err
	}
	// 268: RPMSIGTAG_RSA (header), 1002: RPMSIGTAG_PGP (header+payload).
	if signed && !(sigB[268] && sigB[1002]) {
		return false, nil
	}
	return bytes.Equal(restA, restB), nil
}

// afterSignature returns what follows an RPM's signature header, and which
// tags the signature header holds.
func afterSignature(b []byte) ([]byte, map[int]bool, error) {
	if len(b) < 96+16 || !bytes.Equal(b[:4], []byte{0xed, 0xab, 0xee, 0xdb}) {
		return nil, nil, errors.New("not an RPM")
	}
	h := b[96:]
	count, size := int(binary.BigEndian.Uint32(h[8:12])), int(binary.BigEndian.Uint32(h[12:16]))
	n := 16 + 16*count + size
	if count > 1<<16 || len(h) < n {
		return nil, nil, errors.New("bad signature header")
	}
	tags := map[int]bool{}
	for i := 0; i < count; i++ {
		tags[int(binary.BigEndian.Uint32(h[16+16*i:]))] = true
	}
	n += (8 - n%8) % 8
	if len(h) < n {
		return nil, nil, errors.New("bad signature header")
	}
	return h[n:], tags, nil
}

// rpmHeader reads one header structure, keeping the string tags wanted
// (nil: none), and returns its length in bytes.
func rpmHeader(r io.Reader, want map[int]string) (int, error) {
	var h struct {
		Magic    [3]byte
		Version  byte
		Reserved [4]byte
		Count    uint32
		Size     uint32
	}
	if err := binary.Read(r, binary.BigEndian, &h); err != nil {
		return 0, err
	}
	if h.Magic != [3]byte{0x8e, 0xad, 0xe8} || h.Count > 1<<16 || h.Size > 256<<20 {
		return 0, errors.New("bad header")
	}
	index := make([]struct{ Tag, Type, Offset, Count uint32 }, h.Count)
	if err := binary.Read(r, binary.BigEndian, index); err != nil {
		return 0, err
	}
	data := make([]byte, h.Size)
	if _, err := io.ReadFull(r, data); err != nil {
		return 0, err
	}
	for _, e := range index {
		if want == nil || e.Type != 6 || e.Offset >= h.Size { // 6: STRING
			continue
		}
		s := data[e.Offset:]
		if i := bytes.IndexByte(s, 0); i >= 0 {
			s = s[:i]
		}
		want[int(e.Tag)] = string(s)
	}
	return 16 + 16*int(h.Count) + int(h.Size), nil
}

// readCpio hashes the regular files of a newc ("070701") cpio archive.
func readCpio(r io.Reader, out map[string]string) error {
	br := bufio.NewReader(r)
	var off int64
	skip := func(n int64) error {
		_, err := io.CopyN(io.Discard, br, n)
		off += n
		return err
	}
	for {
		hdr := make([]byte, 110)
		if _, err := io.ReadFull(br, hdr); err != nil {
			return fmt.Errorf("cpio: %w", err)
		}
		off += 110
		if magic := string(hdr[:6]); magic != "070701" && magic != "070702" {
			return fmt.Errorf("cpio: magic %q", magic)
		}
		field := func(i int) (int64, error) {
			return strconv.ParseInt(string(hdr[6+8*i:14+8*i]), 16, 64)
		}
		mode, err1 := field(1)
		size, err2 := field(6)
		nameSize, err3 := field(11)
		if err := errors.Join(err1, err2, err3); err != nil || nameSize < 1 || nameSize > 4096 {
			return fmt.Errorf("cpio: bad header")
		}
		name := make([]byte, nameSize)
		if _, err := io.ReadFull(br, name); err != nil {
			return err
		}
		off += nameSize
		if err := skip((4 - off%4) % 4); err != nil {
			return err
		}
		n := string(bytes.TrimRight(name, "\x00"))
		if n == "TRAILER!!!" {
			return nil
		}
		if mode&0o170000 == 0o100000 {
			h := sha256.New()
			if _, err := io.CopyN(h, br, size); err != nil {
				return err
			}
			off += size
			out[path.Join("/", n)] = hex.EncodeToString(h.Sum(nil))
		} else if err := skip(size); err != nil {
			return err
		}
		if err := skip((4 - off%4) % 4); err != nil {
			return err
		}
	}
}

func readDeb(r io.Reader) (*Contents, error) {
	magic := make([]byte, 8)
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != "!<arch>\n" {
		return nil, errors.New("not a deb (no ar archive)")
	}
	c := &Contents{Format: "deb", Files: map[string]string{}}
	var sawControl, sawData bool
	for {
		hdr := make([]byte, 60)
		if _, err := io.ReadFull(r, hdr); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, err
		}
		name := strings.TrimSuffix(strings.TrimSpace(string(hdr[:16])), "/")
		size, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || size < 0 {
			return nil, fmt.Errorf("ar member %q: bad size", name)
		}
		member := io.LimitReader(r, size)
		switch {
		case strings.HasPrefix(name, "control.tar"):
			sawControl = true
			err = readTar(name, member, func(n string, tr io.Reader) error {
				if n != "control" {
					return nil
				}
				b, err := io.ReadAll(io.LimitReader(tr, 1<<20))
				if err != nil {
					return err
				}
				return parseControl(b, c)
			})
		case strings.HasPrefix(name, "data.tar"):
			sawData = true
			err = readTar(name, member, func(n string, tr io.Reader) error {
				h := sha256.New()
				if _, err := io.Copy(h, tr); err != nil {
					return err
				}
				c.Files[path.Join("/", n)] = hex.EncodeToString(h.Sum(nil))
				return nil
			})
		}
		if err != nil {
			return nil, err
		}
		if _, err := io.Copy(io.Discard, member); err != nil {
			return nil, err
		}
		if size%2 == 1 {
			if _, err := io.CopyN(io.Discard, r, 1); err != nil && !errors.Is(err, io.EOF) {
				return nil, err
			}
		}
	}
	if !sawControl || !sawData {
		return nil, errors.New("no control.tar or data.tar member")
	}
	return c, nil
}

// readTar calls f for every regular file of a (gzip-compressed) tar member.
func readTar(member string, r io.Reader, f func(name string, r io.Reader) error) error {
	switch {
	case strings.HasSuffix(member, ".gz"):
		zr, err := gzip.NewReader(r)
		if err != nil {
			return fmt.Errorf("%s: %w", member, err)
		}
		r = zr
	case member == "control.tar" || member == "data.tar":
	default:
		return fmt.Errorf("%s: compression not read (nokmem's packages use gzip)", member)
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", member, err)
		}
		if h.Typeflag == tar.TypeReg {
			if err := f(path.Clean(strings.TrimPrefix(h.Name, "./")), tr); err != nil {
				return err
			}
		}
	}
}

func parseControl(b []byte, c *Contents) error {
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok || strings.HasPrefix(l, " ") {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "Package":
			c.Name = v
		case "Architecture":
			c.Arch = v
		case "Version":
			if i := strings.LastIndex(v, "-"); i >= 0 {
				c.Version, c.Release = v[:i], v[i+1:]
			} else {
				c.Version = v
			}
		}
	}
	if c.Name == "" || c.Version == "" {
		return errors.New("control: no Package or Version")
	}
	return nil
}

// FileName is the conventional file name of the package: what Build
// writes, and what yum and apt repositories expect.
func (c *Contents) FileName() string {
	if c.Format == "rpm" {
		return fmt.Sprintf("%s-%s-%s.%s.rpm", c.Name, c.Version, c.Release, c.Arch)
	}
	v := c.Version
	if c.Release != "" {
		v += "-" + c.Release
	}
	return fmt.Sprintf("%s_%s_%s.deb", c.Name, v, c.Arch)
}

// binaryPath is where each project's package installs the verified binary.
var binaryPath = map[string]string{"runc": "/usr/bin/runc-nokmem", "kubelet": "/usr/bin/kubelet"}

// Artifact is a verified artifact a package may carry.
type Artifact struct {
	Project, Version string
	Package          string // the package name Build gives it
	PackageVersion   string // its upstream version in the package (1.0.0~rc9)
	Binary           string // where the package installs it
	SHA256           string // of the binary
}

// Artifacts are the verified artifacts of a dist/ tree, the only ones
// whose packages may be released or published.
type Artifacts struct{ list []Artifact }

// LoadArtifacts collects every intact, verified artifact in distRoot.
// Others are left out (their packages are then refused), with the reason
// in skipped.
func LoadArtifacts(distRoot string) (a *Artifacts, skipped []string) {
	a = &Artifacts{}
	for _, project := range []string{"runc", "kubelet"} {
		entries, _ := os.ReadDir(filepath.Join(distRoot, project))
		for _, e := range entries {
			if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			dir, _, err := Verified(distRoot, project, e.Name())
			if err != nil {
				skipped = append(skipped, err.Error())
				continue
			}
			sum, err := dist.FileSHA256(filepath.Join(dir, project))
			if err != nil {
				skipped = append(skipped, err.Error())
				continue
			}
			name := "kubelet"
			if project == "runc" {
				name = RuncPackageName(e.Name())
			}
			a.Add(Artifact{Project: project, Version: e.Name(), Package: name, PackageVersion: PackageVersion(e.Name()), Binary: binaryPath[project], SHA256: sum})
		}
	}
	skipped = append(skipped, addTools(a, distRoot)...)
	return a, skipped
}

// Add admits the packages of one more binary that passed its own gate (the
// node tool: internal/nodetools).
func (a *Artifacts) Add(art Artifact) { a.list = append(a.list, art) }

// Check says which verified artifact the package at p carries: its name
// and upstream version must be the ones Build gives that artifact, and the
// binary in its payload must have the artifact's sha256. Anything else
// (a stray package, one built from another binary, one that cannot be
// read) is an error that says why.
func (a *Artifacts) Check(p string) (*Artifact, error) {
	c, err := ReadPackage(p)
	if err != nil {
		return nil, err
	}
	base := filepath.Base(p)
	if want := c.FileName(); base != want {
		return nil, fmt.Errorf("%s: the package inside is %s (%s), not what its file name says", base, want, c.Format)
	}
	for i := range a.list {
		art := &a.list[i]
		if c.Name != art.Package || c.Version != art.PackageVersion {
			continue
		}
		got, ok := c.Files[art.Binary]
		if !ok {
			return nil, fmt.Errorf("%s: package %s %s holds no %s", base, c.Name, c.Version, art.Binary)
		}
		if got != art.SHA256 {
			return nil, fmt.Errorf("%s: %s has sha256 %s, but the verified artifact %s %s has %s", base, art.Binary, got, art.Project, art.Version, art.SHA256)
		}
		return art, nil
	}
	return nil, fmt.Errorf("%s: package %s %s is not the package of any verified artifact in dist/", base, c.Name, c.Version)
}
