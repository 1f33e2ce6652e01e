package doctor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// unlimited: a kmem limit at or above this reads as "no limit" (3.10's
// RESOURCE_MAX is 2^63-1, later kernels' PAGE_COUNTER_MAX pages are
// 9223372036854771712 bytes).
const unlimited = 1 << 62

// topN is how many active cgroups the report lists.
const topN = 10

// defaultMaxCgroups bounds the walk; the ID space has 65535.
const defaultMaxCgroups = 200000

// walk is the kmem step's result beyond the report section.
type walk struct {
	kmem Kmem
	// names are the base names of every cgroup directory found, for
	// matching slab caches to live cgroups.
	names map[string]bool
	live  int
}

// trust says, per model, which signal decides and what it cannot show.
var trust = map[string]string{
	modelOptIn: "memory.kmem.slabinfo decides: on these kernels it fails with EIO until kmem accounting is on in that cgroup and is readable after (3.10 mm/memcontrol.c mem_cgroup_slabinfo_read returns -EIO unless memcg_can_account_kmem); " +
		"kmem usage, max_usage or failcnt above 0 also prove it on, but 0 does not prove it off; limit_in_bytes cannot tell, because runc's 1 then -1 reads back as unlimited. " +
		"Without slabinfo (no CONFIG_SLABINFO) a cgroup that never charged kernel memory is undetermined. The root cgroup is never accounted.",
	modelAlways: "this kernel accounts kernel memory in every memory cgroup by itself, so every cgroup counts as active; slabinfo is readable everywhere (empty since 5.9's per-object accounting, measured on 6.18) and usage counts real kernel memory. " +
		"No signal shows whether a runtime wrote memory.kmem.limit_in_bytes: on recent kernels the write is accepted with no effect (measured on 6.18), and the kernel logs one deprecation notice per boot.",
	modelOff: "cgroup.memory=nokmem: every cgroup must fail memory.kmem.slabinfo with EIO and charge nothing; one that does not proves the kernel ignores the parameter.",
}

func (n *node) walkKmem(ctx context.Context, memDir, model string, max int) walk {
	w := walk{names: map[string]bool{}, kmem: Kmem{Trust: trust[model]}}
	if memDir == "" {
		w.kmem.Trust = "no v1 memory hierarchy to walk"
		return w
	}
	if max <= 0 {
		max = defaultMaxCgroups
	}
	subtrees := map[string]*Subtree{}
	var active []CgroupKmem
	err := filepath.WalkDir(memDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == memDir {
				return err
			}
			// A cgroup removed while we walk: not a problem.
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			n.problem("walk %s: %v", p, err)
			return nil
		}
		if !d.IsDir() {
			return nil
		}
		if w.kmem.Walked >= max {
			w.kmem.Truncated = true
			return fs.SkipAll
		}
		if w.kmem.Walked%256 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		rel, _ := filepath.Rel(memDir, p)
		rel = "/" + filepath.ToSlash(rel)
		if rel == "/." {
			rel = "/"
		}
		w.kmem.Walked++
		w.names[d.Name()] = true
		c := n.inspectCgroup(p, rel)
		isRoot := rel == "/"
		classify(&c, model, isRoot)
		countSignals(&w.kmem.Signals, c)
		name := "(root)"
		if !isRoot {
			name = strings.SplitN(strings.TrimPrefix(rel, "/"), "/", 2)[0]
		}
		st := subtrees[name]
		if st == nil {
			st = &Subtree{Name: name}
			subtrees[name] = st
		}
		st.Walked++
		switch c.State {
		case "active":
			w.kmem.Active++
			st.Active++
			active = append(active, c)
		case "inactive":
			w.kmem.Inactive++
		case "undetermined":
			w.kmem.Undetermined++
		}
		return nil
	})
	if err != nil {
		n.problem("walk the memory hierarchy %s: %v", memDir, err)
	}
	w.live = w.kmem.Walked
	for _, st := range subtrees {
		w.kmem.BySubtree = append(w.kmem.BySubtree, *st)
	}
	sort.Slice(w.kmem.BySubtree, func(i, j int) bool {
		a, b := w.kmem.BySubtree[i], w.kmem.BySubtree[j]
		if a.Active != b.Active {
			return a.Active > b.Active
		}
		if a.Walked != b.Walked {
			return a.Walked > b.Walked
		}
		return a.Name < b.Name
	})
	sort.SliceStable(active, func(i, j int) bool {
		a, b := active[i], active[j]
		if ua, ub := val(a.Usage), val(b.Usage); ua != ub {
			return ua > ub
		}
		if a.SlabCaches != b.SlabCaches {
			return a.SlabCaches > b.SlabCaches
		}
		return a.Path < b.Path
	})
	if len(active) > topN {
		active = active[:topN]
	}
	w.kmem.Top = active
	return w
}

