package doctor

import "time"

// Schema names the JSON report's shape (docs/doctor.md). A change that
// renames or removes a field, or changes its meaning, gets a new version.
const Schema = "nokmem.doctor/v1"

// Status is the verdict on the node.
type Status string

const (
	// StatusOK: not exposed, or exposed with the fix in place and nothing
	// left to leak.
	StatusOK Status = "ok"
	// StatusAtRisk: exposed, no evidence of a leak yet, but something will
	// cause one (kmem accounting on in some cgroups, a kmem-writing runc or
	// kubelet on the cgroupfs driver).
	StatusAtRisk Status = "at-risk"
	// StatusLeaking: evidence that memory cgroup IDs are leaking or have
	// run out.
	StatusLeaking Status = "leaking"
	// StatusUnknown: the doctor could not tell (what it could not read is
	// in Problems).
	StatusUnknown Status = "unknown"
)

// Exit statuses of Main (docs/doctor.md). 0–3 are Nagios' OK, WARNING,
// CRITICAL and UNKNOWN, so monitoring that speaks that convention reads
// them as they are.
const (
	ExitOK      = 0
	ExitAtRisk  = 1
	ExitLeaking = 2
	ExitUnknown = 3
	// ExitFailed: the doctor itself failed (bad arguments, or an output it
	// was asked for could not be written).
	ExitFailed = 4
)

// ExitCode is the process exit status for s.
func (s Status) ExitCode() int {
	switch s {
	case StatusOK:
		return ExitOK
	case StatusAtRisk:
		return ExitAtRisk
	case StatusLeaking:
		return ExitLeaking
	}
	return ExitUnknown
}

// Report is everything the doctor found, with the evidence for each
// answer. Numbers the doctor could not read are null, never 0.
type Report struct {
	Schema   string    `json:"schema"`
	Time     time.Time `json:"time"`
	Root     string    `json:"root"`
	Hostname string    `json:"hostname,omitempty"`
	Status   Status    `json:"status"`
	ExitCode int       `json:"exitCode"`
	// Reasons are the findings the status rests on.
	Reasons []string `json:"reasons"`
	// NextSteps say what to do, most important first.
	NextSteps []string `json:"nextSteps"`
	Exposure  Exposure `json:"exposure"`
	Kmem      Kmem     `json:"kmem"`
	Leak      Leak     `json:"leak"`
	Fix       Fix      `json:"fix"`
	// Problems are what the doctor could not read or decide, and why.
	Problems []string `json:"problems"`
}

// Exposure is whether the node can suffer the leak at all.
type Exposure struct {
	Kernel       string `json:"kernel"`
	KernelFamily string `json:"kernelFamily"` // "el7" (3.10.0-N.el7), "el8", …, or "upstream"
	Distribution string `json:"distribution,omitempty"`
	OSID         string `json:"osId,omitempty"`
	OSVersionID  string `json:"osVersionId,omitempty"`
	// CgroupMode is v1, hybrid (v1 controllers beside a cgroup2 mount),
	// v2 or none.
	CgroupMode string `json:"cgroupMode"`
	// MemoryController is where the memory controller is: v1, v2 or absent.
	MemoryController string `json:"memoryController"`
	// MemoryMount is the memory hierarchy's mount point as the node sees
	// it, for the v1 controller.
	MemoryMount string `json:"memoryMount,omitempty"`
	// NokmemParam: cgroup.memory=nokmem is on the kernel command line.
	NokmemParam bool `json:"nokmemParam"`
	// NokmemHonoured: yes, no, unverified, or n/a (not set).
	NokmemHonoured string `json:"nokmemHonoured"`
	NokmemEvidence string `json:"nokmemEvidence,omitempty"`
	// KmemModel is how this kernel turns kmem accounting on: opt-in (off
	// until a limit is written to memory.kmem.limit_in_bytes, kernels
	// before 4.6, EL7's 3.10), always (every memory cgroup, 4.6 and later),
	// off (cgroup.memory=nokmem honoured), none (no v1 memory controller),
	// unknown.
	KmemModel string `json:"kmemModel"`
	// Exposed: the node can leak memory cgroup IDs this way.
	Exposed bool   `json:"exposed"`
	Why     string `json:"why"`
}

