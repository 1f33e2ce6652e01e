package packaging

// Package metadata: names, descriptions, maintainer, licences, changelog,
// dist tag, directory ownership and signatures. Build lays out the files;
// meta.apply fills in everything a package manager, lintian or rpmlint
// reads about them, per format.

import (
	_ "embed"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/files"
	"gopkg.in/yaml.v3"

	"github.com/nokmem/nokmem/internal/dist"
)

// DefaultMaintainer is used when NOKMEM_MAINTAINER is unset. The .invalid
// domain (RFC 2606) says honestly that nobody reads it; set the setting to
// whoever answers for the packages.
const DefaultMaintainer = "nokmem builder <nokmem@nokmem.invalid>"

const (
	homepage = "https://github.com/nokmem/nokmem"
	vendor   = "nokmem"
	section  = "admin"
)

var maintainerForm = regexp.MustCompile(`^[^<>@]*[^<>@\s] <[^<>@\s]+@[^<>@\s]+\.[^<>@\s]+>$`)

// CheckMaintainer accepts "Name <address@domain>".
func CheckMaintainer(m string) error {
	if !maintainerForm.MatchString(m) {
		return fmt.Errorf("%q is not \"Full Name <address@example.com>\"", m)
	}
	return nil
}

// PackageSigner signs packages: RPM header signatures are binary detached
// OpenPGP signatures (internal/signing.Signer implements it).
type PackageSigner interface {
	SignBinary(r io.Reader) ([]byte, error)
}

// Options are the packaging settings.
type Options struct {
	// Release is the package release (NOKMEM_PACKAGE_RELEASE); "" means
	// DefaultRelease. RPMs get the target's dist tag appended (.el7).
	Release string
	// Maintainer is "Name <address>" (NOKMEM_MAINTAINER); "" means
	// DefaultMaintainer.
	Maintainer string
	// Signer, if set, signs every RPM (header and header+payload), so that
	// yum/dnf with gpgcheck=1 install it. DEBs are not signed one by one:
	// apt checks the repository's signed Release (internal/mirror).
	Signer PackageSigner
}

// RuncPackageName names the runc package of one upstream release:
// runc-nokmem-rc5 for v1.0.0-rc5, runc-nokmem-<version> for any other tag.
// One name per release, so that yum update and apt upgrade bring only new
// builds of the runc a node has (a higher package release), never another
// runc: rc5 belongs with the Docker of its era, and moving to rc93 is a
// decision, made by installing runc-nokmem-rc93 (which replaces the other
// line: all of them provide and conflict with runc-nokmem).
func RuncPackageName(version string) string {
	v := strings.ToLower(strings.TrimPrefix(version, "v"))
	v = strings.TrimPrefix(v, "1.0.0-")
	v = regexp.MustCompile(`[^a-z0-9.+-]+`).ReplaceAllString(v, ".")
	return "runc-nokmem-" + strings.Trim(v, ".-+")
}

// DistTag is the RPM dist tag of a target: .el7 for el7; "" for a target
// that is not Enterprise Linux.
func DistTag(target string) string {
	if regexp.MustCompile(`^el[0-9]+$`).MatchString(target) {
		return "." + target
	}
	return ""
}

// meta is what apply needs to know about one package.
type meta struct {
	project, version, name, target string
	prov                           *dist.Provenance
	opt                            Options
	tmp                            string // for the generated documents
}

// synopsis is the one-line summary: deb Description's first line, RPM
// Summary (lintian: under 80 characters, no trailing period).
func (m *meta) synopsis() string {
	if m.project == "runc" {
		return "OCI runtime runc " + m.version + " without kernel-memory accounting"
	}
	return "Kubernetes node agent " + m.version + " without kernel-memory accounting"
}

func (m *meta) description() string {
	if m.project == "runc" {
		return fmt.Sprintf(`runc %[1]s rebuilt with cgroup v1 kernel-memory (kmem) accounting
disabled and verified never to write memory.kmem.limit_in_bytes. On kernel
3.10 (EL7) kmem accounting leaks memory cgroups until creating one fails
with "no space left on device".

It installs /usr/bin/runc-nokmem beside the distribution's runc;
/usr/share/runc-nokmem/README says how to switch docker or containerd to
it and back. Each runc release is its own package (%[2]s); all
of them provide runc-nokmem and only one can be installed, so an update
never moves a node to another runc release.`, m.version, m.name)
	}
	return fmt.Sprintf(`kubelet %s rebuilt with the kernel-memory (kmem) accounting of its
vendored libcontainer disabled and verified never to write
memory.kmem.limit_in_bytes. On kernel 3.10 (EL7) kmem accounting leaks
memory cgroups until creating one fails with "no space left on device".

It is a drop-in replacement for the upstream kubelet package: same name,
same files, a release that sorts after upstream's.`, m.version)
}

