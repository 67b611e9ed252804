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
// waits for a poll: it is sent by the goroutine that sent the data (or,
// when an answer makes the next one due, by a short goroutine; a poll that
// freed nothing is retried from a timer), and its answer is taken on the
// connection's reader, which frees the window there (a goroutine woken per
// answer cost a thread wake-up per window sent).
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
	counting   bool // others' messages sit in the owner's queue: polls count (see stallQueue)
	warned     bool // the owner's queue was too long to count, and the log said so
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
	p, due := f.maybePoll()
	f.mu.Unlock()
	if due {
		f.start(p) // the child's sender or pump: it may wait for the network
	}
}

// pollReq is a poll that is due: n messages were counted before it.
// direct: it may go straight to the owner's connection, behind the data
// (which went that way).
type pollReq struct {
	n, epoch int
	dest     etf.Pid
	direct   bool
	count    bool // count this child's messages, not just the queue's
}

// maybePoll returns the poll that is due, if any, counted as out; f.mu is
// held. The caller starts it once f.mu is released.
func (f *flowCtl) maybePoll() (pollReq, bool) {
	if f.stopped || f.waiting || f.total < f.threshold {
		return pollReq{}, false
	}
	if f.inflight >= maxInflight || (f.inflight > 0 && f.sentBytes-f.polledAt < f.threshold) {
		return pollReq{}, false
	}
	f.inflight++
	f.polledAt = f.sentBytes
	return pollReq{n: f.counted, epoch: f.epoch, dest: f.dest, direct: f.direct, count: f.counting}, true
}

// memberSnap is what a count sent now can free of a counting child's: the
// messages counted before it (see the type's comment).
type memberSnap struct {
	f        *flowCtl
	n, epoch int
	direct   bool
}

// snap takes f's memberSnap for a count of owner; false when f is done or
// no longer sends to owner.
func (f *flowCtl) snap(owner etf.Pid) (memberSnap, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped || f.dest != owner || f.counted == f.consumed {
		return memberSnap{}, false
	}
	return memberSnap{f: f, n: f.counted, epoch: f.epoch, direct: f.direct}, true
}

// setCounting turns counting on or off, and f's membership of its owner's
// counts with it. The membership changes under f.mu (which the counts never
// take while they hold theirs), so a stop or reset cannot come between and
// leave f a member.
func (f *flowCtl) setCounting(epoch int, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.epoch != epoch || f.stopped || f.counting == on {
		return
	}
	f.counting = on
	f.c.n.rpc.setMember(f.dest, f, on)
}

// reset starts over with a new owner: what the old one holds is its own.
func (f *flowCtl) reset(dest etf.Pid) {
	f.mu.Lock()
	if f.counting {
		f.c.n.rpc.setMember(f.dest, f, false)
	}
	total := f.total
	f.sizes, f.total, f.dest, f.direct = nil, 0, dest, false
	f.consumed = f.counted
	f.epoch++
	f.stalled, f.checkEvery, f.pause, f.counting = time.Time{}, 0, 0, false
	f.mu.Unlock()
	f.c.window.Ack(total)
}

func (f *flowCtl) stop() {
	f.mu.Lock()
	if f.counting {
		f.c.n.rpc.setMember(f.dest, f, false)
	}
	f.stopped = true
	if f.timer != nil {
		f.timer.Stop()
	}
	f.sizes = nil
	f.mu.Unlock()
}

// When a poll frees nothing and the owner's queue holds at most stallQueue
// messages, the messages themselves are counted (on the owner's node, see
// count.go): an owner that selectively receives from one child
// while another child's output waits in its queue would otherwise stall the
// first forever (queue_len counts the other child's messages too), and so
// would one that leaves a message it does not want in its queue (an
// {'EXIT', ...} of a trapping owner, a late reply). While a count finds
// others' messages, every poll counts instead of asking the queue's length:
// a poll that can free nothing and a count after it would take two round
// trips per window, and halve a stream. While counts find only the child's
// own messages (an owner that is just slow), polls ask the length again and
// counts become ever rarer, down to once a second, because each copies the
// queue on the owner's node. A count costs the owner's node about what one
// selective receive past the same queue costs its owner; above stallQueue
// (a copy of about 100 MB) the child waits for the queue to shrink, and
// says so once.
const (
	stallQueue    = 1_000_000
	maxStallCheck = time.Second
)

