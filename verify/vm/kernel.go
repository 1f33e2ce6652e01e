package vm

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/mod/semver"
)

// Kernel is the guest kernel: a vmlinuz (bzImage) file.
type Kernel struct {
	Path    string `json:"path"`
	Release string `json:"release,omitempty"` // from the file name vmlinuz-<release>
	// Config is the kernel's config file, when one was found beside it.
	Config string `json:"config,omitempty"`
	// Missing lists the options the config lacks (see requiredConfig); a
	// kernel without a config file is judged by the guest alone.
	Missing []string `json:"missing,omitempty"`
}

// requiredConfig are the options the guest needs built in (=y: the
// initramfs carries no modules). CONFIG_MEMCG_V1 exists from Linux 6.11
// only and is checked when the config knows it.
var requiredConfig = []string{
	"CONFIG_BLK_DEV_INITRD", "CONFIG_RD_GZIP", "CONFIG_DEVTMPFS", "CONFIG_SERIAL_8250_CONSOLE",
	"CONFIG_MEMCG", "CONFIG_MEMCG_KMEM", "CONFIG_FANOTIFY",
}

// InstallHint says how to get a fitting kernel.
const InstallHint = "install QEMU and a fitting kernel (Debian 12: apt-get install qemu-system-x86 linux-image-cloud-amd64, kernel 6.1 with cgroup v1 memory, the kmem files and fanotify built in), " +
	"or set NOKMEM_VM_KERNEL to a vmlinuz such as an EL7 /boot/vmlinuz-3.10.0-*.el7.x86_64 (docs/vm.md)"

// KernelFromPath describes the kernel at path: it must be a readable file;
// its config is looked for as config-<release> beside it, in /boot and in
// /lib/modules/<release>/config.
func KernelFromPath(path string) (Kernel, error) {
	k := Kernel{Path: path}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return k, fmt.Errorf("kernel %s is not readable by this user (Ubuntu installs kernels with mode 0600): make it readable (sudo chmod 0644 %s) or copy it and set NOKMEM_VM_KERNEL", path, path)
		}
		return k, fmt.Errorf("kernel: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return k, fmt.Errorf("kernel %s is not a regular file", path)
	}
	base := filepath.Base(path)
	if rel, ok := strings.CutPrefix(base, "vmlinuz-"); ok {
		k.Release = rel
	}
	if k.Release != "" {
		for _, c := range []string{filepath.Join(filepath.Dir(path), "config-"+k.Release), "/boot/config-" + k.Release, "/lib/modules/" + k.Release + "/config"} {
			if missing, err := missingConfig(c); err == nil {
				k.Config, k.Missing = c, missing
				break
			}
		}
	}
	return k, nil
}

// missingConfig reads a kernel config file and returns the required options
// that are not built in.
func missingConfig(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	set := map[string]string{}
	known := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if name, ok := strings.CutPrefix(line, "# "); ok && strings.HasSuffix(name, " is not set") {
			known[strings.TrimSuffix(name, " is not set")] = true
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok && strings.HasPrefix(k, "CONFIG_") {
			set[k], known[k] = v, true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var missing []string
	req := requiredConfig
	if known["CONFIG_MEMCG_V1"] {
		req = append(req[:len(req):len(req)], "CONFIG_MEMCG_V1")
	}
	for _, opt := range req {
		if set[opt] != "y" {
			state := "not set"
			if v := set[opt]; v != "" {
				state = "=" + v
			}
			missing = append(missing, opt+" ("+state+")")
		}
	}
	return missing, nil
}

// Unfit says why the config rules the kernel out ("" if it does not, or
// if there is no config to tell).
func (k Kernel) Unfit() string {
	if len(k.Missing) == 0 {
		return ""
	}
	return fmt.Sprintf("kernel %s cannot run the check: its config %s lacks %s built in", k.Path, k.Config, strings.Join(k.Missing, ", "))
}

// FindKernel returns the kernel to boot: setting (NOKMEM_VM_KERNEL) when
// it is set, otherwise the newest kernel in bootDir (/boot) that this user
// can read and whose config shows what the guest needs; a kernel without a
// config file comes after those (the guest then reports what it has).
func FindKernel(setting, bootDir string) (Kernel, error) {
	if setting != "" {
		k, err := KernelFromPath(setting)
		if err != nil {
			return k, fmt.Errorf("NOKMEM_VM_KERNEL: %w", err)
		}
		if p := k.Unfit(); p != "" {
			return k, fmt.Errorf("NOKMEM_VM_KERNEL: %s", p)
		}
		return k, nil
	}
	paths, _ := filepath.Glob(filepath.Join(bootDir, "vmlinuz-*"))
	var fit, unknown []Kernel
	var notes []string
	for _, p := range paths {
		k, err := KernelFromPath(p)
		switch {
		case err != nil:
			notes = append(notes, err.Error())
		case k.Unfit() != "":
			notes = append(notes, k.Unfit())
		case k.Config == "":
			unknown = append(unknown, k)
		default:
			fit = append(fit, k)
		}
	}
	newestFirst := func(ks []Kernel) {
		sort.SliceStable(ks, func(i, j int) bool { return releaseLess(ks[j].Release, ks[i].Release) })
	}
	newestFirst(fit)
	newestFirst(unknown)
	if all := append(fit, unknown...); len(all) > 0 {
		return all[0], nil
	}
	msg := "no kernel for the verifier's VM in " + bootDir
	if len(notes) > 0 {
		msg += " (" + strings.Join(notes, "; ") + ")"
	}
	return Kernel{}, errors.New(msg + ": " + InstallHint)
}

// releaseLess orders kernel releases (6.1.0-56-cloud-amd64,
// 3.10.0-1160.el7.x86_64) by their numeric version, then by name.
func releaseLess(a, b string) bool {
	va, vb := "v"+numericPrefix(a), "v"+numericPrefix(b)
	if c := semver.Compare(va, vb); c != 0 && semver.IsValid(va) && semver.IsValid(vb) {
		return c < 0
	}
	return a < b
}

func numericPrefix(rel string) string {
	end := len(rel)
	for i, r := range rel {
		if (r < '0' || r > '9') && r != '.' {
			end = i
			break
		}
	}
	return strings.Trim(rel[:end], ".")
}