// upstream names the project nokmem rebuilds, and its copyright holders:
// for runc, those its NOTICE names and the runc authors up to the year of
// the commit built.
func (m *meta) upstream() (name, url, copyright string) {
	year := m.prov.Source.CommitDate.UTC().Year()
	if m.project == "runc" {
		holders := noticeHolders(m.prov.Source.Notice)
		holders = append(holders, fmt.Sprintf("2015-%d the runc authors", year))
		return "runc", "https://github.com/opencontainers/runc", strings.Join(holders, "\n ")
	}
	return "Kubernetes", "https://github.com/kubernetes/kubernetes", fmt.Sprintf("2014-%d The Kubernetes Authors", year)
}

// noticeHolders are the holders a NOTICE file's "Copyright …" lines name.
func noticeHolders(notice string) []string {
	var out []string
	for _, line := range strings.Split(notice, "\n") {
		if h, ok := strings.CutPrefix(strings.TrimSpace(line), "Copyright "); ok && h != "" {
			out = append(out, h)
		}
	}
	return out
}

//go:embed legal/Apache-2.0
var apacheLicense []byte

// modifications says what nokmem changed, from the provenance (Apache-2.0
// §4(b): modified files carry prominent notices).
func (m *meta) modifications() string {
	var b strings.Builder
	p := m.prov
	fmt.Fprintf(&b, "Source: %s, tag %s, commit %s.\n", p.Source.URL, p.Source.Tag, p.Source.Commit)
	if len(p.Patches) == 0 {
		b.WriteString("No source file was changed; it was built with the build tags\n")
		fmt.Fprintf(&b, "%q, which compile upstream's own kmem-disabled code.\n", strings.Join(p.Build.Tags, " "))
	} else {
		b.WriteString("Files changed by nokmem's patches (each stubs out the kernel-memory\naccounting code):\n")
		for _, pt := range p.Patches {
			fmt.Fprintf(&b, "  %s: patch %s (sha256 %s)\n", pt.Target, pt.Name, pt.SHA256)
		}
		if len(p.Build.Tags) > 0 {
			fmt.Fprintf(&b, "Build tags: %q.\n", strings.Join(p.Build.Tags, " "))
		}
	}
	fmt.Fprintf(&b, "The whole build is recorded in /usr/share/doc/%s/provenance.json.\n", m.name)
	return b.String()
}

// notice is the package's NOTICE: what it is, what changed, and upstream's
// NOTICE (runc's; Kubernetes has none of its own but vendors runc's).
func (m *meta) notice() string {
	name, url, _ := m.upstream()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s, modified by nokmem (%s)\n\n", m.project, m.version, homepage)
	fmt.Fprintf(&b, "This package contains %s, a Derivative Work of %s (%s),\n", m.project, name, url)
	b.WriteString("licensed under the Apache License, Version 2.0. Its text is in\n")
	fmt.Fprintf(&b, "/usr/share/licenses/%s/LICENSE (RPM) or\n/usr/share/common-licenses/Apache-2.0 (Debian).\n\n", m.name)
	b.WriteString("Modifications:\n")
	b.WriteString(m.modifications())
	if m.project == "kubelet" {
		b.WriteString("\nKubernetes vendors third-party code, some of it under licences of its\nown and with NOTICE files of its own (vendor/ in the source above).\nThe NOTICE of runc, whose vendored copy nokmem modified, follows.\n")
	}
	b.WriteString("\n---- NOTICE of runc ----\n\n")
	if n := m.prov.Source.Notice; n != "" {
		// As the source at the commit above has it (the kubelet: its
		// vendored runc's).
		b.WriteString(strings.TrimRight(n, "\n") + "\n")
	} else {
		b.WriteString("The source at the commit above carries no NOTICE file of runc's.\n")
	}
	return b.String()
}

