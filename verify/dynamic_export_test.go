package verify

// Test-only access for the external tests (package verify_test).

// WithPhaseHook returns opt with f called as the dynamic check reaches each
// phase: "self-test", "self-test-done", "run-started:<run>",
// "run-done:<run>", "verdict".
func WithPhaseHook(opt DynamicOptions, f func(phase string)) DynamicOptions {
	opt.hook = f
	return opt
}
