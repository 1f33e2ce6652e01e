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
	fd    int
	wake  int // eventfd that ends the collector's poll at once on stop
	mount string
	// unopenable counts events whose file the kernel could not open for us;
	// overflow says the kernel's queue overflowed and dropped events.
	unopenable int
	overflow   bool
	keep       func(string) bool
	started    bool
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
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return &fanWatch{fd: fd, wake: wake, mount: mount}, nil
}

// collect reads events continuously until stop. Reading while the run is
// under way matters: once a cgroup is removed the kernel can no longer open
// its files for the event and drops those events (ENODEV).
func (w *fanWatch) collect(keep func(string) bool) {
	w.keep, w.started, w.done = keep, true, make(chan struct{})
	go func() {
		defer close(w.done)
		fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}, {Fd: int32(w.wake), Events: unix.POLLIN}}
		for {
			// The timeout only bounds a wait whose wake-up was lost; stop
			// writes to the eventfd.
			unix.Poll(fds, 1000)
			ev, err := w.drain(keep)
			w.events = append(w.events, ev...)
			if err != nil && w.err == nil {
				w.err = err
			}
			if fds[1].Revents != 0 {
				// stop was called after the run ended: what the kernel
				// queued before is in the queue and was read just now.
				return
			}
		}
	}()
}

// stop ends collect and returns what it saw. It may be called again (close
// does, in case an early return skipped it): the collector must never read
// the descriptor after close, which the kernel may have handed out anew.
func (w *fanWatch) stop() ([]Event, error) {
	if w.started && !w.stopped {
		w.stopped = true
		unix.Write(w.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		<-w.done
	}
	if w.overflow && w.err == nil {
		w.err = errors.New("fanotify: the kernel's event queue overflowed and dropped events")
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
			if mask&unix.FAN_Q_OVERFLOW != 0 {
				w.overflow = true
			}
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
	unix.Close(w.wake)
}
