package procctl

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/protonstream/ps_port/internal/rawio"
)

func newTestPipeWait(t *testing.T) (*pipeWait, *os.File) {
	t.Helper()
	r, w, err := outputPipe()
	if err != nil {
		t.Fatal(err)
	}
	pw, err := newPipeWait(int(r.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pw.close(); r.Close(); w.Close() })
	return pw, w
}

// epollReady reports whether pw's epoll instance has an event queued.
func epollReady(t *testing.T, pw *pipeWait) bool {
	t.Helper()
	var n int
	var err error
	pw.rc.Control(func(fd uintptr) { n, _, err = rawio.EpollPoll(int(fd)) })
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// TestPipeWaitDisarmedWhileNotWaiting: writes into a pipe whose pump is not
// waiting for it queue no event (nothing is woken for them), and a wait
// that starts when the pipe already holds data returns at once.
func TestPipeWaitDisarmedWhileNotWaiting(t *testing.T) {
	pw, w := newTestPipeWait(t)
	for i := 0; i < 3; i++ {
		if _, err := w.Write([]byte("data")); err != nil {
			t.Fatal(err)
		}
	}
	if epollReady(t, pw) {
		t.Fatal("writes into a pipe nobody waits for made its epoll instance ready")
	}
	done := make(chan error, 1)
	go func() { done <- pw.wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("wait on a pipe holding data did not return")
	}
	if epollReady(t, pw) {
		t.Fatal("the entry stayed armed after wait returned")
	}
}

// TestPipeWaitWakesOnWriteAndClose: a waiter parked on an empty pipe is
// woken by the next write, and by the write end's close (EOF).
func TestPipeWaitWakesOnWriteAndClose(t *testing.T) {
	pw, w := newTestPipeWait(t)
	buf := make([]byte, 16)
	for _, step := range []string{"write", "close"} {
		done := make(chan error, 1)
		go func() { done <- pw.wait() }()
		select {
		case err := <-done:
			t.Fatalf("%s: wait on an empty pipe returned %v before anything happened", step, err)
		case <-time.After(50 * time.Millisecond):
		}
		if step == "write" {
			w.Write([]byte("x"))
		} else {
			w.Close()
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", step, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not wake the waiter", step)
		}
		rawio.Read(pw.fd, buf) // empty the pipe for the next step
	}
}

// TestPipeWaitKick: kick wakes a waiter with os.ErrDeadlineExceeded, and
// after unkick waits park again.
func TestPipeWaitKick(t *testing.T) {
	pw, w := newTestPipeWait(t)
	done := make(chan error, 1)
	go func() { done <- pw.wait() }()
	time.Sleep(20 * time.Millisecond)
	pw.kick()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("kicked wait returned %v, want os.ErrDeadlineExceeded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("kick did not wake the waiter")
	}
	pw.unkick()
	go func() { done <- pw.wait() }()
	w.Write([]byte("x"))
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("write after unkick did not wake the waiter")
	}
}

// TestWindowBell: a pump waiting for credit in the poller is woken by an
// ack, by Close and by kick, and sees the right answer each time.
func TestWindowBell(t *testing.T) {
	for _, how := range []string{"ack", "close", "kick"} {
		pw, _ := newTestPipeWait(t)
		w := NewWindow(10)
		w.addBell(&pw.bell)
		if got := w.take(10); got != 10 {
			t.Fatalf("took %d of a fresh window of 10", got)
		}
		type result struct {
			ok  bool
			err error
		}
		done := make(chan result, 1)
		go func() {
			ok, err := w.waitBell(&pw.bell, pw.waitBell)
			done <- result{ok, err}
		}()
		select {
		case r := <-done:
			t.Fatalf("%s: waitBell returned %v before anything happened", how, r)
		case <-time.After(50 * time.Millisecond):
		}
		want := true
		switch how {
		case "ack":
			w.Ack(3)
		case "close":
			w.Close()
		case "kick":
			w.kick()
			want = false
		}
		select {
		case r := <-done:
			if r.err != nil || r.ok != want {
				t.Fatalf("%s: waitBell = %v, %v; want %v, nil", how, r.ok, r.err, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not wake a pump waiting for credit", how)
		}
		if pw.silence() {
			t.Fatalf("%s: the bell was left ringing", how)
		}
	}
}

// ackingMover is a Mover whose owner acks each move from another
// goroutine, a little later, as the port's reader does.
type ackingMover struct {
	c        atomic.Pointer[Child]
	out, err atomic.Int64
}

func (m *ackingMover) Stdout(p []byte) error { return m.took(&m.out, len(p)) }
func (m *ackingMover) Stderr(p []byte) error { return m.took(&m.err, len(p)) }

func (m *ackingMover) MoveStdout(fd, n int) error { return m.move(&m.out, fd, n) }
func (m *ackingMover) MoveStderr(fd, n int) error { return m.move(&m.err, fd, n) }

func (m *ackingMover) move(count *atomic.Int64, fd, n int) error {
	buf := make([]byte, n)
	for got := 0; got < n; {
		k, err := rawio.Read(fd, buf[got:])
		if err != nil || k == 0 {
			return fmt.Errorf("pipe held %d of %d bytes: %v", got, n, err)
		}
		got += k
	}
	return m.took(count, n)
}

func (m *ackingMover) took(count *atomic.Int64, n int) error {
	count.Add(int64(n))
	go func() {
		for m.c.Load() == nil {
			time.Sleep(time.Millisecond)
		}
		m.c.Load().Window().Ack(n)
	}()
	return nil
}

// TestStreamDeliveredWhileChildPauses: a child that writes far more than
// its window on both streams and then pauses (alive, writing nothing) has
// all of it delivered without a further write: pumps that wait for credit
// are woken by the acks, and ones that find the pipe empty by the next
// write or the close.
func TestStreamDeliveredWhileChildPauses(t *testing.T) {
	const size = 3_000_000
	m := &ackingMover{}
	c := start(t, Spec{Path: "sh", Args: []string{"-c",
		"head -c 3000000 /dev/zero; head -c 3000000 /dev/zero >&2; exec sleep 60"},
		Stdout: Pipe, Stderr: Pipe, Window: 64 << 10}, m)
	m.c.Store(c)
	deadline := time.Now().Add(30 * time.Second)
	for (m.out.Load() < size || m.err.Load() < size) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if m.out.Load() != size || m.err.Load() != size {
		t.Fatalf("delivered %d bytes of stdout and %d of stderr, want %d each", m.out.Load(), m.err.Load(), size)
	}
	select {
	case <-c.Done():
		t.Fatal("the child exited: the output was not delivered while it paused")
	default:
	}
}