func val(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}

// inspectCgroup reads one cgroup's kmem files; a missing file is recorded
// as missing, never as 0.
func (n *node) inspectCgroup(dir, rel string) CgroupKmem {
	c := CgroupKmem{Path: rel}
	b, err := n.readFile(filepath.Join(dir, "memory.kmem.slabinfo"))
	switch {
	case err == nil:
		c.Slabinfo = "readable"
		c.SlabCaches = countSlabCaches(b)
	case errors.Is(err, syscall.EIO):
		c.Slabinfo = "eio"
	case errors.Is(err, fs.ErrNotExist):
		c.Slabinfo = "absent"
	default:
		c.Slabinfo = "error: " + err.Error()
	}
	c.Usage = n.readUint(dir, "memory.kmem.usage_in_bytes")
	c.MaxUsage = n.readUint(dir, "memory.kmem.max_usage_in_bytes")
	c.Failcnt = n.readUint(dir, "memory.kmem.failcnt")
	if l := n.readUint(dir, "memory.kmem.limit_in_bytes"); l != nil && *l < unlimited {
		c.Limit = l
	}
	return c
}

func (n *node) readUint(dir, file string) *uint64 {
	b, err := n.readFile(filepath.Join(dir, file))
	if err != nil {
		return nil
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return nil
	}
	return &v
}

// countSlabCaches counts the cache lines of a slabinfo: the header is
// "slabinfo - version: 2.1" and a "# name …" line.
func countSlabCaches(b []byte) int {
	n := 0
	for _, line := range bytes.Split(b, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' || bytes.HasPrefix(line, []byte("slabinfo -")) {
			continue
		}
		n++
	}
	return n
}

// classify decides a cgroup's kmem state from its signals, as far as the
// model lets them decide.
func classify(c *CgroupKmem, model string, root bool) {
	switch {
	case root:
		c.State = "root"
		c.Evidence = "the root cgroup is never accounted"
		return
	case model == modelAlways:
		c.State = "active"
		c.Evidence = "this kernel accounts every memory cgroup"
		return
	}
	switch {
	case c.Slabinfo == "readable":
		c.State, c.Evidence = "active", fmt.Sprintf("memory.kmem.slabinfo is readable (%d caches)", c.SlabCaches)
	case val(c.Usage) > 0:
		c.State, c.Evidence = "active", fmt.Sprintf("memory.kmem.usage_in_bytes = %d", *c.Usage)
	case val(c.MaxUsage) > 0:
		c.State, c.Evidence = "active", fmt.Sprintf("memory.kmem.max_usage_in_bytes = %d", *c.MaxUsage)
	case val(c.Failcnt) > 0:
		c.State, c.Evidence = "active", fmt.Sprintf("memory.kmem.failcnt = %d", *c.Failcnt)
	case c.Limit != nil:
		c.State, c.Evidence = "active", fmt.Sprintf("memory.kmem.limit_in_bytes = %d (an explicit limit)", *c.Limit)
	case c.Slabinfo == "eio":
		c.State, c.Evidence = "inactive", "memory.kmem.slabinfo fails with EIO and no kernel memory was charged"
	default:
		c.State, c.Evidence = "undetermined", fmt.Sprintf("memory.kmem.slabinfo %s and no kernel memory was charged", c.Slabinfo)
	}
}

func countSignals(s *KmemSignals, c CgroupKmem) {
	switch {
	case c.Slabinfo == "readable":
		s.SlabinfoReadable++
	case c.Slabinfo == "eio":
		s.SlabinfoEIO++
	case c.Slabinfo == "absent":
		s.SlabinfoAbsent++
	}
	if val(c.Usage) > 0 {
		s.UsagePositive++
	}
	if val(c.MaxUsage) > 0 {
		s.MaxUsagePositive++
	}
	if val(c.Failcnt) > 0 {
		s.FailcntPositive++
	}
	if c.Limit != nil {
		s.LimitSet++
	}
}
