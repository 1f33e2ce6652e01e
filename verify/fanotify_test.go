package verify

import (
	"encoding/binary"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// When the kernel's queue overflowed, events were dropped: the detector
// says so instead of reporting what it happened to keep.
func TestFanotifyQueueOverflowIsAnError(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	ev := make([]byte, 24) // struct fanotify_event_metadata
	binary.LittleEndian.PutUint32(ev[0:], 24)
	ev[4], ev[6] = unix.FANOTIFY_METADATA_VERSION, 24
	binary.LittleEndian.PutUint64(ev[8:], unix.FAN_Q_OVERFLOW)
	binary.LittleEndian.PutUint32(ev[16:], uint32(0xffffffff)) // FAN_NOFD
	if _, err := unix.Write(p[1], ev); err != nil {
		t.Fatal(err)
	}
	w := &fanWatch{fd: p[0]}
	w.flush()
	if _, err := w.stop(); err == nil || !strings.Contains(err.Error(), "overflowed") {
		t.Fatalf("stop after an overflow: %v", err)
	}
}
