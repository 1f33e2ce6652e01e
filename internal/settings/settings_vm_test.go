package settings

import (
	"strings"
	"testing"
	"time"
)

func TestVMSettings(t *testing.T) {
	e, err := Read(env(map[string]string{"NOKMEM_CACHE": "/c", "NOKMEM_VERIFY_RUNTIME": "vm", "NOKMEM_VM_KERNEL": "/k/vmlinuz-3.10.0-1160.el7.x86_64", "NOKMEM_VM_TIMEOUT": "90s"}))
	if err != nil {
		t.Fatal(err)
	}
	if !e.UseVM() || e.VMKernel != "/k/vmlinuz-3.10.0-1160.el7.x86_64" || e.VMTimeout != 90*time.Second {
		t.Errorf("%+v", e)
	}
	v := e.VM("/src")
	if v.Root != "/src" || v.Kernel != e.VMKernel || v.Timeout != e.VMTimeout || v.CacheDir != "/c/vm" {
		t.Errorf("VM verifier %+v", v)
	}
	if off, err := Read(env(map[string]string{"NOKMEM_CACHE": "/c", "NOKMEM_VM_SNAPSHOT": "0"})); err != nil || off.VM("/src").CacheDir != "" {
		t.Errorf("NOKMEM_VM_SNAPSHOT=0 keeps snapshots: %v", err)
	}
	if h, err := Read(env(map[string]string{"NOKMEM_CACHE": "/c", "NOKMEM_VERIFY_RUNTIME": "host"})); err != nil || h.UseVM() {
		t.Errorf("host runtime uses the VM: %v", err)
	}
	_, err = Read(env(map[string]string{"NOKMEM_CACHE": "/c", "NOKMEM_VERIFY_RUNTIME": "qemu", "NOKMEM_VM_TIMEOUT": "-1s", "NOKMEM_VM_SNAPSHOT": "yes"}))
	for _, want := range []string{`NOKMEM_VERIFY_RUNTIME="qemu": want auto, host, docker or vm`, `NOKMEM_VM_TIMEOUT="-1s"`, `NOKMEM_VM_SNAPSHOT="yes": want 0 or 1`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %s: %v", want, err)
		}
	}
}