// copyright is the Debian copyright file (machine-readable format 1.0).
func (m *meta) copyright() string {
	name, url, holders := m.upstream()
	comment := "Built by nokmem (" + homepage + ") with cgroup v1 kernel-memory\n accounting disabled; /usr/share/doc/" + m.name + "/NOTICE lists the\n modifications. The binary also contains Go packages that upstream vendors,\n each under its own licence (vendor/ in the upstream source)."
	return fmt.Sprintf(`Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: %s
Upstream-Contact: %s
Source: %s
Comment: %s

Files: *
Copyright: %s
License: Apache-2.0

Files: usr/share/doc/%s/*
Copyright: 2026 the nokmem authors
License: Apache-2.0

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License");
 you may not use this file except in compliance with the License.
 You may obtain a copy of the License at
 .
 http://www.apache.org/licenses/LICENSE-2.0
 .
 Unless required by applicable law or agreed to in writing, software
 distributed under the License is distributed on an "AS IS" BASIS,
 WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
 See the License for the specific language governing permissions and
 limitations under the License.
 .
 On Debian systems, the complete text of the Apache License, Version 2.0
 can be found in "/usr/share/common-licenses/Apache-2.0".
`, name, url, m.prov.Source.URL+" (tag "+m.prov.Source.Tag+", commit "+m.prov.Source.Commit+")", comment, holders, m.name)
}

// changelogEntry is one entry of nfpm's changelog file (goreleaser/chglog).
type changelogEntry struct {
	Semver   string    `yaml:"semver"`
	Date     time.Time `yaml:"date"`
	Packager string    `yaml:"packager"`
	Deb      struct {
		Urgency       string   `yaml:"urgency"`
		Distributions []string `yaml:"distributions"`
	} `yaml:"deb"`
	Changes []struct {
		Note string `yaml:"note"`
	} `yaml:"changes"`
}

// changelog writes a one-entry changelog for the package version
// (Debian: changelog.Debian.gz; RPM: %changelog), dated like the files.
func (m *meta) changelog(format, fullVersion string) (string, error) {
	e := changelogEntry{Semver: fullVersion, Date: m.prov.Source.CommitDate.UTC(), Packager: m.maintainer()}
	e.Deb.Urgency = "medium"
	e.Deb.Distributions = []string{"stable"}
	e.Changes = append(e.Changes, struct {
		Note string `yaml:"note"`
	}{Note: fmt.Sprintf("%s %s (commit %.12s) without kernel-memory accounting", m.project, m.version, m.prov.Source.Commit)})
	b, err := yaml.Marshal([]changelogEntry{e})
	if err != nil {
		return "", err
	}
	p := filepath.Join(m.tmp, "changelog-"+format+".yaml")
	return p, os.WriteFile(p, b, 0o644)
}

func (m *meta) maintainer() string {
	if m.opt.Maintainer != "" {
		return m.opt.Maintainer
	}
	return DefaultMaintainer
}

// systemDirs belong to the base system (filesystem, systemd, yum, apt):
// a package that owned them would not be wrong, but removing it must not
// try to remove them. Every other directory a package puts files in, it
// owns, so that rpm -e leaves nothing behind.
var systemDirs = map[string]bool{
	"/": true, "/etc": true, "/etc/default": true, "/etc/sysconfig": true, "/etc/systemd": true, "/etc/systemd/system": true,
	"/etc/yum": true, "/etc/yum/pluginconf.d": true, "/etc/yum.repos.d": true, "/etc/dnf": true, "/etc/dnf/plugins": true,
	"/etc/apt": true, "/etc/apt/preferences.d": true, "/etc/apt/sources.list.d": true,
	"/lib": true, "/lib/systemd": true, "/lib/systemd/system": true, "/opt": true,
	"/usr": true, "/usr/bin": true, "/usr/sbin": true, "/usr/lib": true, "/usr/lib64": true, "/usr/libexec": true,
	"/usr/lib/systemd": true, "/usr/lib/systemd/system": true, "/usr/share": true, "/usr/share/doc": true,
	"/usr/share/licenses": true, "/usr/share/man": true, "/usr/share/man/man1": true, "/usr/share/man/man8": true,
	"/var": true, "/var/lib": true, "/var/log": true, "/run": true,
}

