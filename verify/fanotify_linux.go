package verify

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// fanWatch watches a whole mount (the memory cgroup hierarchy) for writes
// and for files opened for writing being closed, as fatrace does. It is
// independent of the process tree: it sees a write by any process, however
// the file was reached.
type fanWatch struct {
	fd         int
	mount      string
	unopenable int
	keep       func(string) bool
	stopc      chan struct{}
	stopped    bool
	done       chan struct{}
	events     []Event
	err        error
}

func newFanWatch(mount string) (*fanWatch, error) {
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK, unix.O_RDONLY|unix.O_LARGEFILE)
	if err != nil {
		return nil, fmt.Errorf("fanotify_init: %w", err)
	}
	if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD|unix.FAN_MARK_MOUNT, unix.FAN_MODIFY|unix.FAN_CLOSE_WRITE, unix.AT_FDCWD, mount); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("fanotify_mark %s: %w", mount, err)
	}
	return &fanWatch{fd: fd, mount: mount}, nil
}

// collect reads events continuously until stop. Reading while the run is
// under way matters: once a cgroup is removed the kernel can no longer open
// its files for the event and drops those events (ENODEV).
func (w *fanWatch) collect(keep func(string) bool) {
	w.keep, w.stopc, w.done = keep, make(chan struct{}), make(chan struct{})
	go func() {
		defer close(w.done)
		fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
		for {
			select {
			case <-w.stopc:
				ev, err := w.drain(keep)
				w.events = append(w.events, ev...)
				if w.err == nil {
					w.err = err
				}
				return
			default:
			}
			unix.Poll(fds, 20)
			ev, err := w.drain(keep)
			w.events = append(w.events, ev...)
			if err != nil && w.err == nil {
				w.err = err
			}
		}
	}()
}

// stop ends collect and returns what it saw. It may be called again (close
// does, in case an early return skipped it): the collector must never read
// the descriptor after close, which the kernel may have handed out anew.
func (w *fanWatch) stop() ([]Event, error) {
	if w.stopc != nil && !w.stopped {
		w.stopped = true
		close(w.stopc)
		<-w.done
	}
	return w.events, w.err
}

// drain returns the kmem-file events queued so far whose path passes keep.
func (w *fanWatch) drain(keep func(path string) bool) ([]Event, error) {
	var out []Event
	buf := make([]byte, 64*1024)
	for {
		n, err := unix.Read(w.fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			return out, nil
		}
		if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENXIO) {
			// The kernel could not open an event's file for us (a write-only
			// cgroup file such as cgroup.event_control) and dropped that event.
			// The kmem file is readable, so its events are never lost this way.
			w.unopenable++
			continue
		}
		if err != nil {
			return out, fmt.Errorf("fanotify read: %w", err)
		}
		for off := 0; off+24 <= n; {
			evLen := int(binary.LittleEndian.Uint32(buf[off:]))
			mask := binary.LittleEndian.Uint64(buf[off+8:])
			fd := int(int32(binary.LittleEndian.Uint32(buf[off+16:])))
			pid := int(int32(binary.LittleEndian.Uint32(buf[off+20:])))
			if evLen < 24 {
				return out, errors.New("fanotify: malformed event")
			}
			off += evLen
			if fd < 0 {
				continue
			}
			path, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
			// The container's cgroup is usually gone by the time the queue
			// is read; the kernel then marks the path.
			path = strings.TrimSuffix(path, " (deleted)")
			unix.Close(fd)
			if !isKmem(path) || (keep != nil && !keep(path)) {
				continue
			}
			call := "close-after-open-for-write"
			if mask&unix.FAN_MODIFY != 0 {
				call = "write"
			}
			out = append(out, Event{Detector: "fanotify", Pid: pid, Comm: comm(pid), Syscall: call, Path: path})
		}
	}
}

func (w *fanWatch) close() {
	w.stop()
	unix.Close(w.fd)
}
