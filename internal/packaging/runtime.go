package packaging

// What the runc package ships to wire runc-nokmem into a node's container
// runtime (the snippets of internal/runtimecfg, a README, the RuntimeClass
// manifests) and the pre-removal guard that keeps the package from
// disappearing under a docker or containerd that still runs containers
// with it.

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/nokmem/nokmem/internal/runtimecfg"
)

// RuntimeDocDir holds the runtime snippets; one for every runc line, as
// the lines replace each other.
const RuntimeDocDir = "/usr/share/runc-nokmem"

const runtimeReadme = `runc-nokmem: switching a node to it, and back
=============================================

/usr/bin/runc-nokmem is runc built without kernel-memory accounting. It does
not replace the distribution's /usr/bin/runc: docker or containerd use it
once they are told to. The nokmem command (package nokmem-tools) tells them,
keeping every other setting and a backup of the file it changes.

Check it first:
  nokmem verify runc /usr/bin/runc-nokmem

containerd (Kubernetes CRI)
  Add the runtime handler "nokmem" to /etc/containerd/config.toml, then
  restart containerd (running containers keep running):
    nokmem runtime containerd [--default] [--systemd-cgroup auto|true|false]
    systemctl restart containerd
  Without --default, pods opt in through a RuntimeClass, node by node:
    kubectl label node NODE nokmem/runtime=true
    kubectl apply -f /usr/share/runc-nokmem/runtimeclass-nokmem.yaml
  and spec.runtimeClassName: nokmem in the pods (runtimeclass-nokmem.yaml is
  for Kubernetes 1.20+, runtimeclass-nokmem-v1beta1.yaml for 1.14 ... 1.24,
  runtimeclass-nokmem-v1alpha1.yaml for 1.12 and 1.13).
  With --default, every pod without a RuntimeClass runs under runc-nokmem.
  A pod keeps the runtime it was started with: recreate the pods (drain the
  node). containerd-nokmem.toml shows what is merged; do not put it in a
  directory that config.toml imports: containerd 1.x then replaces the whole
  CRI table of config.toml with it, and every pod fails.
  SystemdCgroup must match kubelet's --cgroup-driver; auto copies the runc
  runtime's. Static runc rc2 ... rc9 builds have no systemd cgroup driver.

docker
  Register the runtime "nokmem" (containers opt in), or make it the default:
    nokmem runtime docker [--default]
    systemctl reload docker          (dockerd rereads runtimes on SIGHUP)
  Opt in:  docker run --runtime nokmem ...
  A container keeps the runtime it was created with, also after the default
  changes: recreate it. Check with
    docker inspect --format '{{.HostConfig.Runtime}}' CONTAINER
  kubelet with docker (dockershim) knows no RuntimeClass: use --default.
  docker-daemon.json and docker-daemon-default.json show what is merged.

Roll back
  nokmem runtime containerd --remove && systemctl restart containerd
  nokmem runtime docker --remove && systemctl reload docker
  Then recreate what runs with the nokmem runtime: docker refuses to start a
  container created with it once it is gone ("Unknown runtime specified
  nokmem"). Only then remove the package: while docker or containerd still
  name /usr/bin/runc-nokmem, its removal is refused with these commands.

Memory cgroups made before the switch keep kernel-memory accounting until
they are recreated; a reboot clears what already leaked.
`

// runtimeFiles are the files of RuntimeDocDir, by name.
var runtimeFiles = map[string]string{
	"README":                            runtimeReadme,
	"containerd-nokmem.toml":            runtimecfg.ContainerdSnippet,
	"docker-daemon.json":                runtimecfg.DockerSnippet,
	"docker-daemon-default.json":        runtimecfg.DockerDefaultSnippet,
	"runtimeclass-nokmem.yaml":          runtimecfg.RuntimeClass,
	"runtimeclass-nokmem-v1beta1.yaml":  runtimecfg.RuntimeClassV1beta1,
	"runtimeclass-nokmem-v1alpha1.yaml": runtimecfg.RuntimeClassV1alpha1,
}

