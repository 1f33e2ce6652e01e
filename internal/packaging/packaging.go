// Package packaging turns verified artifacts in dist/ into RPM (el7) and
// DEB packages with nfpm. It refuses any artifact whose SHA256SUMS does not
// match or whose verification report did not pass.
//
// runc is packaged as runc-nokmem: /usr/bin/runc-nokmem beside the runc
// that containerd.io or docker own (no file conflicts), with configuration
// snippets that point docker or containerd at it and say how to roll back.
// kubelet is packaged as a drop-in for the upstream kubelet package: same
// name, same paths, a release that sorts after upstream's ("0" / "00").
package packaging

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/template"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // register the deb packager
	_ "github.com/goreleaser/nfpm/v2/rpm" // register the rpm packager

	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/verify"
	"github.com/nokmem/nokmem/verify/target"
)

// Formats built for every artifact.
var Formats = []string{"rpm", "deb"}

// DefaultRelease sorts after upstream's "0" (rpm) and "00" (deb).
const DefaultRelease = "1.nokmem"

// Dir is where packages are written: dist/packages.
func Dir(distRoot string) string { return filepath.Join(distRoot, "packages") }

// Verified loads an artifact and refuses it unless it is intact and passed
// verification.
func Verified(distRoot, project, version string) (string, *dist.Provenance, error) {
	dir, prov, _, err := verified(distRoot, project, version)
	return dir, prov, err
}

// verified is Verified plus the verification report, whose target gate
// result says what the binary needs on a node.
func verified(distRoot, project, version string) (string, *dist.Provenance, *verify.Report, error) {
	dir := dist.Dir(distRoot, project, version)
	if _, err := dist.CheckSums(dir); err != nil {
		return "", nil, nil, fmt.Errorf("%s %s: no intact artifact in %s (build it first): %w", project, version, dir, err)
	}
	var rep verify.Report
	if err := dist.ReadJSON(dir, dist.ReportFile, &rep); err != nil || !rep.Passed {
		return "", nil, nil, fmt.Errorf("%s %s: refusing an artifact without a passing verification report (%s)", project, version, filepath.Join(dir, dist.ReportFile))
	}
	if rep.Target == nil || !rep.Target.OK {
		return "", nil, nil, fmt.Errorf("%s %s: the verification report has no passed target gate (the artifact predates it, or misses its target): rebuild it with build:%s %s", project, version, project, version)
	}
	var prov dist.Provenance
	if err := dist.ReadJSON(dir, dist.ProvenanceFile, &prov); err != nil {
		return "", nil, nil, err
	}
	if !prov.Verified.Passed {
		return "", nil, nil, fmt.Errorf("%s %s: the provenance does not record a passed verification", project, version)
	}
	return dir, &prov, &rep, nil
}

// Needs returns the package dependencies a binary's target gate result
// implies: nothing for a static binary; for a dynamic one, glibc at the
// newest symbol version it imports, and libseccomp if it links it.
func Needs(t *target.Result) (rpm, deb []string) {
	if t == nil || t.Linkage == "static" {
		return nil, nil
	}
	if v, ok := strings.CutPrefix(t.MaxGlibc, "GLIBC_"); ok {
		rpm = append(rpm, "glibc >= "+v)
		deb = append(deb, "libc6 (>= "+v+")")
	}
	if slices.Contains(t.Needed, "libseccomp.so.2") {
		rpm = append(rpm, "libseccomp")
		deb = append(deb, "libseccomp2")
	}
	return rpm, deb
}

// PackageVersion maps an upstream tag to a package version that sorts
// correctly: v1.0.0-rc9 → 1.0.0~rc9 (a tilde sorts before the release,
// in rpm ≥ 4.10 and dpkg alike), v1.13.12 → 1.13.12.
func PackageVersion(tag string) string {
	return strings.Replace(strings.TrimPrefix(tag, "v"), "-", "~", 1)
}

const configYAML = `name: {{.Name}}
arch: amd64
platform: linux
version: "{{.Version}}"
version_schema: none
release: "{{.Release}}"
mtime: "{{.MTime}}"
{{- if .Depends}}
overrides:
  rpm:
    depends:
{{- range .Depends.RPM}}
      - "{{.}}"
{{- end}}
  deb:
    depends:
{{- range .Depends.DEB}}
      - "{{.}}"
{{- end}}
{{- end}}
{{- if .PreRemove}}
scripts:
  preremove: "{{.PreRemove}}"
{{- end}}
contents:
{{- range .Files}}
  - dst: "{{.Dst}}"
{{- if .Src}}
    src: "{{.Src}}"
{{- end}}
{{- if .Packager}}
    packager: {{.Packager}}
{{- end}}
{{- if .Type}}
    type: {{.Type}}
{{- end}}
    file_info:
      mode: {{.Mode}}
{{- end}}
`

type file struct {
	Src, Dst, Packager string
	Mode               string
	// Type is nfpm's content type: "" (a file), "config|noreplace", "dir".
	Type string
}

type spec struct {
	Name, Version, Release, MTime string
	Depends                       *struct{ RPM, DEB []string }
	Files                         []file
	// PreRemove is the pre-removal script (rpm %preun, deb prerm).
	PreRemove string
}

// Build is BuildWith with only a release set: the default maintainer, no
// signature.
func Build(distRoot, project, version, release string) ([]string, error) {
	return BuildWith(distRoot, project, version, Options{Release: release})
}

