package node

import (
	"sync"
	"time"

	"github.com/ergo-services/ergo/etf"
)

// flowCtl is flow control by the owner's message_queue_len (flow:
// :queue_len). It remembers the size of every data message sent to the
// owner and not yet known to be consumed. When they add up to a quarter of
// the window it asks the owner's node for process_info(Owner,
// message_queue_len) through rex. That request travels on the same
// connection as the data, after it (one protocol handler keeps order), so
// every message counted before it was asked is in the owner's queue or
// consumed by the time it is answered. With n messages counted in all
// before the request and a queue of q, at least the oldest n-q were
// consumed: their bytes go back to the window. Other messages in the
// owner's queue only make this more cautious.
//
// Two polls may be out at once (the second once another quarter window was
// sent after the first), so the window does not sit idle for a whole round
// trip; counts are absolute, so answers may come in any order. No goroutine
// waits while nothing is sent: each poll runs on a goroutine of its own,
// and a poll that freed nothing is retried from a timer.
type flowCtl struct {
	c *child

	mu         sync.Mutex
	sizes      []int // sizes of the messages not known consumed, oldest first
	total      int   // their sum
	counted    int   // messages counted since the start (absolute)
	consumed   int   // of which known consumed: sizes[0] is message number consumed
	sentBytes  int   // bytes counted since the start
	polledAt   int   // sentBytes when the last poll was asked
	inflight   int   // polls out
	dest       etf.Pid
	direct     bool // the last data went straight to dest's connection: so may polls
	epoch      int  // bumped when the owner changes
	stopped    bool // the child is done
	waiting    bool // a retry timer is armed
	timer      *time.Timer
	threshold  int
	pause      time.Duration // retry delay after a poll that freed nothing
	stalled    time.Time     // since when polls free nothing
	checkEvery time.Duration // how long stalled before the queue is looked at
}

// maxInflight is how many polls may be out at once.
const maxInflight = 2

func newFlowCtl(c *child, window int) *flowCtl {
	return &flowCtl{c: c, dest: c.req.owner, threshold: max(1, window/4)}
}

// sent counts a data message of n bytes handed to the connection;
// direct: written to it straight (direct.go), not through ergo.
func (f *flowCtl) sent(n int, direct bool) {
	f.mu.Lock()
	f.direct = direct
	f.sizes = append(f.sizes, n)
	f.total += n
	f.counted++
	f.sentBytes += n
	f.maybePoll()
	f.mu.Unlock()
}

// maybePoll starts a poll when one is due; f.mu is held.
func (f *flowCtl) maybePoll() {
	if f.stopped || f.waiting || f.total < f.threshold {
		return
	}
	if f.inflight >= maxInflight || (f.inflight > 0 && f.sentBytes-f.polledAt < f.threshold) {
		return
	}
	f.inflight++
	f.polledAt = f.sentBytes
	go f.poll(f.counted, f.epoch, f.dest, f.direct)
}

// reset starts over with a new owner: what the old one holds is its own.
func (f *flowCtl) reset(dest etf.Pid) {
	f.mu.Lock()
	total := f.total
	f.sizes, f.total, f.dest, f.direct = nil, 0, dest, false
	f.consumed = f.counted
	f.epoch++
	f.stalled, f.checkEvery, f.pause = time.Time{}, 0, 0
	f.mu.Unlock()
	f.c.window.Ack(total)
}

func (f *flowCtl) stop() {
	f.mu.Lock()
	f.stopped = true
	if f.timer != nil {
		f.timer.Stop()
	}
	f.sizes = nil
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

// poll asks for the owner's queue length; n messages were counted before
// the request. direct: the request may go straight to the owner's
// connection, behind the data (which went that way).
func (f *flowCtl) poll(n, epoch int, dest etf.Pid, direct bool) {
	rpc := f.c.n.rpc
	q, err := rpc.queueLen(dest, direct, rpcTimeout)
	if err != nil || q < 0 {
		// A dead or unreachable owner: its DOWN ends the child.
		f.done(epoch, 0, 100*time.Millisecond)
		return
	}
	freed := f.free(epoch, n-q)
	if freed == 0 {
		f.mu.Lock()
		now := time.Now()
		if f.stalled.IsZero() {
			f.stalled = now
		}
		look := f.epoch == epoch && !f.stopped && now.Sub(f.stalled) >= f.checkEvery && q <= stallQueue
		n = f.counted // counted before the next request: see the type's comment
		f.mu.Unlock()
		if look {
			if mine, err := rpc.pendingFrom(dest, f.c.self, direct, rpcTimeout); err == nil && mine >= 0 {
				freed = f.free(epoch, n-mine)
				f.mu.Lock()
				if mine < q {
					f.checkEvery = 0 // others' messages hold the queue: keep looking
				} else {
					f.checkEvery = min(max(2*f.checkEvery, 10*time.Millisecond), maxStallCheck)
				}
				f.stalled = time.Now()
				f.mu.Unlock()
			}
		}
	}
	if freed > 0 {
		f.done(epoch, freed, 0)
		return
	}
	// Nothing consumed yet: ask again a little later.
	f.mu.Lock()
	f.pause = min(max(f.pause*2, 200*time.Microsecond), 50*time.Millisecond)
	pause := f.pause
	f.mu.Unlock()
	f.done(epoch, 0, pause)
}

// free takes the messages before number upTo as consumed and returns their
// bytes, which go back to the window.
func (f *flowCtl) free(epoch, upTo int) int {
	f.mu.Lock()
	freed := 0
	if f.epoch == epoch && !f.stopped && upTo > f.consumed {
		k := min(upTo-f.consumed, len(f.sizes))
		for _, s := range f.sizes[:k] {
			freed += s
		}
		f.sizes = f.sizes[k:]
		if len(f.sizes) == 0 {
			f.sizes = nil // a burst's array is not kept
		}
		f.total -= freed
		f.consumed += k
		f.stalled, f.pause = time.Time{}, 0
	}
	f.mu.Unlock()
	if freed > 0 {
		f.c.window.Ack(freed)
	}
	return freed
}

// done ends a poll: the next one starts now when due, or after retry.
func (f *flowCtl) done(epoch, freed int, retry time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inflight--
	if retry > 0 && f.epoch == epoch && !f.stopped && f.inflight == 0 {
		f.waiting = true
		f.timer = time.AfterFunc(retry, func() {
			f.mu.Lock()
			f.waiting = false
			f.maybePoll()
			f.mu.Unlock()
		})
		return
	}
	f.maybePoll()
}
