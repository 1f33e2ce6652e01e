package verify

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// fanWatch watches a whole mount (the memory cgroup hierarchy) for writes
// and for files opened for writing being closed, as fatrace does. It is
// independent of the process tree: it sees a write by any process, however
// the file was reached.
//
// The kernel opens an event's file when the event is read, and cannot once
// the file's cgroup is removed (kernfs: ENODEV): the event is then lost. So
// events are read while the run is under way (collect), and the ptrace
// detector has them read (flush) before a traced process removes a
// directory: a writer that removes its cgroup right after writing, faster
// than the collector is scheduled, is still seen.
type fanWatch struct {
	fd    int
	wake  int // eventfd that ends the collector's poll at once on stop
	mount string
	keep  func(string) bool
	done  chan struct{}

	started, stopped bool // by the goroutine that owns the watch

	mu sync.Mutex // the results below: collect and flush both read events
	// unopenable counts events whose file the kernel could not open for us;
	// overflow says the kernel's queue overflowed and dropped events.
	unopenable int
	overflow   bool
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

// collect reads events continuously until stop.
func (w *fanWatch) collect(keep func(string) bool) {
	w.keep, w.started, w.done = keep, true, make(chan struct{})
	go func() {
		defer close(w.done)
		fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}, {Fd: int32(w.wake), Events: unix.POLLIN}}
		for {
			// The timeout only bounds a wait whose wake-up was lost; stop
			// writes to the eventfd.
			unix.Poll(fds, 1000)
			w.flush()
			if fds[1].Revents != 0 {
				// stop was called after the run ended: what the kernel
				// queued before is in the queue and was read just now.
				return
			}
		}
	}()
}

// flush reads the events queued so far. The collector calls it, and the
// ptrace detector (from its own thread) before a traced process removes a
// directory; read(2) hands each event to one reader only.
func (w *fanWatch) flush() {
	ev, unopenable, overflow, err := w.drain(w.keep)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.events = append(w.events, ev...)
	w.unopenable += unopenable
	w.overflow = w.overflow || overflow
	if err != nil && w.err == nil {
		w.err = err
	}
}

// stop ends collect and returns what it saw. It may be called again (close
// does, in case an early return skipped it): the collector must never read
// the descriptor after close, which the kernel may have handed out anew.
// No flush may be under way (the traced command has ended).
func (w *fanWatch) stop() ([]Event, error) {
	if w.started && !w.stopped {
		w.stopped = true
		unix.Write(w.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		<-w.done
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.overflow && w.err == nil {
		w.err = errors.New("fanotify: the kernel's event queue overflowed and dropped events")
	}
	return w.events, w.err
}

// drain returns the kmem-file events queued so far whose path passes keep,
// how many events the kernel could not open a file for, and whether its
// queue overflowed.
func (w *fanWatch) drain(keep func(path string) bool) (out []Event, unopenable int, overflow bool, err error) {
	buf := make([]byte, 64*1024)
	for {
		n, err := unix.Read(w.fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			return out, unopenable, overflow, nil
		}
		if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENXIO) {
			// The kernel could not open an event's file for us (a write-only
			// cgroup file such as cgroup.event_control, or a file of a cgroup
			// removed since) and dropped that event.
			unopenable++
			continue
		}
		if err != nil {
			return out, unopenable, overflow, fmt.Errorf("fanotify read: %w", err)
		}
		for off := 0; off+24 <= n; {
			evLen := int(binary.LittleEndian.Uint32(buf[off:]))
			mask := binary.LittleEndian.Uint64(buf[off+8:])
			fd := int(int32(binary.LittleEndian.Uint32(buf[off+16:])))
			pid := int(int32(binary.LittleEndian.Uint32(buf[off+20:])))
			if evLen < 24 {
				return out, unopenable, overflow, errors.New("fanotify: malformed event")
			}
			off += evLen
			if mask&unix.FAN_Q_OVERFLOW != 0 {
				overflow = true
			}
			if fd < 0 {
				continue
			}
			path, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
			// A cgroup removed after the event was read: the kernel marks
			// the path.
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
