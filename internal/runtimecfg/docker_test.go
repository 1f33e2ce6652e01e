package runtimecfg

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

const userDaemon = `{
  "log-driver": "json-file",
  "log-opts": {"max-size": "100m", "max-file": "3"},
  "storage-driver": "overlay2",
  "registry-mirrors": ["https://mirror.example.com"],
  "insecure-registries": ["registry.local:5000"],
  "runtimes": {"custom": {"path": "/opt/custom/runc", "runtimeArgs": ["--debug"]}},
  "labels": ["rack=a<b&c"],
  "max-concurrent-downloads": 3
}`

func decodeJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	return m
}

func TestDockerMergeKeepsEveryOtherKey(t *testing.T) {
	r := merge(t, Docker, userDaemon, Options{})
	got := decodeJSON(t, r.Config)
	if p := dig(got, "runtimes", "nokmem", "path"); p != "/usr/bin/runc-nokmem" {
		t.Fatalf("runtimes.nokmem.path = %v\n%s", p, r.Config)
	}
	if _, ok := got["default-runtime"]; ok {
		t.Error("registering made it the default")
	}
	delete(got["runtimes"].(map[string]any), "nokmem")
	if want := decodeJSON(t, []byte(userDaemon)); !reflect.DeepEqual(got, want) {
		t.Errorf("other keys changed:\n got %v\nwant %v", got, want)
	}
	if strings.Contains(string(r.Config), `\u003c`) {
		t.Errorf("values were re-escaped:\n%s", r.Config)
	}
	if again := merge(t, Docker, string(r.Config), Options{}); again.Changed {
		t.Errorf("second merge changed:\n%s", again.Config)
	}
}

func TestDockerDefaultAndRemove(t *testing.T) {
	r := merge(t, Docker, "", Options{Default: true})
	if got := decodeJSON(t, r.Config); got["default-runtime"] != "nokmem" || dig(got, "runtimes", "nokmem", "path") != DefaultBinary {
		t.Fatalf("from nothing with --default:\n%s", r.Config)
	}
	if want := decodeJSON(t, []byte(DockerDefaultSnippet)); !reflect.DeepEqual(decodeJSON(t, r.Config), want) {
		t.Errorf("DockerDefaultSnippet differs from what the merge writes:\n%s", r.Config)
	}
	if want := decodeJSON(t, []byte(DockerSnippet)); !reflect.DeepEqual(decodeJSON(t, merge(t, Docker, "{}", Options{}).Config), want) {
		t.Error("DockerSnippet differs from what the merge writes")
	}
	// Explicit values, so that a reload (SIGHUP) applies them.
	back := merge(t, Docker, string(r.Config), Options{Remove: true})
	if got := decodeJSON(t, back.Config); !reflect.DeepEqual(got, map[string]any{"default-runtime": "runc", "runtimes": map[string]any{}}) {
		t.Errorf("remove left %v", got)
	}
	if !strings.Contains(strings.Join(back.Notes, "\n"), "must be recreated") {
		t.Errorf("remove does not warn about containers created with nokmem: %v", back.Notes)
	}
	// Removing keeps the other runtimes.
	kept := merge(t, Docker, string(merge(t, Docker, userDaemon, Options{}).Config), Options{Remove: true})
	if want := decodeJSON(t, []byte(userDaemon)); !reflect.DeepEqual(decodeJSON(t, kept.Config), want) {
		t.Errorf("remove changed other keys:\n%s", kept.Config)
	}
}

func TestDockerRefusals(t *testing.T) {
	for in, want := range map[string]string{
		`[1]`:                           "not a JSON object",
		`{"runtimes": []}`:              `"runtimes" is not an object`,
		`{"default-runtime": 1}`:        `"default-runtime" is not a string`,
		`{"runtimes": {"nokmem": "x"}}`: "is not an object",
	} {
		if _, err := Merge(Docker, []byte(in), Options{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", in, err, want)
		}
	}
}

func TestDockerSystemdDriverNote(t *testing.T) {
	r := merge(t, Docker, `{"exec-opts": ["native.cgroupdriver=systemd"]}`, Options{})
	if !strings.Contains(strings.Join(r.Notes, "\n"), "--systemd-cgroup") {
		t.Errorf("no note about the systemd driver: %v", r.Notes)
	}
}
