package procctl

import (
	"errors"
	"os"
	"sync"
	"syscall"

	"github.com/protonstream/ps_port/internal/rawio"
)

// ErrStdinClosed is returned by Child.Write after CloseStdin, after the child
// closed its end of the pipe, or when the child has no stdin pipe.
var ErrStdinClosed = errors.New("the child's stdin is closed")

// stdinQueue feeds the child's stdin from its own goroutine, so a child that
// does not read never blocks the caller of Write.
type stdinQueue struct {
	mu      sync.Mutex
	cond    sync.Cond
	f       *os.File
	bufs    [][]byte
	queued  int
	written int64  // bytes written to f so far
	wrote   func() // called by run after each buffer it wrote; may be nil
	closing bool   // no more writes accepted; close f once the queue is empty
	err     error  // why writing stopped, if it did
	busy    bool   // run is writing buffers it took from the queue
	rc      syscall.RawConn
}

func newStdinQueue(f *os.File, wrote func()) *stdinQueue {
	q := &stdinQueue{f: f, wrote: wrote}
	q.rc, _ = f.SyscallConn()
	q.cond.L = &q.mu
	go q.run()
	return q
}

// write queues p; the queue owns p from then on.
func (q *stdinQueue) write(p []byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closing {
		return ErrStdinClosed
	}
	if q.err != nil {
		return q.err
	}
	if len(p) == 0 {
		return nil
	}
	if len(q.bufs) == 0 && !q.busy && q.rc != nil {
		// Nothing is ahead of p: write what the pipe takes now, without
		// waking the writer goroutine (a round trip through the child is
		// one thread hand-off shorter). A full or broken pipe leaves the
		// rest to run, as before.
		q.rc.Write(func(fd uintptr) bool {
			if n, err := rawio.Write(int(fd), p); err == nil && n > 0 {
				p = p[n:]
				q.written += int64(n)
			}
			return true
		})
		if len(p) == 0 {
			return nil
		}
	}
	q.bufs = append(q.bufs, p)
	q.queued += len(p)
	q.cond.Signal()
	return nil
}

// closeAfterQueued closes stdin once everything queued has been written.
func (q *stdinQueue) closeAfterQueued() {
	q.mu.Lock()
	q.closing = true
	q.cond.Signal()
	q.mu.Unlock()
}

// abort closes stdin now, unblocking a pending write.
func (q *stdinQueue) abort() {
	q.closeAfterQueued()
	q.f.Close()
}

func (q *stdinQueue) pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.queued
}

func (q *stdinQueue) total() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.written
}

func (q *stdinQueue) run() {
	defer q.f.Close()
	for {
		q.mu.Lock()
		for len(q.bufs) == 0 && !q.closing {
			q.cond.Wait()
		}
		bufs := q.bufs
		q.bufs = nil
		closing := q.closing
		q.busy = len(bufs) > 0
		q.mu.Unlock()
		for _, b := range bufs {
			n, err := q.f.Write(b)
			q.mu.Lock()
			q.queued -= len(b)
			q.written += int64(n)
			if err != nil {
				if q.err == nil {
					q.err = ErrStdinClosed
				}
				q.bufs, q.queued = nil, 0
				q.mu.Unlock()
				return
			}
			q.mu.Unlock()
			if q.wrote != nil {
				q.wrote()
			}
		}
		q.mu.Lock()
		q.busy = false
		q.mu.Unlock()
		if closing && len(bufs) == 0 {
			return
		}
	}
}
