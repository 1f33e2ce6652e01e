package doctor

import (
	"fmt"
	"sort"
	"strings"

	"github.com/nokmem/nokmem/verify"
)

// Binary roles.
const (
	roleDockerDefault     = "docker-default"
	roleDockerRuntime     = "docker-runtime"
	roleContainerdDefault = "containerd-default"
	roleContainerdRuntime = "containerd-runtime"
	roleKubelet           = "kubelet"
	roleRuncOnPath        = "runc-on-path"
	roleRuncNokmem        = "runc-nokmem"
)

// installedRuncs are looked at whatever the configuration says: the runc
// packages' paths and the runc-nokmem package's.
var installedRuncs = map[string]string{
	"/usr/bin/runc":        roleRuncOnPath,
	"/usr/sbin/runc":       roleRuncOnPath,
	"/usr/local/bin/runc":  roleRuncOnPath,
	"/usr/local/sbin/runc": roleRuncOnPath,
	"/usr/bin/runc-nokmem": roleRuncNokmem,
}

// binaries gathers every runc and kubelet the configuration points at and
// runs the static verifier once on each file.
func (n *node) binaries(f *Fix, static func(string) (*verify.StaticResult, error)) {
	byPath := map[string]*Binary{}
	hostOf := map[string]string{}
	var order []string
	add := func(bin, role string, inUse bool, driver string) {
		np, hp, ok := n.which(bin)
		key := np
		if !ok {
			if !inUse {
				return // only what will run is worth a "missing"
			}
			key = bin
		}
		b := byPath[key]
		if b == nil {
			b = &Binary{Path: key, Reasons: []string{}}
			if !ok {
				b.Verdict = "missing"
				b.Reasons = append(b.Reasons, fmt.Sprintf("%s is configured but not found on the node", bin))
			}
			byPath[key] = b
			hostOf[key] = hp
			order = append(order, key)
		}
		if !contains(b.Roles, role) {
			b.Roles = append(b.Roles, role)
		}
		if inUse {
			b.InUse = true
			// The driver that matters is the one of an in-use role; a
			// cgroupfs one wins, since that is where kmem gets turned on.
			if b.CgroupDriver == "" || driver == driverCgroupfs {
				b.CgroupDriver = driver
			}
		}
	}
	for _, d := range f.Docker {
		for _, r := range d.Runtimes {
			role := roleDockerRuntime
			if r.Default {
				role = roleDockerDefault
			}
			add(r.Binary, role, r.Default, r.CgroupDriver)
		}
	}
	for _, d := range f.Containerd {
		if !d.CRI {
			continue
		}
		for _, r := range d.Runtimes {
			role := roleContainerdRuntime
			if r.Default {
				role = roleContainerdDefault
			}
			add(r.Binary, role, r.Default, r.CgroupDriver)
		}
	}
	if k := f.Kubelet; k != nil {
		add(k.Binary, roleKubelet, true, k.CgroupDriver)
	}
	paths := make([]string, 0, len(installedRuncs))
	for p := range installedRuncs {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		add(p, installedRuncs[p], false, "")
	}

	for _, key := range order {
		b := byPath[key]
		if b.Verdict == "" {
			res, err := static(hostOf[key])
			if err != nil {
				b.Verdict = "error"
				b.Reasons = append(b.Reasons, err.Error())
			} else {
				b.Verdict = string(res.Verdict)
				b.GoVersion, b.Tags = res.GoVersion, res.Tags
				b.Reasons = append(b.Reasons, res.Reasons...)
			}
		}
		b.Risk = b.InUse && b.Verdict == string(verify.KmemEnabled) && b.CgroupDriver != driverSystemd
		f.Binaries = append(f.Binaries, *b)
	}
}

// judgeFix decides whether the fix is in place from the binaries.
func judgeFix(f *Fix, exposed bool) {
	var inUse, risky, unknown int
	if k := f.Kubelet; k != nil && k.Replaced {
		// What runs is the old file: the verdict on Path says nothing
		// about it until a restart.
		unknown++
		f.Why = append(f.Why, fmt.Sprintf("the running kubelet (pid %d) was started from a file since replaced: restart it to run %s", k.PID, k.Path))
	}
	for _, b := range f.Binaries {
		if !b.InUse {
			if b.Verdict == string(verify.KmemEnabled) {
				f.Why = append(f.Why, fmt.Sprintf("%s (%s) is kmem-enabled but not any daemon's default: only containers that ask for it use it", b.Path, strings.Join(b.Roles, ", ")))
			}
			continue
		}
		inUse++
		switch {
		case b.Risk:
			risky++
			f.Why = append(f.Why, fmt.Sprintf("%s (%s, %s driver) is kmem-enabled: it turns kmem accounting on in every memory cgroup it creates", b.Path, strings.Join(b.Roles, ", "), b.CgroupDriver))
		case b.CgroupDriver == driverSystemd:
			f.Why = append(f.Why, fmt.Sprintf("%s (%s) is %s and runs with the systemd driver, which turns kmem on only for an explicit kernel-memory limit", b.Path, strings.Join(b.Roles, ", "), b.Verdict))
		case b.Verdict == string(verify.NoKmem) || b.Verdict == string(verify.NoKmemCode):
			f.Why = append(f.Why, fmt.Sprintf("%s (%s, %s driver) is %s", b.Path, strings.Join(b.Roles, ", "), b.CgroupDriver, b.Verdict))
		default:
			unknown++
			f.Why = append(f.Why, fmt.Sprintf("%s (%s, %s driver): %s, the static verifier cannot tell", b.Path, strings.Join(b.Roles, ", "), b.CgroupDriver, b.Verdict))
		}
	}
	switch {
	case !exposed:
		f.InPlace = "not-needed"
	case risky > 0:
		f.InPlace = "no"
	case inUse == 0:
		f.InPlace = "unknown"
		f.Why = append(f.Why, "no container runtime or kubelet was found that will create memory cgroups")
	case unknown > 0:
		f.InPlace = "unknown"
	default:
		f.InPlace = "yes"
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
