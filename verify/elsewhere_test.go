package verify_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/nokmem/nokmem/verify"
)

// VerifyWith decides exactly as Verify: with the dynamic check off (so that
// both have the same dynamic result), their reports are the same, static
// evidence, kind check, decision and target gate alike.
func TestVerifyWithIsVerify(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	never := func(context.Context, string, string) (*verify.DynamicResult, error) {
		return nil, errors.New("the dynamic check must not run when it is off")
	}
	for _, c := range []struct {
		path string
		opt  verify.Options
	}{
		{"/bin/sh", verify.Options{Project: "runc", Dynamic: "off"}},
		{exe, verify.Options{Project: "kubelet", Dynamic: "off", Target: "el7", DynamicOptions: verify.DynamicOptions{TempDir: t.TempDir()}}},
	} {
		a, errA := verify.Verify(context.Background(), c.path, c.opt)
		b, errB := verify.VerifyWith(context.Background(), c.path, c.opt, never)
		if errA != nil || errB != nil {
			t.Fatalf("%s: %v / %v", c.path, errA, errB)
		}
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		if string(ja) != string(jb) {
			t.Errorf("%s: Verify and VerifyWith differ:\n%s\n%s", c.path, ja, jb)
		}
	}
	// The dynamic result it is given is the one it decides with.
	fail := func(context.Context, string, string) (*verify.DynamicResult, error) {
		return &verify.DynamicResult{Status: verify.DynFail, Reason: "a write seen elsewhere"}, nil
	}
	r, err := verify.VerifyWith(context.Background(), "/bin/sh", verify.Options{Project: "runc"}, fail)
	if err != nil || r.Passed || r.Verdict != verify.KmemEnabled {
		t.Fatalf("%v %+v", err, r)
	}
	broken := func(context.Context, string, string) (*verify.DynamicResult, error) { return nil, errors.New("no VM") }
	if _, err := verify.VerifyWith(context.Background(), "/bin/sh", verify.Options{Project: "runc"}, broken); err == nil {
		t.Fatal("a dynamic check that could not be made was not an error")
	}
}