func writeRuncSnippets(tmp string) ([]file, error) {
	var fs []file
	for name, content := range runtimeFiles {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return nil, err
		}
		fs = append(fs, file{Src: p, Dst: RuntimeDocDir + "/" + name, Mode: "0644"})
	}
	sortFiles(fs)
	return fs, nil
}

// runcGuard is the runc package's pre-removal script (rpm %preun, deb
// prerm), POSIX sh with shell builtins only (sha256sum where present). It
// refuses to remove the package while docker or containerd configuration
// names the binary: every container started after that would fail with
// "fork/exec /usr/bin/runc-nokmem: no such file or directory". An upgrade,
// or another runc line taking over the path, passes. NOKMEM_FORCE_REMOVE=1
// removes it anyway.
const runcGuard = `#!/bin/sh
# @NAME@: refuse to remove /usr/bin/runc-nokmem while docker or containerd
# are configured to run containers with it.
# rpm %preun: $1 = packages of this name left (0: erase, 1: upgrade).
# dpkg prerm: remove | upgrade | deconfigure | failed-upgrade.
set -e
case "$1" in
0) ;;
remove)
    # dpkg removes it in favour of another runc line (Conflicts/Replaces),
    # which installs its own /usr/bin/runc-nokmem.
    [ "$2" = in-favour ] && exit 0 ;;
*) exit 0 ;;
esac
[ "${NOKMEM_FORCE_REMOVE:-}" = 1 ] && exit 0
bin=/usr/bin/runc-nokmem
# yum swap to another runc line: its binary has replaced ours already.
if [ -f "$bin" ] && command -v sha256sum >/dev/null 2>&1; then
    set -- $(sha256sum "$bin")
    [ "$1" = "@SHA256@" ] || exit 0
fi
found=""
names() {
    [ -f "$1" ] || return 1
    while IFS= read -r line || [ -n "$line" ]; do
        case "${line#"${line%%[![:space:]]*}"}" in
        "#"*) ;;
        *"$bin"*) return 0 ;;
        esac
    done < "$1"
    return 1
}
for f in /etc/docker/daemon.json /etc/containerd/config.toml /etc/containerd/conf.d/*.toml; do
    names "$f" && found="$found $f"
done
[ -z "$found" ] && exit 0
{
    echo "@NAME@ is NOT removed: $bin is still configured in"
    for f in $found; do echo "    $f"; done
    echo "Containers started without it would fail with"
    echo "    fork/exec $bin: no such file or directory"
    echo "Switch back first (nokmem is in the nokmem-tools package; it keeps a backup):"
    for f in $found; do
        case "$f" in
        /etc/docker/daemon.json) echo "    nokmem runtime docker --remove && systemctl reload docker" ;;
        /etc/containerd/config.toml) echo "    nokmem runtime containerd --remove && systemctl restart containerd" ;;
        *) echo "    rm $f && systemctl restart containerd" ;;
        esac
    done
    echo "then recreate the containers and pods created with the nokmem runtime,"
    echo "and remove the package again. To remove it anyway:"
    echo "    NOKMEM_FORCE_REMOVE=1 yum remove @NAME@    (or apt-get remove)"
    echo "To move to another runc-nokmem line instead: yum swap @NAME@ runc-nokmem-LINE,"
    echo "or NOKMEM_FORCE_REMOVE=1 apt-get install runc-nokmem-LINE."
} >&2
exit 1
`

// writeRuncGuard writes the guard for the package name whose binary has
// sha256 sum.
func writeRuncGuard(tmp, name, sum string) (string, error) {
	p := filepath.Join(tmp, "runc-guard.sh")
	script := strings.NewReplacer("@NAME@", name, "@SHA256@", sum).Replace(runcGuard)
	return p, os.WriteFile(p, []byte(script), 0o755)
}
