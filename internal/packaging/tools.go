package packaging

// The nokmem-tools package: the node tool (cmd/nokmem, built and held to
// the target gate by internal/nodetools) with its README, so that a node
// can verify its runc and kubelet and wire runc-nokmem into docker or
// containerd with what the mirror serves.

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/files"
	"gopkg.in/yaml.v3"

	"github.com/nokmem/nokmem/internal/nodetools"
)

// ToolsPackage is the name of the node tool's package.
const ToolsPackage = "nokmem-tools"

// ToolsBinary is where it installs the node tool.
const ToolsBinary = "/usr/bin/nokmem"

// addTools admits the nokmem-tools packages of every node tool published
// in distRoot that passed its gate (nodetools.Load), and says why others
// do not count.
func addTools(a *Artifacts, distRoot string) []string {
	recs, skipped := nodetools.Load(distRoot)
	for _, r := range recs {
		a.Add(Artifact{Project: nodetools.Project, Version: "v" + r.Version, Package: ToolsPackage, PackageVersion: r.Version, Binary: ToolsBinary, SHA256: r.SHA256})
	}
	return skipped
}

// ToolsFrom is the Tools of a node tool nodetools built or published.
func ToolsFrom(b *nodetools.Binary, target string) Tools {
	return Tools{Binary: b.Path, Version: b.Version, Commit: b.Commit, Time: b.Time, Target: target}
}

// Tools is a node tool binary that passed the target gate.
type Tools struct {
	Binary  string    // the static nokmem binary
	Version string    // package version (nodetools.Binary.Version)
	Commit  string    // the nokmem commit it was built from
	Time    time.Time // the commit's time: file mtimes and changelog date
	Target  string    // the target it passed, e.g. el7 (the RPM dist tag)
}

const toolsReadme = `nokmem-tools: the node side of nokmem
=====================================

nokmem verify [-json FILE] [-dynamic auto|require|off] [-allow-static-only] runc|kubelet BINARY
    Says whether BINARY can write memory.kmem.limit_in_bytes: static checks
    of the binary and, for runc as root on a cgroup v1 node, a real run
    traced with ptrace and fanotify. Exit status 0: it cannot.
      nokmem verify runc /usr/bin/runc-nokmem
    A kubelet alone cannot be run that far (its build's dynamic check is in
    /usr/share/doc/kubelet/verify.json), so accept its static evidence:
      nokmem verify -allow-static-only kubelet /usr/bin/kubelet
    -allow-static-only (or NOKMEM_ALLOW_STATIC_ONLY=1) also serves hosts
    without cgroup v1.

nokmem runtime containerd [--default | --remove] [--systemd-cgroup auto|true|false] [--binary PATH] [CONFIG]
    Merges the runtime handler "nokmem" (runc-nokmem under containerd's runc
    shim) into CONFIG, /etc/containerd/config.toml by default, keeping every
    other setting; --default makes it the default for pods without a
    RuntimeClass; --remove takes it out. Then: systemctl restart containerd

nokmem runtime docker [--default | --remove] [--binary PATH] [CONFIG]
    Registers the runtime "nokmem" in CONFIG, /etc/docker/daemon.json by
    default (docker run --runtime nokmem), or makes it the default.
    Then: systemctl reload docker

    Both keep the previous file as CONFIG.nokmem-backup-<UTC time> and write
    nothing when nothing changes. TOML comments do not survive the rewrite:
    they stay in the backup. The runc-nokmem package's
    /usr/share/runc-nokmem/README covers switching and rolling back.

nokmem doctor [--root DIR] [--json] [--textfile DIR]
    Read-only: is this node exposed to the kmem leak, is kmem accounting on
    and where, is the node leaking (memory cgroup count, kernel log), and is
    the fix in place (which runc and kubelet run, their cgroup driver, and
    their static verdict). --json for Ansible/SSH, --textfile for
    node_exporter's textfile collector. Exit status 0 ok, 1 at risk,
    2 leaking, 3 could not tell, 4 the doctor failed.

nokmem version
    The nokmem commit this binary was built from.

Exit status: 0 done, 1 failed (verify: the binary did not pass), 2 usage.
`

