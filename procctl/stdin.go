package procctl

import (
	"errors"
	"os"
	"sync"
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
	closing bool  // no more writes accepted; close f once the queue is empty
	err     error // why writing stopped, if it did
}

func newStdinQueue(f *os.File) *stdinQueue {
	q := &stdinQueue{f: f}
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
		q.mu.Unlock()
		for _, b := range bufs {
			_, err := q.f.Write(b)
			q.mu.Lock()
			q.queued -= len(b)
			if err != nil {
				if q.err == nil {
					q.err = ErrStdinClosed
				}
				q.bufs, q.queued = nil, 0
				q.mu.Unlock()
				return
			}
			q.mu.Unlock()
		}
		if closing && len(bufs) == 0 {
			return
		}
	}
}
