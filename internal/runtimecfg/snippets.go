package runtimecfg

// The texts the runc-nokmem package ships in /usr/share/runc-nokmem/. Tests
// hold them to what Merge writes and to the Kubernetes API types.

// ContainerdSnippet documents the containerd runtime (config version 2).
const ContainerdSnippet = `# containerd 1.x (config version 2): the runtime handler "nokmem", runc-nokmem
# under containerd's runc shim. MERGE it into /etc/containerd/config.toml:
#
#   nokmem runtime containerd                # register the handler
#   nokmem runtime containerd --default      # … and make it every pod's default
#   systemctl restart containerd             # running containers keep running
#
# (nokmem is in the nokmem-tools package; it keeps every other setting and a
# backup of the previous file.) Do NOT copy this file into a directory that
# config.toml imports: containerd 1.x then replaces the whole CRI table of
# config.toml with this one (sandbox_image, registry mirrors and the runc
# runtime are gone) and every pod fails.
#
# In a version 1 config (no "version" line) the table is plugins.cri instead
# of plugins."io.containerd.grpc.v1.cri".
version = 2

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nokmem]
  runtime_type = "io.containerd.runc.v2"

  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nokmem.options]
    BinaryName = "/usr/bin/runc-nokmem"
    # The cgroup driver: false for cgroupfs, true for systemd. It must match
    # kubelet's --cgroup-driver (and the runc runtime's SystemdCgroup).
    SystemdCgroup = false

# Optional: every pod without a RuntimeClass runs under runc-nokmem.
# [plugins."io.containerd.grpc.v1.cri".containerd]
#   default_runtime_name = "nokmem"
`

// DockerSnippet registers the runtime with dockerd without making it the
// default: containers opt in with docker run --runtime nokmem.
const DockerSnippet = `{
  "runtimes": {
    "nokmem": {
      "path": "/usr/bin/runc-nokmem"
    }
  }
}
`

// DockerDefaultSnippet registers the runtime and makes it the default for
// containers created from then on.
const DockerDefaultSnippet = `{
  "default-runtime": "nokmem",
  "runtimes": {
    "nokmem": {
      "path": "/usr/bin/runc-nokmem"
    }
  }
}
`

// NodeLabel marks nodes whose runtime has the nokmem handler; the
// RuntimeClass schedules its pods onto them only.
const NodeLabel = "nokmem/runtime"

// RuntimeClass is the manifest for Kubernetes 1.20 and later.
const RuntimeClass = `# Kubernetes 1.20+ (node.k8s.io/v1). Pods with spec.runtimeClassName: nokmem
# run under containerd's "nokmem" runtime handler (runc-nokmem) and are only
# scheduled onto nodes labelled nokmem/runtime=true, the nodes whose
# containerd has the handler (nokmem runtime containerd):
#   kubectl label node NODE nokmem/runtime=true
#   kubectl apply -f runtimeclass-nokmem.yaml
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata:
  name: nokmem
handler: nokmem
scheduling:
  nodeSelector:
    nokmem/runtime: "true"
`

// RuntimeClassV1beta1 is the manifest for Kubernetes 1.14 … 1.24.
const RuntimeClassV1beta1 = `# Kubernetes 1.14 … 1.24 (node.k8s.io/v1beta1; scheduling needs 1.16+, drop
# it before). Pods with spec.runtimeClassName: nokmem run under containerd's
# "nokmem" runtime handler (runc-nokmem) on nodes labelled nokmem/runtime=true.
apiVersion: node.k8s.io/v1beta1
kind: RuntimeClass
metadata:
  name: nokmem
handler: nokmem
scheduling:
  nodeSelector:
    nokmem/runtime: "true"
`

// RuntimeClassV1alpha1 is the manifest for Kubernetes 1.12 and 1.13, where
// RuntimeClass is an alpha CRD behind a feature gate.
const RuntimeClassV1alpha1 = `# Kubernetes 1.12 and 1.13 (node.k8s.io/v1alpha1): needs the RuntimeClass=true
# feature gate on the API server and every kubelet, and the RuntimeClass CRD
# (cluster/addons/runtimeclass/runtimeclass_crd.yaml of the release). This
# version has no scheduling: give the pods a nodeSelector nokmem/runtime: "true"
# themselves. Pods with spec.runtimeClassName: nokmem run under containerd's
# "nokmem" runtime handler (runc-nokmem). dockershim (kubelet with docker)
# knows no handlers: on docker nodes make nokmem docker's default-runtime.
apiVersion: node.k8s.io/v1alpha1
kind: RuntimeClass
metadata:
  name: nokmem
spec:
  runtimeHandler: nokmem
`
