package verify

// Helpers for a guest that runs the dynamic check as a VM's /init
// (verify/guest): it asks the kernel it booted what the check needs before
// it starts.

// FanotifyProblem says why the fanotify detector cannot watch the memory
// hierarchy at mount ("" if it can): it makes the same fanotify_init and
// fanotify_mark calls, with the same flags, as the detector itself.
func FanotifyProblem(mount string) string {
	w, err := newFanWatch(mount)
	if err != nil {
		return err.Error()
	}
	w.close()
	return ""
}
