package verify

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"time"
)

// PhaseTime is how long one phase of the dynamic check took. Phases may
// overlap (the self-test runs beside the first run); a phase named
// "<parent>/<step>" is one step of its parent. Start is counted from the
// beginning of the check.
type PhaseTime struct {
	Phase   string  `json:"phase"`
	StartMs float64 `json:"startMs"`
	Ms      float64 `json:"ms"`
}

// timeline records phase times; it is safe for concurrent use and a nil
// timeline records nothing (SelfTest called on its own).
type timeline struct {
	t0     time.Time
	mu     sync.Mutex
	phases []PhaseTime
}

func newTimeline() *timeline { return &timeline{t0: time.Now()} }

// span starts phase and returns the function that ends it.
func (tl *timeline) span(phase string) (end func()) {
	if tl == nil {
		return func() {}
	}
	start := time.Now()
	var once sync.Once
	return func() {
		once.Do(func() {
			now := time.Now()
			tl.mu.Lock()
			defer tl.mu.Unlock()
			tl.phases = append(tl.phases, PhaseTime{Phase: phase, StartMs: ms(start.Sub(tl.t0)), Ms: ms(now.Sub(start))})
		})
	}
}

// list returns the phases in the order they started.
func (tl *timeline) list() []PhaseTime {
	if tl == nil {
		return nil
	}
	tl.mu.Lock()
	defer tl.mu.Unlock()
	out := append([]PhaseTime(nil), tl.phases...)
	// Insertion sort: a handful of entries, stable for equal starts.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].StartMs < out[j-1].StartMs; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Millisecond)*10) / 10 }

// TimingSummary renders the phase times on one line, each top-level phase
// with its steps in brackets, e.g.
// "total 812ms: reap 2, self-test 40 [canary 12], memory-limit 380 [...]".
func (d *DynamicResult) TimingSummary() string {
	if d == nil || len(d.Timings) == 0 {
		return ""
	}
	var total string
	var top []string
	steps := map[string][]string{}
	for _, p := range d.Timings {
		parent, step, isStep := strings.Cut(p.Phase, "/")
		switch {
		case p.Phase == "total":
			total = fmt.Sprintf("%.0fms", p.Ms)
		case isStep:
			steps[parent] = append(steps[parent], fmt.Sprintf("%s %.0f", step, p.Ms))
		default:
			top = append(top, p.Phase)
		}
	}
	var b strings.Builder
	b.WriteString("total " + total + ":")
	for i, name := range top {
		if i > 0 {
			b.WriteString(",")
		}
		for _, p := range d.Timings {
			if p.Phase == name {
				fmt.Fprintf(&b, " %s %.0f (at %.0f)", name, p.Ms, p.StartMs)
				break
			}
		}
		if s := steps[name]; len(s) > 0 {
			b.WriteString(" [" + strings.Join(s, ", ") + "]")
		}
	}
	return b.String()
}

// finish records the whole check, from the timeline's start, as "total" and
// stores the phases in *res.
func (tl *timeline) finish(res **DynamicResult) {
	tl.mu.Lock()
	tl.phases = append(tl.phases, PhaseTime{Phase: "total", Ms: ms(time.Since(tl.t0))})
	tl.mu.Unlock()
	if *res != nil {
		(*res).Timings = tl.list()
	}
}
