package verify

import (
	"context"
	"fmt"
	"github.com/nokmem/nokmem/internal/digest"
)

// DynamicElsewhere makes the dynamic check somewhere other than this
// process, e.g. in a throwaway VM (verify/vm): kind is "runc" (binary is the
// runc to run) or "probe" (binary is a kubelet's kmem probe). It runs the
// same check as DynamicRunc or DynamicProbe there and returns its result; err
// means the check could not be made at all (no VM, an unfit kernel, a guest
// killed at its time limit) and fails the verification.
type DynamicElsewhere func(ctx context.Context, kind, binary string) (*DynamicResult, error)

// VerifyWith is Verify with the dynamic check made by dyn. The static checks,
// the decision and the target gate run here, exactly as in Verify, so a
// report means the same whichever runtime made the dynamic check
// (TestVerifyWithIsVerify holds the two together).
func VerifyWith(ctx context.Context, path string, opt Options, dyn DynamicElsewhere) (*Report, error) {
	sum, err := digest.File(path)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	st, err := Static(path)
	if err != nil {
		return nil, fmt.Errorf("verify: static checks: %w", err)
	}
	r := &Report{Schema: ReportSchema, Project: opt.Project, Binary: path, SHA256: sum, Static: st, Verdict: st.Verdict}
	switch {
	case opt.Dynamic == "off":
		r.Dynamic = &DynamicResult{Status: DynOff, Reason: "switched off by the caller"}
	case opt.Project == "runc":
		r.Dynamic, err = dyn(ctx, "runc", path)
	case opt.Project == "kubelet" && opt.Probe != "":
		r.Dynamic, err = dyn(ctx, "probe", opt.Probe)
	default:
		r.Dynamic = &DynamicResult{Status: DynUnavailable, Reason: "a kubelet binary alone cannot be run far enough to create its cgroups here; " +
			"the dynamic check runs the kmem probe built from the same tree (kept beside an artifact built by nokmem)"}
	}
	if err != nil {
		return nil, fmt.Errorf("verify: dynamic check: %w", err)
	}
	if r.Dynamic == nil {
		return nil, fmt.Errorf("verify: dynamic check: no result")
	}
	r.decide(opt)
	if why := st.KindMismatch(opt.Project); why != "" {
		r.Passed, r.Verdict = false, Unknown
		r.Reasons = append(r.Reasons, "verified as "+opt.Project+", but "+why)
	}
	if opt.Target != "" {
		if err := r.ApplyTarget(ctx, path, opt); err != nil {
			return nil, fmt.Errorf("verify: target %s: %w", opt.Target, err)
		}
	}
	if err := ctx.Err(); err != nil {
		r.Passed = false
		r.Reasons = append(r.Reasons, "the verification was interrupted ("+err.Error()+"); an interrupted check is never a pass")
	}
	return r, nil
}