// BuildTools writes the nokmem-tools packages (one per format) into
// dist/packages and returns their paths.
func BuildTools(distRoot string, t Tools, opt Options) ([]string, error) {
	if t.Binary == "" || t.Version == "" || t.Commit == "" || t.Time.IsZero() {
		return nil, fmt.Errorf("packaging %s: the node tool lacks its binary, version or commit", ToolsPackage)
	}
	if opt.Release == "" {
		opt.Release = DefaultRelease
	}
	tmp, err := os.MkdirTemp("", "nokmem-pkg-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	write := func(name, content string) (string, error) {
		p := filepath.Join(tmp, name)
		return p, os.WriteFile(p, []byte(content), 0o644)
	}
	readme, err := write("README", toolsReadme)
	if err != nil {
		return nil, err
	}
	lic, err := write("LICENSE", string(apacheLicense))
	if err != nil {
		return nil, err
	}
	doc := "/usr/share/doc/" + ToolsPackage + "/"
	copyright := fmt.Sprintf(`Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: nokmem
Source: %s (commit %s)

Files: *
Copyright: 2026 the nokmem authors
License: Apache-2.0
 On Debian systems, the complete text of the Apache License, Version 2.0
 can be found in "/usr/share/common-licenses/Apache-2.0".
`, homepage, t.Commit)
	cp, err := write("copyright", copyright)
	if err != nil {
		return nil, err
	}
	synopsis := "Node tool of nokmem: verify runc and kubelet, wire runc-nokmem"
	description := "The nokmem command checks that a runc or kubelet binary cannot write\n" +
		"memory.kmem.limit_in_bytes, and merges the runc-nokmem runtime into\n" +
		"containerd's config.toml or docker's daemon.json (and takes it out\n" +
		"again), keeping every other setting. Built from nokmem commit " + t.Commit[:12] + "."
	maintainer := opt.Maintainer
	if maintainer == "" {
		maintainer = DefaultMaintainer
	}
	mode := func(m os.FileMode) *files.ContentFileInfo {
		return &files.ContentFileInfo{Mode: m, MTime: t.Time}
	}
	out := Dir(distRoot)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	var paths []string
	for _, format := range Formats {
		info := &nfpm.Info{Name: ToolsPackage, Arch: "amd64", Platform: "linux", Version: t.Version, VersionSchema: "none",
			Release: opt.Release, Maintainer: maintainer, Vendor: vendor, Homepage: homepage, Section: section, Priority: "optional",
			MTime: t.Time}
		info.Contents = files.Contents{
			{Source: t.Binary, Destination: ToolsBinary, FileInfo: mode(0o755)},
			{Source: readme, Destination: doc + "README", FileInfo: mode(0o644)},
		}
		switch format {
		case "rpm":
			info.Release += DistTag(t.Target)
			info.Description = description
			info.RPM.Summary = synopsis
			info.License = "ASL 2.0"
			info.RPM.Group = "System Environment/Base"
			info.RPM.BuildHost = "nokmem"
			info.Contents = append(info.Contents, &files.Content{Source: lic, Destination: "/usr/share/licenses/" + ToolsPackage + "/LICENSE", Type: files.TypeRPMLicense, FileInfo: mode(0o644)})
			markDocs(info.Contents)
			for _, d := range ownedDirs(info.Contents) {
				info.Contents = append(info.Contents, &files.Content{Destination: d, Type: files.TypeDir, FileInfo: mode(0o755)})
			}
			if opt.Signer != nil {
				info.RPM.Signature.SignFn = opt.Signer.SignBinary
			}
		case "deb":
			info.Description = synopsis + "\n" + description
			info.Contents = append(info.Contents, &files.Content{Source: cp, Destination: doc + "copyright", FileInfo: mode(0o644)})
		}
		cl, err := toolsChangelog(tmp, format, t, maintainer, t.Version+"-"+info.Release)
		if err != nil {
			return nil, err
		}
		info.Changelog = cl
		info = nfpm.WithDefaults(info)
		if err := nfpm.Validate(info); err != nil {
			return nil, fmt.Errorf("packaging %s %s: %w", ToolsPackage, format, err)
		}
		pkgr, err := nfpm.Get(format)
		if err != nil {
			return nil, err
		}
		info.Target = filepath.Join(out, pkgr.ConventionalFileName(info))
		f, err := os.CreateTemp(out, ".pkg-*")
		if err != nil {
			return nil, err
		}
		if err := pkgr.Package(info, f); err != nil {
			f.Close()
			os.Remove(f.Name())
			return nil, fmt.Errorf("packaging %s %s: %w", ToolsPackage, format, err)
		}
		f.Close()
		// As in BuildWith: keep an RPM that differs only by its signature's
		// time, so that a mirror or release that has it stays valid.
		if same, _ := SameButSignature(f.Name(), info.Target, opt.Signer != nil); same {
			os.Remove(f.Name())
			paths = append(paths, info.Target)
			continue
		}
		if err := os.Chmod(f.Name(), 0o644); err != nil {
			return nil, err
		}
		if err := os.Rename(f.Name(), info.Target); err != nil {
			return nil, err
		}
		paths = append(paths, info.Target)
	}
	return paths, nil
}

func toolsChangelog(tmp, format string, t Tools, maintainer, full string) (string, error) {
	e := changelogEntry{Semver: full, Date: t.Time.UTC(), Packager: maintainer}
	e.Deb.Urgency = "medium"
	e.Deb.Distributions = []string{"stable"}
	e.Changes = append(e.Changes, struct {
		Note string `yaml:"note"`
	}{Note: fmt.Sprintf("nokmem node tool from commit %.12s", t.Commit)})
	b, err := yaml.Marshal([]changelogEntry{e})
	if err != nil {
		return "", err
	}
	p := filepath.Join(tmp, "tools-changelog-"+format+".yaml")
	return p, os.WriteFile(p, b, 0o644)
}
