package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// qmp speaks QEMU's machine protocol (QMP: JSON objects, one per line) over
// one end of a socket pair whose other end QEMU got as a descriptor
// (-chardev socket,fd=N): no socket file, nobody else can connect. The
// handful of commands the snapshots need (stop, cont, getfd, migrate,
// query-status, query-migrate) are all it knows.
type qmp struct {
	conn     *net.UnixConn
	dec      *json.Decoder
	stop     func() bool // of context.AfterFunc
	deadline time.Time   // the check's time limit

	mu   sync.Mutex
	done bool // ctx is done: every exchange fails at once
}

// qmpTimeout bounds one exchange: QEMU answers at once, or is stuck.
const qmpTimeout = 30 * time.Second

// newQMP returns QEMU's end of a new socket pair and the client on the
// other; ctx done or deadline passed makes every exchange fail at once.
func newQMP(ctx context.Context, deadline time.Time) (*os.File, *qmp, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "qmp")
	c, err := net.FileConn(mine) // a duplicate
	mine.Close()
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	q := &qmp{conn: c.(*net.UnixConn), dec: json.NewDecoder(c), deadline: deadline}
	q.stop = context.AfterFunc(ctx, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		q.done = true
		q.conn.SetDeadline(time.Unix(1, 0))
	})
	return os.NewFile(uintptr(fds[1]), "qmp-qemu"), q, nil
}

func (q *qmp) Close() error {
	q.stop()
	return q.conn.Close()
}

type qmpMessage struct {
	QMP    json.RawMessage `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string `json:"event"`
}

func (q *qmp) setDeadline() {
	q.mu.Lock()
	defer q.mu.Unlock()
	d := time.Now().Add(qmpTimeout)
	if !q.deadline.IsZero() && q.deadline.Before(d) {
		d = q.deadline
	}
	if q.done {
		d = time.Unix(1, 0)
	}
	q.conn.SetDeadline(d)
}

// handshake reads QEMU's greeting and leaves capabilities negotiation mode.
func (q *qmp) handshake() error {
	q.setDeadline()
	var greeting qmpMessage
	if err := q.dec.Decode(&greeting); err != nil {
		return fmt.Errorf("qmp greeting: %w", err)
	}
	if greeting.QMP == nil {
		return errors.New("qmp: no greeting")
	}
	_, err := q.exec("qmp_capabilities", nil, nil)
	return err
}

// exec runs one command (with fd passed along, as getfd needs) and returns
// its answer, skipping events.
func (q *qmp) exec(command string, args any, fd *os.File) (json.RawMessage, error) {
	q.setDeadline()
	req, err := json.Marshal(struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
	}{command, args})
	if err != nil {
		return nil, err
	}
	if fd != nil {
		_, _, err = q.conn.WriteMsgUnix(req, unix.UnixRights(int(fd.Fd())), nil)
	} else {
		_, err = q.conn.Write(req)
	}
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	for {
		var m qmpMessage
		if err := q.dec.Decode(&m); err != nil {
			return nil, fmt.Errorf("qmp %s: %w", command, err)
		}
		switch {
		case m.Event != "":
			continue
		case m.Error != nil:
			return nil, fmt.Errorf("qmp %s: %s", command, m.Error.Desc)
		}
		return m.Return, nil
	}
}

// status is query-status's run state: "inmigrate", "paused", "running",
// "postmigrate", …
func (q *qmp) status() (string, error) {
	raw, err := q.exec("query-status", nil, nil)
	if err != nil {
		return "", err
	}
	var s struct {
		Status string `json:"status"`
	}
	err = json.Unmarshal(raw, &s)
	return s.Status, err
}

// migration is query-migrate's status ("active", "completed", "failed",
// …) and error.
func (q *qmp) migration() (status, errDesc string, err error) {
	raw, err := q.exec("query-migrate", nil, nil)
	if err != nil {
		return "", "", err
	}
	var m struct {
		Status string `json:"status"`
		Error  string `json:"error-desc"`
	}
	err = json.Unmarshal(raw, &m)
	return m.Status, m.Error, err
}