// start sends poll p: the owner's queue length, or the count of this
// child's messages in it, asked of its node. Nothing waits for the answer:
// polled or countAnswered takes it on the connection's reader.
func (f *flowCtl) start(p pollReq) {
	if p.count {
		f.count(p)
		return
	}
	f.c.n.rpc.queueLen(p.dest, p.direct, rpcTimeout, func(q int, err error) { f.polled(p, q, err) })
}

// count sends poll p as a count of this child's messages in the queue.
func (f *flowCtl) count(p pollReq) {
	f.c.n.rpc.count(p.dest, countReq{child: f.c.self, direct: p.direct, done: func(q, mine int, err error) int {
		return f.countAnswered(p, q, mine, err)
	}})
}

// polled takes p's answer, a queue of q. It runs on the connection's
// reader, which must not wait for the network: what would (another poll,
// a count) goes to a goroutine.
func (f *flowCtl) polled(p pollReq, q int, err error) {
	if err != nil || q < 0 {
		// A dead or unreachable owner: its DOWN ends the child.
		f.done(p.epoch, 0, 100*time.Millisecond)
		return
	}
	if freed := f.free(p.epoch, p.n-q); freed > 0 {
		f.done(p.epoch, freed, 0)
		return
	}
	f.mu.Lock()
	now := time.Now()
	if f.stalled.IsZero() {
		f.stalled = now
	}
	look := f.epoch == p.epoch && !f.stopped && now.Sub(f.stalled) >= f.checkEvery && q <= stallQueue
	p.n = f.counted // counted before the count is asked: see the type's comment
	warn := q > stallQueue && !f.warned
	f.warned = f.warned || warn
	f.mu.Unlock()
	if warn {
		f.c.n.log.Printf("child %d (%s): owner %s holds %d messages, more than the %d flow control counts; "+
			"the child's output waits until the owner's queue shrinks (or use flow: :ack)",
			f.c.pc.Pid(), f.c.path, p.dest, q, stallQueue)
	}
	if look {
		go f.count(p) // p stays out until the count is answered
		return
	}
	f.retryLater(p.epoch)
}

// countAnswered takes the answer to a count asked as poll p: a queue of q
// messages, mine of them this child's. It returns the bytes freed.
func (f *flowCtl) countAnswered(p pollReq, q, mine int, err error) int {
	if err != nil || q < 0 {
		f.done(p.epoch, 0, 100*time.Millisecond)
		return 0
	}
	freed := f.free(p.epoch, p.n-mine)
	f.setCounting(p.epoch, mine < q && q <= stallQueue)
	f.mu.Lock()
	if f.epoch == p.epoch {
		if mine < q {
			f.checkEvery = 0 // others' messages hold the queue: keep counting
		} else {
			f.checkEvery = min(max(2*f.checkEvery, 10*time.Millisecond), maxStallCheck)
		}
		f.stalled = time.Now()
	}
	f.mu.Unlock()
	if freed > 0 {
		f.done(p.epoch, freed, 0)
		return freed
	}
	f.retryLater(p.epoch)
	return 0
}

// retryLater ends a poll that freed nothing: ask again a little later.
func (f *flowCtl) retryLater(epoch int) {
	f.mu.Lock()
	maxPause := 50 * time.Millisecond
	if f.counting {
		maxPause = 10 * time.Millisecond
	}
	f.pause = min(max(f.pause*2, 200*time.Microsecond), maxPause)
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

// done ends a poll: the next one starts now when due, or after retry. It
// may run on the connection's reader, so the next poll is sent from
// another goroutine.
func (f *flowCtl) done(epoch, freed int, retry time.Duration) {
	f.mu.Lock()
	f.inflight--
	// No retry while what is out is below a poll's due (a count for another
	// child of the owner freed it meanwhile): the next send polls.
	if retry > 0 && f.epoch == epoch && !f.stopped && f.inflight == 0 && f.total >= f.threshold {
		f.waiting = true
		f.timer = time.AfterFunc(retry, func() {
			f.mu.Lock()
			f.waiting = false
			p, due := f.maybePoll()
			f.mu.Unlock()
			if due {
				f.start(p)
			}
		})
		f.mu.Unlock()
		return
	}
	p, due := f.maybePoll()
	f.mu.Unlock()
	if due {
		go f.start(p)
	}
}