// BuildWith writes one package per format for a verified artifact and
// returns their paths. An existing package file with the same name is
// replaced only if its content differs and it is not yet published (the
// mirror refuses changed bytes itself). The metadata (names, licences,
// changelog, signature) is in metadata.go.
func BuildWith(distRoot, project, version string, opt Options) ([]string, error) {
	dir, prov, rep, err := verified(distRoot, project, version)
	if err != nil {
		return nil, err
	}
	if opt.Release == "" {
		opt.Release = DefaultRelease
	}
	release := opt.Release
	tmp, err := os.MkdirTemp("", "nokmem-pkg-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	s := spec{Version: PackageVersion(version), Release: release, MTime: prov.Source.CommitDate.Format("2006-01-02T15:04:05Z")}
	doc := func(name string) []file {
		var fs []file
		for _, f := range []string{dist.ProvenanceFile, dist.ReportFile, dist.SumsFile} {
			fs = append(fs, file{Src: filepath.Join(dir, f), Dst: "/usr/share/doc/" + name + "/" + f, Mode: "0644"})
		}
		return fs
	}
	switch project {
	case "runc":
		s.Name = RuncPackageName(version)
		snippets, err := writeRuncSnippets(tmp)
		if err != nil {
			return nil, err
		}
		sum, err := dist.FileSHA256(filepath.Join(dir, "runc"))
		if err != nil {
			return nil, err
		}
		if s.PreRemove, err = writeRuncGuard(tmp, s.Name, sum); err != nil {
			return nil, err
		}
		s.Files = append([]file{{Src: filepath.Join(dir, "runc"), Dst: "/usr/bin/runc-nokmem", Mode: "0755"}}, snippets...)
		if rpm, deb := Needs(rep.Target); rpm != nil {
			s.Depends = &struct{ RPM, DEB []string }{RPM: rpm, DEB: deb}
		}
		s.Files = append(s.Files, doc(s.Name)...)
	case "kubelet":
		s.Name = "kubelet"
		rpm, deb := Needs(rep.Target)
		s.Depends = &struct{ RPM, DEB []string }{
			RPM: append([]string{"iptables >= 1.4.21", "kubernetes-cni >= 0.7.5", "socat", "util-linux", "ethtool", "iproute", "ebtables", "conntrack"}, rpm...),
			DEB: append([]string{"iptables (>= 1.4.21)", "kubernetes-cni (>= 0.7.5)", "iproute2", "socat", "util-linux", "mount", "ebtables", "ethtool", "conntrack"}, deb...),
		}
		unit := filepath.Join(tmp, "kubelet.service")
		if err := os.WriteFile(unit, []byte(kubeletUnit), 0o644); err != nil {
			return nil, err
		}
		s.Files = []file{
			{Src: filepath.Join(dir, "kubelet"), Dst: "/usr/bin/kubelet", Mode: "0755"},
			{Src: unit, Dst: "/usr/lib/systemd/system/kubelet.service", Packager: "rpm", Mode: "0644"},
			{Src: unit, Dst: "/lib/systemd/system/kubelet.service", Packager: "deb", Mode: "0644"},
		}
		var tg string
		if rep.Target != nil {
			tg = rep.Target.Target
		}
		drop, err := kubeletFiles(tmp, version, release+DistTag(tg), release)
		if err != nil {
			return nil, err
		}
		s.Files = append(s.Files, drop...)
		s.Files = append(s.Files, doc(s.Name)...)
	default:
		return nil, fmt.Errorf("packaging: unknown project %q", project)
	}
	var cfgText bytes.Buffer
	if err := template.Must(template.New("nfpm").Parse(configYAML)).Execute(&cfgText, s); err != nil {
		return nil, err
	}
	cfg, err := nfpm.Parse(&cfgText)
	if err != nil {
		return nil, fmt.Errorf("packaging: nfpm config: %w", err)
	}
	out := Dir(distRoot)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	var paths []string
	for _, format := range Formats {
		info, err := cfg.Get(format)
		if err != nil {
			return nil, err
		}
		info = nfpm.WithDefaults(info)
		m := &meta{project: project, version: version, name: s.Name, prov: prov, opt: opt, tmp: tmp}
		if rep.Target != nil {
			m.target = rep.Target.Target
		}
		if err := m.apply(info, format); err != nil {
			return nil, fmt.Errorf("packaging %s: %w", format, err)
		}
		if err := nfpm.Validate(info); err != nil {
			return nil, fmt.Errorf("packaging %s: %w", format, err)
		}
		pkgr, err := nfpm.Get(format)
		if err != nil {
			return nil, err
		}
		info.Target = filepath.Join(out, pkgr.ConventionalFileName(info))
		tmpOut, err := os.CreateTemp(out, ".pkg-*")
		if err != nil {
			return nil, err
		}
		if err := pkgr.Package(info, tmpOut); err != nil {
			tmpOut.Close()
			os.Remove(tmpOut.Name())
			return nil, fmt.Errorf("packaging %s: %w", format, err)
		}
		tmpOut.Close()
		// A signature carries its creation time, so a rebuilt RPM differs
		// from the one already there even when nothing else does; keep
		// that one, so that a mirror or release that has it stays valid.
		if same, _ := SameButSignature(tmpOut.Name(), info.Target, opt.Signer != nil); same {
			os.Remove(tmpOut.Name())
			paths = append(paths, info.Target)
			continue
		}
		if err := os.Rename(tmpOut.Name(), info.Target); err != nil {
			return nil, err
		}
		os.Chmod(info.Target, 0o644)
		paths = append(paths, info.Target)
	}
	return paths, nil
}

const kubeletUnit = `[Unit]
Description=kubelet: The Kubernetes Node Agent
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
`

func sortFiles(fs []file) {
	sort.Slice(fs, func(i, j int) bool { return fs[i].Dst < fs[j].Dst })
}