// ownedDirs lists the directories of an RPM's files that it must own.
func ownedDirs(contents files.Contents) []string {
	have := map[string]bool{}
	for _, c := range contents {
		if c.Packager != "" && c.Packager != "rpm" {
			continue
		}
		if c.Type == files.TypeDir {
			have[path.Clean(c.Destination)] = true
		}
	}
	var own []string
	for _, c := range contents {
		if c.Packager != "" && c.Packager != "rpm" || c.Type == files.TypeDir || c.Type == files.TypeImplicitDir {
			continue
		}
		for d := path.Dir(path.Clean(c.Destination)); !systemDirs[d]; d = path.Dir(d) {
			if !have[d] {
				have[d] = true
				own = append(own, d)
			}
		}
	}
	slices.Sort(own)
	return own
}

// markDocs makes the RPM's files under /usr/share/doc %doc files (copies:
// the deb's Info may share the Content values).
func markDocs(contents files.Contents) {
	for i, c := range contents {
		if strings.HasPrefix(c.Destination, "/usr/share/doc/") && (c.Type == "" || c.Type == files.TypeFile) {
			cc := *c
			cc.Type = files.TypeRPMDoc
			contents[i] = &cc
		}
	}
}

// apply fills in info's metadata for format ("rpm" or "deb").
func (m *meta) apply(info *nfpm.Info, format string) error {
	info.Maintainer = m.maintainer()
	info.Vendor = vendor
	info.Homepage = homepage
	info.Section = section
	info.Priority = "optional"
	mode := func(c *files.Content, perm os.FileMode) *files.Content {
		c.FileInfo = &files.ContentFileInfo{Mode: perm}
		return c
	}
	write := func(name, content string) (string, error) {
		p := filepath.Join(m.tmp, format+"-"+name)
		return p, os.WriteFile(p, []byte(content), 0o644)
	}
	notice, err := write("NOTICE", m.notice())
	if err != nil {
		return err
	}
	doc := "/usr/share/doc/" + m.name + "/"
	info.Contents = append(info.Contents, mode(&files.Content{Source: notice, Destination: doc + "NOTICE", Packager: format}, 0o644))
	switch format {
	case "rpm":
		info.Release = m.opt.Release + DistTag(m.target)
		if m.project == "runc" {
			// One line per runc release; see RuncPackageName.
			info.Provides = append(info.Provides, "runc-nokmem = "+PackageVersion(m.version)+"-"+info.Release)
			info.Conflicts = append(info.Conflicts, "runc-nokmem")
		}
		info.Description = m.description()
		info.RPM.Summary = m.synopsis()
		// The licence tag of Fedora and EL up to 9; SPDX's Apache-2.0
		// only from Fedora 38 / EL10. Debian's is in the copyright file.
		info.License = "ASL 2.0"
		markDocs(info.Contents)
		info.RPM.Group = "System Environment/Base"
		info.RPM.BuildHost = "nokmem" // not this machine's name: reproducible
		lic, err := write("LICENSE", string(apacheLicense))
		if err != nil {
			return err
		}
		info.Contents = append(info.Contents, mode(&files.Content{Source: lic, Destination: "/usr/share/licenses/" + m.name + "/LICENSE", Type: files.TypeRPMLicense, Packager: "rpm"}, 0o644))
		for _, d := range ownedDirs(info.Contents) {
			info.Contents = append(info.Contents, mode(&files.Content{Destination: d, Type: files.TypeDir, Packager: "rpm"}, 0o755))
		}
		if m.opt.Signer != nil {
			info.RPM.Signature.SignFn = m.opt.Signer.SignBinary
		}
	case "deb":
		info.Release = m.opt.Release
		info.Description = m.synopsis() + "\n" + m.description()
		if m.project == "runc" {
			// Conflicts and Replaces with a virtual package it provides:
			// Debian policy's idiom for "only one of them" (§7.6.2).
			info.Provides = append(info.Provides, "runc-nokmem (= "+PackageVersion(m.version)+"-"+info.Release+")")
			info.Conflicts = append(info.Conflicts, "runc-nokmem")
			info.Replaces = append(info.Replaces, "runc-nokmem")
		}
		cp, err := write("copyright", m.copyright())
		if err != nil {
			return err
		}
		info.Contents = append(info.Contents, mode(&files.Content{Source: cp, Destination: doc + "copyright", Packager: "deb"}, 0o644))
	default:
		return fmt.Errorf("packaging: no metadata for format %q", format)
	}
	full := PackageVersion(m.version) + "-" + info.Release
	cl, err := m.changelog(format, full)
	if err != nil {
		return err
	}
	info.Changelog = cl
	return nil
}
