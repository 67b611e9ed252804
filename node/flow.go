package node

import (
	"sync"
	"time"

	"github.com/ergo-services/ergo/etf"
)

// flowCtl is flow control by the owner's message_queue_len (flow:
// :queue_len). It remembers the size of every data message sent to the
// owner and not yet known to be consumed. When they add up to half the
// window it asks the owner's node for process_info(Owner,
// message_queue_len) through rex. That request travels on the same
// connection as the data, after it (one protocol handler keeps order), so
// every message counted before it was asked is in the owner's queue or
// consumed by the time it is answered. With n messages counted and a queue
// of q, at least n-q of the oldest were consumed: their bytes go back to the
// window. Other messages in the owner's queue only make this more cautious.
type flowCtl struct {
	c *child

	mu        sync.Mutex
	cond      sync.Cond
	sizes     []int // sizes of counted messages, oldest first
	total     int
	dest      etf.Pid
	epoch     int // bumped when the owner changes
	stopped   bool
	threshold int
}

func newFlowCtl(c *child, window int) *flowCtl {
	f := &flowCtl{c: c, dest: c.req.owner, threshold: max(1, window/2)}
	f.cond.L = &f.mu
	return f
}

// sent counts a data message of n bytes handed to the connection.
func (f *flowCtl) sent(n int) {
	f.mu.Lock()
	f.sizes = append(f.sizes, n)
	f.total += n
	if f.total >= f.threshold {
		f.cond.Signal()
	}
	f.mu.Unlock()
}

// reset starts over with a new owner: what the old one holds is its own.
func (f *flowCtl) reset(dest etf.Pid) {
	f.mu.Lock()
	total := f.total
	f.sizes, f.total, f.dest = nil, 0, dest
	f.epoch++
	f.mu.Unlock()
	f.c.window.Ack(total)
}

func (f *flowCtl) stop() {
	f.mu.Lock()
	f.stopped = true
	f.cond.Broadcast()
	f.mu.Unlock()
}

// When a poll frees nothing and the owner's queue holds at most stallQueue
// messages, the messages themselves are looked at: an owner that
// selectively receives from one child while another child's data waits in
// its queue would otherwise stall the first forever (queue_len counts the
// other child's messages too). That copies the queue, so while it finds
// only this child's messages (an owner that is just slow) it is done ever
// less often, up to once a second.
const (
	stallQueue    = 10000
	maxStallCheck = time.Second
)

func (f *flowCtl) run() {
	pause := time.Duration(0)
	var stalled time.Time
	checkEvery := time.Duration(0)
	for {
		f.mu.Lock()
		for !f.stopped && f.total < f.threshold {
			f.cond.Wait()
			pause = 0
		}
		if f.stopped {
			f.mu.Unlock()
			return
		}
		n, dest, epoch := len(f.sizes), f.dest, f.epoch
		f.mu.Unlock()

		q, err := f.c.n.rpc.queueLen(dest, rpcTimeout)
		if err != nil || q < 0 {
			// A dead or unreachable owner: its DOWN ends the child.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if n > q {
			stalled = time.Time{}
		} else if stalled.IsZero() {
			stalled = time.Now()
		}
		if !stalled.IsZero() && time.Since(stalled) >= checkEvery && q <= stallQueue {
			f.mu.Lock()
			n = len(f.sizes) // counted before this request: see the type's comment
			f.mu.Unlock()
			if mine, err := f.c.n.rpc.pendingFrom(dest, f.c.self, rpcTimeout); err == nil && mine >= 0 {
				if mine < q {
					checkEvery = 0 // others' messages hold the queue: keep looking
				} else {
					checkEvery = min(max(2*checkEvery, 10*time.Millisecond), maxStallCheck)
				}
				q = mine
			}
			stalled = time.Now()
		}
		freed := 0
		f.mu.Lock()
		if f.epoch == epoch && n > q {
			k := n - q
			for _, s := range f.sizes[:k] {
				freed += s
			}
			f.sizes = f.sizes[k:]
			f.total -= freed
		}
		f.mu.Unlock()
		if freed > 0 {
			f.c.window.Ack(freed)
			pause = 0
			continue
		}
		// Nothing consumed yet: ask again a little later.
		pause = min(max(pause*2, 200*time.Microsecond), 50*time.Millisecond)
		time.Sleep(pause)
	}
}
