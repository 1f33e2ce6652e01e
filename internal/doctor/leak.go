package doctor

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"time"
)

// idLimit is the memory cgroup ID space: CSS_ID_MAX (65535) in 3.10's
// kernel/cgroup.c, MEM_CGROUP_ID_MAX (USHRT_MAX) in later kernels. A
// mkdir in the memory hierarchy fails once it is used up: ENOSPC ("no
// space left on device"), ENOMEM on later EL7 kernels.
const idLimit = 65535

// zombieLeakThreshold: this many removed cgroups still holding their
// memcg ID is a leak, not the few a container exit leaves for the moment
// it takes the kernel to destroy emptied caches.
const zombieLeakThreshold = 50

// nearlyFull is the share of the ID space at which the node is about to
// fail every new pod.
const nearlyFull = 0.9

// slabMemcgRE matches a per-memcg slab cache, "dentry(5:pod1234)": the
// root cache's name, the memcg's kmem cache index and its cgroup's base
// name (3.10 mm/memcontrol.c kmem_cache_dup: "%s(%d:%s)").
var slabMemcgRE = regexp.MustCompile(`^(.+)\((\d+):(.*)\)$`)

func (n *node) leak(ctx context.Context, e Exposure, f facts, w walk, logs []LogSource, now time.Time, loc *time.Location) Leak {
	l := Leak{IDLimit: idLimit, Logs: []LogEvidence{}, Why: []string{}}
	if pc, ok := f.procCgroups["memory"]; ok && e.MemoryController == "v1" {
		v := pc.Num
		l.ProcCgroups = &v
	}
	if f.memDir != "" {
		v := w.live
		l.LiveCgroups = &v
	}
	switch e.KmemModel {
	case modelOptIn:
		l.ProcCgroupsNote = "on these kernels the count drops when a cgroup's directory is freed (3.10 kernel/cgroup.c cgroup_free_fn), while the memcg behind it lives on as long as its slab caches hold kernel objects, keeping its ID: leaked memcgs are not in this count, so on a leaking node it understates how many of the 65535 IDs are taken"
	case modelAlways, modelOff:
		l.ProcCgroupsNote = "this kernel keeps a removed cgroup in the count until it is freed, so it counts live and dying cgroups"
		if l.ProcCgroups != nil && l.LiveCgroups != nil {
			l.ProcCgroupsNote += fmt.Sprintf(" (%d here, %d directories found)", *l.ProcCgroups, *l.LiveCgroups)
		}
	default:
		l.ProcCgroupsNote = "no v1 memory hierarchy"
	}

	switch e.KmemModel {
	case modelOptIn:
		l.ZombieMethod = n.zombies(&l, w)
	case modelNone, modelUnknown:
		l.ZombieMethod = "not applicable: no v1 memory hierarchy"
	default:
		l.ZombieMethod = "not applicable: only kernels before 4.6 name per-cgroup slab caches after their cgroup"
	}

	for _, src := range logs {
		l.Logs = append(l.Logs, scanLog(ctx, src, f.boot, now, loc))
	}

	// The verdict.
	unknown := e.MemoryController == "unknown"
	// The same message is often in several logs (the kernel's also in
	// /var/log/messages, a daemon's in the journal and in syslog): the
	// most any one log shows is what counts.
	var slub, mkdir int
	for _, ev := range l.Logs {
		slub = max(slub, ev.SlubFailures)
		mkdir = max(mkdir, ev.MkdirFailures)
	}
	if mkdir > 0 && e.MemoryController == "v1" {
		l.Why = append(l.Why, fmt.Sprintf("%d failed mkdir of a memory cgroup (no space left on device / cannot allocate memory) this boot: the memcg ID space is used up", mkdir))
	}
	if slub > 0 && e.Exposed {
		l.Why = append(l.Why, fmt.Sprintf("%d \"SLUB: Unable to allocate memory on node\" kernel messages this boot, the symptom of kmem-accounted slab caches failing", slub))
	}
	if l.Zombies != nil && *l.Zombies >= zombieLeakThreshold {
		l.Why = append(l.Why, fmt.Sprintf("at least %d removed cgroups still hold a memcg ID through their slab caches", *l.Zombies))
	}
	if taken := used(l); float64(taken) >= nearlyFull*idLimit {
		l.Why = append(l.Why, fmt.Sprintf("at least %d of the %d memcg IDs are taken", taken, idLimit))
	}
	switch {
	case len(l.Why) > 0:
		l.Verdict = "leaking"
	case unknown:
		l.Verdict = "unknown"
	default:
		l.Verdict = "no-evidence"
	}
	return l
}

// used is a lower bound of the memcg IDs taken: the live count plus the
// zombies seen.
func used(l Leak) int {
	n := 0
	switch {
	case l.ProcCgroups != nil:
		n = *l.ProcCgroups
	case l.LiveCgroups != nil:
		n = *l.LiveCgroups
	}
	if l.Zombies != nil {
		n += *l.Zombies
	}
	return n
}

// zombies counts, from the names of the per-cgroup slab caches in
// /sys/kernel/slab, the memcgs that own caches and those of them whose
// cgroup directory is gone. It is a lower bound: a leaked memcg whose
// caches were all destroyed still holds its ID and leaves no name here,
// and a cgroup name reused by a live cgroup hides the dead one.
func (n *node) zombies(l *Leak, w walk) string {
	dir := n.host("/sys/kernel/slab")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Sprintf("unavailable: %v (SLUB's sysfs; SystemTap's css_lookup count is the exact method)", err)
	}
	owners := map[int]string{}
	for _, e := range entries {
		m := slabMemcgRE.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		id, err := strconv.Atoi(m[2])
		if err != nil {
			continue
		}
		owners[id] = m[3]
	}
	ids, dead := len(owners), 0
	for _, name := range owners {
		if !w.names[name] {
			dead++
		}
	}
	l.SlabMemcgIDs, l.Zombies = &ids, &dead
	return "per-cgroup slab caches in /sys/kernel/slab named \"cache(index:cgroup)\" whose cgroup no longer exists; a lower bound (a leaked memcg whose caches are gone holds its ID unseen)"
}
