package port

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/protonstream/ps_port/internal/rawio"
	"golang.org/x/sys/unix"
)

// roomWait keeps the shared port's pipe from filling up ("Shared mode" in
// docs/protocol.md, "How output waits for room").
//
// Linux wakes a pipe's writer only when a read frees room in a pipe that
// was full. With eight children streaming, the 1 MiB port pipe was full
// most of the time: each 64 KiB the owner's VM read woke the writer, so a
// 256 KiB frame's splices waited for room about four times, with the
// port's lock held. Here a child's frame is written only once the pipe has
// room for all of it; until then its pump waits in a FIFO queue. What
// frees room is the owner reading, and what tells ps_port that it has
// read is its next frame (the shim acks output as it forwards it, i.e.
// after reading it from the pipe): after every frame it reads, ps_port
// hands the free room to the queue's waiters in order.
//
// Nothing obliges the owner to send anything (small frames stay below the
// shim's ack threshold; an owner may never ack; at shutdown nobody does),
// so a waiter that is not let through within roomFallback writes anyway,
// as a Conn without roomWait does: waiting for the pipe to be writable.
type roomWait struct {
	fd      int // the port's pipe (write end)
	size    int // its capacity
	waiting atomic.Int32
	mu      sync.Mutex
	queue   []*roomWaiter // in arrival order (guarded by mu)
}

// roomFallback is the longest a frame waits for the owner to free room
// before it is written as if there were no roomWait.
const roomFallback = 5 * time.Millisecond

// frameHeader is an upper bound on an output frame's header.
const frameHeader = 64

// roomWaiter is one waiting pump: an eventfd in Go's poller, so that the
// reader that lets it through rings it without handing a goroutine to
// another thread (as the pumps' credit bells, procctl/window.go).
type roomWaiter struct {
	need int // bytes of room it waits for (guarded by roomWait.mu)
	f    *os.File
	rc   syscall.RawConn
	efd  int
}

var roomWaiters sync.Pool // of *roomWaiter; eventfds are reused, never closed

// newRoomWait returns a roomWait for the pipe wfd, or nil when wfd is not
// a pipe (nothing then waits).
func newRoomWait(wfd int) *roomWait {
	size, err := unix.FcntlInt(uintptr(wfd), unix.F_GETPIPE_SZ, 0)
	if err != nil || size <= 0 {
		return nil
	}
	return &roomWait{fd: wfd, size: size}
}

// getWaiter returns a waiter from the pool or a new one; nil when no
// eventfd can be had (the frame is then written without waiting).
func getWaiter() *roomWaiter {
	if w, ok := roomWaiters.Get().(*roomWaiter); ok {
		return w
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil
	}
	f := os.NewFile(uintptr(efd), "eventfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil
	}
	return &roomWaiter{f: f, rc: rc, efd: efd}
}

// park waits until the waiter is rung or roomFallback has passed; it
// reports whether it was rung.
func (w *roomWaiter) park() bool {
	w.f.SetReadDeadline(time.Now().Add(roomFallback))
	rang := false
	w.rc.Read(func(fd uintptr) bool {
		rang = rawio.Silence(w.efd)
		return rang
	})
	return rang
}

// room is the free space in the pipe, or the whole pipe when FIONREAD
// fails (so that nothing waits on a pipe it cannot measure).
func (r *roomWait) room() int {
	q, err := rawio.Queued(r.fd)
	if err != nil {
		return r.size
	}
	return r.size - q
}

// enter returns once the pipe has room for a frame of n payload bytes, or
// after roomFallback. Called without the Conn's lock, which the caller
// takes next. A frame larger than half the pipe (a window of 1 MiB makes
// frames as large as the pipe) waits only for half of it: waiting for an
// empty pipe would leave it idle while the owner's VM takes the next frame,
// and the rest of such a frame is spliced as the pipe takes it.
func (r *roomWait) enter(n int) {
	need := r.need(n)
	r.mu.Lock()
	if len(r.queue) == 0 && r.room() >= need {
		r.mu.Unlock()
		return
	}
	w := getWaiter()
	if w == nil {
		r.mu.Unlock()
		return
	}
	w.need = need
	r.queue = append(r.queue, w)
	r.waiting.Store(int32(len(r.queue)))
	r.mu.Unlock()
	if !w.park() {
		r.mu.Lock()
		rung := true
		for i, x := range r.queue {
			if x == w {
				r.queue = append(r.queue[:i], r.queue[i+1:]...)
				rung = false
				break
			}
		}
		r.waiting.Store(int32(len(r.queue)))
		r.mu.Unlock()
		if rung { // let through just after its deadline: reset the eventfd
			rawio.Silence(w.efd)
		}
	}
	roomWaiters.Put(w)
}

// need is the room a frame of n payload bytes waits for (see enter).
func (r *roomWait) need(n int) int { return min(n+frameHeader, r.size/2) }

// freed lets through, in order, the waiters whose frames now fit; it is
// called after each frame read from the owner.
func (r *roomWait) freed() {
	if r == nil || r.waiting.Load() == 0 {
		return
	}
	r.mu.Lock()
	room := r.room()
	i := 0
	for ; i < len(r.queue) && r.queue[i].need <= room; i++ {
		room -= r.queue[i].need
		rawio.Ring(r.queue[i].efd)
	}
	r.queue = r.queue[i:]
	r.waiting.Store(int32(len(r.queue)))
	r.mu.Unlock()
}
