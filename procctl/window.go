package procctl

import (
	"sync"

	"github.com/protonstream/ps_port/internal/rawio"
)

// Window is flow-control credit shared by a child's stdout and stderr: the
// number of payload bytes that may be handed to the Sink before the owner
// acknowledges them. A reader takes credit only when its pipe has data, so a
// quiet stdout never starves a busy stderr.
type Window struct {
	mu     sync.Mutex
	cond   sync.Cond
	size   int // total credit when nothing is in flight
	avail  int // credit left
	closed bool
	kicked bool // the child is gone: waiters check whether their pipe is empty
	bells  []*bell
}

// bell is how a pump that waits for credit in Go's poller is woken: an
// eventfd in its pipeWait's epoll instance, written when credit comes back
// while the pump waits. A goroutine woken through sync.Cond is made
// runnable by the goroutine that acked, and Go then wakes a second thread
// to run it (a futex wake and two context switches per frame on two
// cores); one woken through the poller is found by the acking thread
// itself once that goroutine parks, on the same thread.
type bell struct {
	fd      int  // the eventfd
	waiting bool // the pump waits for credit (guarded by Window.mu)
}

// ringLocked wakes the pumps that wait for credit; w.mu is held.
func (w *Window) ringLocked() {
	for _, b := range w.bells {
		if b.waiting {
			b.waiting = false
			rawio.Ring(b.fd)
		}
	}
}

// addBell registers b, woken like the Cond's waiters.
func (w *Window) addBell(b *bell) {
	w.mu.Lock()
	w.bells = append(w.bells, b)
	w.mu.Unlock()
}

// removeBell unregisters b (its pump is finished, its eventfd about to be
// closed).
func (w *Window) removeBell(b *bell) {
	w.mu.Lock()
	for i, x := range w.bells {
		if x == b {
			w.bells = append(w.bells[:i], w.bells[i+1:]...)
			break
		}
	}
	w.mu.Unlock()
}

// waitBell is wait for a pump that waits in the poller: it reports whether
// there is credit (true), or the window was kicked (false), as wait does;
// park parks the pump until its bell rings.
func (w *Window) waitBell(b *bell, park func() error) (bool, error) {
	for {
		w.mu.Lock()
		if w.avail > 0 || w.closed || w.kicked {
			b.waiting = false
			ok := w.avail > 0 || w.closed
			w.mu.Unlock()
			return ok, nil
		}
		b.waiting = true
		w.mu.Unlock()
		if err := park(); err != nil {
			w.mu.Lock()
			b.waiting = false
			w.mu.Unlock()
			return false, err
		}
	}
}

// NewWindow returns a window of size bytes (at least 1).
func NewWindow(size int) *Window {
	if size < 1 {
		size = 1
	}
	w := &Window{size: size, avail: size}
	w.cond.L = &w.mu
	return w
}

// Size is the window's total credit.
func (w *Window) Size() int { return w.size }

// InFlight is the number of bytes handed out and not yet acknowledged.
func (w *Window) InFlight() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.size - w.avail
}

// Ack returns n bytes of credit. It reports false when n was more than was in
// flight; the credit is then clamped to the window size.
func (w *Window) Ack(n int) bool {
	if n <= 0 {
		return n == 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	ok := w.avail+n <= w.size
	w.avail = min(w.avail+n, w.size)
	w.cond.Broadcast()
	w.ringLocked()
	return ok
}

// Close wakes every waiter for good; from then on credit is unlimited, so
// readers can drain their pipes when nobody is going to ack any more.
func (w *Window) Close() {
	w.mu.Lock()
	w.closed = true
	w.cond.Broadcast()
	w.ringLocked()
	w.mu.Unlock()
}

// WaitAcked blocks until every byte handed out has been acknowledged or the
// window is closed (nobody will ack any more). It reports whether
// everything was acknowledged.
func (w *Window) WaitAcked() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.avail < w.size && !w.closed {
		w.cond.Wait()
	}
	return w.avail >= w.size
}

// wait blocks until some credit is available, the window is closed or it has
// been kicked. It reports whether there is credit.
func (w *Window) wait() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.avail == 0 && !w.closed && !w.kicked {
		w.cond.Wait()
	}
	return w.avail > 0 || w.closed
}

// waitCredit blocks until some credit is available or the window is closed.
func (w *Window) waitCredit() {
	w.mu.Lock()
	for w.avail == 0 && !w.closed {
		w.cond.Wait()
	}
	w.mu.Unlock()
}

// kick wakes the waiters for good so each can see whether its pipe still
// holds anything: a pipe at EOF needs no credit to be finished with.
func (w *Window) kick() {
	w.mu.Lock()
	w.kicked = true
	w.cond.Broadcast()
	w.ringLocked()
	w.mu.Unlock()
}

// take reserves up to max bytes of credit without blocking.
func (w *Window) take(max int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return max
	}
	n := min(max, w.avail)
	w.avail -= n
	return n
}

// giveBack returns credit that was reserved but not used.
func (w *Window) giveBack(n int) {
	if n <= 0 {
		return
	}
	w.mu.Lock()
	if !w.closed {
		w.avail += n
		w.cond.Broadcast()
		w.ringLocked()
	}
	w.mu.Unlock()
}