// Kmem is where kernel-memory accounting is on in the memory hierarchy.
type Kmem struct {
	Walked    int  `json:"cgroupsWalked"`
	Truncated bool `json:"truncated"`
	// Active counts cgroups (the root excluded) whose kmem accounting the
	// signals show on; under the always model every cgroup is.
	Active int `json:"active"`
	// Inactive counts cgroups the signals show off (memory.kmem.slabinfo
	// fails with EIO and nothing was charged).
	Inactive int `json:"inactive"`
	// Undetermined counts cgroups no signal decides.
	Undetermined int `json:"undetermined"`
	// Signals counts each raw observation over the walked cgroups.
	Signals KmemSignals `json:"signals"`
	// Trust says which signal decides on this kernel, and what it cannot
	// show.
	Trust     string    `json:"trust"`
	BySubtree []Subtree `json:"bySubtree"`
	// Top are the active cgroups with the most kernel memory charged.
	Top []CgroupKmem `json:"top"`
}

// KmemSignals are counts of raw observations.
type KmemSignals struct {
	SlabinfoReadable int `json:"slabinfoReadable"`
	SlabinfoEIO      int `json:"slabinfoEIO"`
	SlabinfoAbsent   int `json:"slabinfoAbsent"`
	UsagePositive    int `json:"usagePositive"`
	MaxUsagePositive int `json:"maxUsagePositive"`
	FailcntPositive  int `json:"failcntPositive"`
	LimitSet         int `json:"limitSet"`
}

// Subtree counts cgroups under one top-level directory of the hierarchy
// (kubepods, docker, system.slice, …).
type Subtree struct {
	Name   string `json:"name"`
	Walked int    `json:"walked"`
	Active int    `json:"active"`
}

// CgroupKmem is one cgroup's kmem signals.
type CgroupKmem struct {
	// Path is relative to the hierarchy's root ("/" is the root).
	Path string `json:"path"`
	// Slabinfo is readable, eio, absent or "error: …".
	Slabinfo   string  `json:"slabinfo"`
	SlabCaches int     `json:"slabCaches"`
	Usage      *uint64 `json:"usageBytes"`
	MaxUsage   *uint64 `json:"maxUsageBytes"`
	Failcnt    *uint64 `json:"failcnt"`
	// Limit is null when unlimited or unreadable.
	Limit *uint64 `json:"limitBytes"`
	// State is active, inactive or undetermined.
	State    string `json:"state"`
	Evidence string `json:"evidence"`
}

// Leak is the evidence that memory cgroup IDs leak.
type Leak struct {
	// IDLimit is the memory cgroup ID space: 65535 (3.10's CSS_ID_MAX,
	// MEM_CGROUP_ID_MAX later).
	IDLimit int `json:"idLimit"`
	// ProcCgroups is the memory line's num_cgroups in /proc/cgroups.
	ProcCgroups     *int   `json:"procCgroups"`
	ProcCgroupsNote string `json:"procCgroupsNote"`
	// LiveCgroups is the number of directories the walk found.
	LiveCgroups *int `json:"liveCgroups"`
	// SlabMemcgIDs counts the memory cgroups that own per-cgroup slab
	// caches in /sys/kernel/slab (kernels before 4.6 only); Zombies those
	// of them whose cgroup directory is gone: removed, but their memcg ID
	// still held. Both are null where the method does not apply.
	SlabMemcgIDs *int   `json:"slabMemcgIds"`
	Zombies      *int   `json:"zombies"`
	ZombieMethod string `json:"zombieMethod"`
	// Logs are the logs read, with what each showed.
	Logs []LogEvidence `json:"logs"`
	// Verdict is leaking, no-evidence or unknown.
	Verdict string   `json:"verdict"`
	Why     []string `json:"why"`
}

