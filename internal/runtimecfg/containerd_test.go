package runtimecfg

import (
	"reflect"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

// userV2 is a config.toml as operators write it: a sandbox image of their
// own, registry mirrors, the runc runtime on the systemd driver, comments.
const userV2 = `# our fleet's containerd
version = 2
root = "/var/lib/containerd"
oom_score = -999

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.example.com/pause:3.1"
  max_concurrent_downloads = 3
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = true
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
    endpoint = ["https://mirror.example.com", "https://registry-1.docker.io"]
`

// userV1 is a version 1 config (containerd 1.2 era): no version line,
// plugins named by ID.
const userV1 = `[plugins.cri]
  sandbox_image = "registry.example.com/pause:3.1"
  systemd_cgroup = false
  [plugins.cri.containerd]
    default_runtime_name = "runc"
    [plugins.cri.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins.cri.registry.mirrors."docker.io"]
    endpoint = ["https://mirror.example.com"]
`

func parse(t *testing.T, b []byte) map[string]any {
	t.Helper()
	m := map[string]any{}
	if err := toml.Unmarshal(b, &m); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	return m
}

func dig(m map[string]any, keys ...string) any {
	var v any = m
	for _, k := range keys {
		t, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = t[k]
	}
	return v
}

func merge(t *testing.T, kind Kind, in string, opt Options) *Result {
	t.Helper()
	r, err := Merge(kind, []byte(in), opt)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Everything but the nokmem runtime is what the user wrote, value for value.
func TestContainerdMergeKeepsEverythingElse(t *testing.T) {
	for _, tc := range []struct {
		name, in, cri string
		systemd       bool
	}{
		{"version 2", userV2, "io.containerd.grpc.v1.cri", true},
		{"version 1", userV1, "cri", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := merge(t, Containerd, tc.in, Options{})
			if !r.Changed {
				t.Fatal("nothing changed")
			}
			got := parse(t, r.Config)
			rt := dig(got, "plugins", tc.cri, "containerd", "runtimes", "nokmem")
			want := map[string]any{"runtime_type": RuncV2, "options": map[string]any{"BinaryName": "/usr/bin/runc-nokmem", "SystemdCgroup": tc.systemd}}
			if !reflect.DeepEqual(rt, want) {
				t.Errorf("runtimes.nokmem = %v, want %v", rt, want)
			}
			delete(dig(got, "plugins", tc.cri, "containerd", "runtimes").(map[string]any), "nokmem")
			if orig := parse(t, []byte(tc.in)); !reflect.DeepEqual(got, orig) {
				t.Errorf("other settings changed:\n got %v\nwant %v", got, orig)
			}
			if again := merge(t, Containerd, string(r.Config), Options{}); again.Changed {
				t.Errorf("a second merge changed the file again:\n%s", again.Config)
			}
			if !strings.Contains(strings.Join(r.Notes, "\n"), "SystemdCgroup = "+map[bool]string{true: "true", false: "false"}[tc.systemd]) {
				t.Errorf("notes do not say which cgroup driver: %v", r.Notes)
			}
		})
	}
}

// --default makes pods without a RuntimeClass use runc-nokmem; --remove
// takes the runtime out and the default back to runc.
func TestContainerdDefaultAndRemove(t *testing.T) {
	r := merge(t, Containerd, userV2, Options{Default: true})
	criPath := []string{"plugins", "io.containerd.grpc.v1.cri", "containerd"}
	if got := dig(parse(t, r.Config), append(criPath, "default_runtime_name")...); got != "nokmem" {
		t.Fatalf("default_runtime_name = %v", got)
	}
	// Re-running with --default keeps the driver copied from runc, not from
	// nokmem itself.
	again := merge(t, Containerd, string(r.Config), Options{Default: true})
	if again.Changed {
		t.Errorf("second --default changed:\n%s", again.Config)
	}
	back := merge(t, Containerd, string(r.Config), Options{Remove: true})
	got := parse(t, back.Config)
	if dig(got, append(criPath, "runtimes", "nokmem")...) != nil || dig(got, append(criPath, "default_runtime_name")...) != "runc" {
		t.Fatalf("remove left:\n%s", back.Config)
	}
	if again := merge(t, Containerd, string(back.Config), Options{Remove: true}); again.Changed {
		t.Error("a second remove changed the file")
	}
}

func TestContainerdSystemdCgroupSetting(t *testing.T) {
	for _, tc := range []struct {
		in, setting string
		want        bool
	}{
		{userV2, "false", false},
		{userV1, "true", true},
		{userV2, "auto", true},
		// version 1's legacy systemd_cgroup of the CRI plugin.
		{"[plugins.cri]\n  systemd_cgroup = true\n", "", true},
	} {
		r := merge(t, Containerd, tc.in, Options{SystemdCgroup: tc.setting})
		m := parse(t, r.Config)
		key := "io.containerd.grpc.v1.cri"
		if dig(m, "version") == nil {
			key = "cri"
		}
		if got := dig(m, "plugins", key, "containerd", "runtimes", "nokmem", "options", "SystemdCgroup"); got != tc.want {
			t.Errorf("%q with %q: SystemdCgroup = %v, want %v", tc.in[:20], tc.setting, got, tc.want)
		}
	}
}

func TestContainerdRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		opt      Options
		want     string
	}{
		{"cri disabled", "version = 2\ndisabled_plugins = [\"cri\"]\n", Options{}, "CRI plugin disabled"},
		{"version 3", "version = 3\n", Options{}, "version 3"},
		{"not toml", "version = = 2", Options{}, "not valid TOML"},
		{"runtimes is a string", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\nruntimes = \"x\"\n", Options{}, "runtimes is string"},
		{"deprecated default_runtime", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.default_runtime]\nruntime_type = \"io.containerd.runtime.v1.linux\"\n", Options{Default: true}, "default_runtime (deprecated)"},
		{"relative binary", userV2, Options{Binary: "runc-nokmem"}, "absolute path"},
		{"remove and default", userV2, Options{Remove: true, Default: true}, "exclude"},
		{"bad systemd", userV2, Options{SystemdCgroup: "yes"}, "want auto, true or false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Merge(Containerd, []byte(tc.in), tc.opt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// The shipped snippet holds exactly the runtime the merge writes. A config
// that relied on containerd's built-in runc runtime gets it written out:
// the runtimes table of the file replaces the built-in one.
func TestContainerdSnippetIsWhatMergeWrites(t *testing.T) {
	snippet := parse(t, []byte(ContainerdSnippet))
	r := merge(t, Containerd, "version = 2\n", Options{})
	got := parse(t, r.Config)
	runtimes := []string{"plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes"}
	if !reflect.DeepEqual(dig(got, append(runtimes, "runc")...), map[string]any{"runtime_type": RuncV2}) {
		t.Errorf("the built-in runc runtime was not written out:\n%s", r.Config)
	}
	delete(dig(got, runtimes...).(map[string]any), "runc")
	if !reflect.DeepEqual(got, snippet) {
		t.Errorf("merge into an empty version 2 config:\n%v\nsnippet:\n%v", got, snippet)
	}
	// Not when the file has its own runtimes, or another default.
	for _, in := range []string{userV2, "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  default_runtime_name = \"crun\"\n  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.crun]\n    runtime_type = \"io.containerd.runc.v2\"\n"} {
		before := parse(t, []byte(in))
		after := parse(t, merge(t, Containerd, in, Options{}).Config)
		if dig(before, append(runtimes, "runc")...) == nil && dig(after, append(runtimes, "runc")...) != nil {
			t.Errorf("runc was added to a file with runtimes of its own:\n%s", in)
		}
	}
	if !strings.Contains(ContainerdSnippet, "# [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n#   default_runtime_name = \"nokmem\"") {
		t.Error("the snippet lost its default_runtime_name example")
	}
}