// LogEvidence is what one log showed.
type LogEvidence struct {
	Source string `json:"source"`
	Kind   string `json:"kind"` // kernel or journal
	Read   bool   `json:"read"`
	Error  string `json:"error,omitempty"`
	Lines  int    `json:"lines"`
	// Before is the number of lines skipped as older than this boot.
	Before int `json:"beforeBoot"`
	// SlubFailures: "SLUB: Unable to allocate memory on node".
	SlubFailures int `json:"slubFailures"`
	// MkdirFailures: mkdir of a memory cgroup failed with "no space left
	// on device" or "cannot allocate memory".
	MkdirFailures int `json:"mkdirFailures"`
	// KmemDeprecated: the 5.16+ kernel's notice that something wrote
	// memory.kmem.limit_in_bytes (printed once per boot).
	KmemDeprecated int `json:"kmemDeprecated"`
	// NokmemRefusals: a nokmem runc refused an explicit kernel-memory
	// limit ("kernel memory accounting disabled in this runc build").
	NokmemRefusals int      `json:"nokmemRefusals"`
	Samples        []string `json:"samples"`
}

// Fix is whether the runc and the kubelet that create memory cgroups leave
// kmem accounting off.
type Fix struct {
	// InPlace is yes, no, unknown or not-needed.
	InPlace    string         `json:"inPlace"`
	Why        []string       `json:"why"`
	Docker     []Daemon       `json:"docker"`
	Containerd []Daemon       `json:"containerd"`
	Kubelet    *KubeletConfig `json:"kubelet"`
	Binaries   []Binary       `json:"binaries"`
}

// Daemon is one dockerd or containerd: running, or only configured.
type Daemon struct {
	PID int `json:"pid,omitempty"`
	// Config is the configuration file read (daemon.json, config.toml).
	Config      string `json:"config"`
	ConfigFound bool   `json:"configFound"`
	// ConfigVersion is containerd's config version (1, 2 or 3).
	ConfigVersion int `json:"configVersion,omitempty"`
	// CRI is false for a containerd with its CRI plugin disabled (it then
	// serves only docker).
	CRI            bool      `json:"cri"`
	DefaultRuntime string    `json:"defaultRuntime"`
	Runtimes       []Runtime `json:"runtimes"`
	Notes          []string  `json:"notes,omitempty"`
}

// Runtime is one OCI runtime a daemon can run containers with.
type Runtime struct {
	Name string `json:"name"`
	// Binary is the runc as configured ("runc", "/usr/bin/runc-nokmem");
	// Path is where it resolves on the node ("" if nowhere).
	Binary string `json:"binary"`
	Path   string `json:"path"`
	// CgroupDriver is cgroupfs or systemd.
	CgroupDriver string `json:"cgroupDriver"`
	Default      bool   `json:"default"`
	Source       string `json:"source"`
}

// KubeletConfig is the kubelet as it runs or would run.
type KubeletConfig struct {
	PID          int    `json:"pid,omitempty"`
	Binary       string `json:"binary"`
	Path         string `json:"path"`
	CgroupDriver string `json:"cgroupDriver"`
	// DriverSource says where the driver came from (a flag, the config
	// file, the default).
	DriverSource string `json:"driverSource"`
	ConfigFile   string `json:"configFile,omitempty"`
	// RuntimeEndpoint is the CRI endpoint, or "docker" for dockershim.
	RuntimeEndpoint string `json:"runtimeEndpoint,omitempty"`
	Source          string `json:"source"`
	// Replaced: the running kubelet's executable was deleted or replaced
	// after it started (/proc/<pid>/exe says "(deleted)"), so the file at
	// Path is not what runs until it is restarted.
	Replaced bool `json:"replaced"`
}

// Binary is one runc or kubelet on the node and the static verifier's
// verdict on it.
type Binary struct {
	Path string `json:"path"`
	// Roles say why the doctor looked at it: docker-default,
	// docker-runtime, containerd-default, containerd-runtime, kubelet,
	// runc-on-path, runc-nokmem.
	Roles []string `json:"roles"`
	// InUse: a daemon or the kubelet runs containers or creates cgroups
	// with it by default.
	InUse        bool     `json:"inUse"`
	CgroupDriver string   `json:"cgroupDriver,omitempty"`
	Verdict      string   `json:"verdict"` // nokmem, kmem-enabled, no-kmem-code, unknown, missing, error
	GoVersion    string   `json:"goVersion,omitempty"`
	Tags         string   `json:"tags,omitempty"`
	Reasons      []string `json:"reasons"`
	// Risk: in use, and it turns kmem accounting on (kmem-enabled on the
	// cgroupfs driver).
	Risk bool `json:"risk"`
}
