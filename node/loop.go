package node

import (
	"sync"

	"github.com/ergo-services/ergo/etf"
	"github.com/ergo-services/ergo/gen"
)

// Mailbox sizes (ergo's channel of entries; see directory for why they are
// small). A child's mailbox gets the DOWN of its owner monitor (one at a
// time: :connect moves it) and nothing else that is not local; the
// singletons get more, since ergo's own processes and local sends may
// address them.
const (
	childMailbox = 16
	mainMailbox  = 1024
)

// exitSignal is an exit signal from a linked or exiting process, turned into
// a message by trapping exits.
type exitSignal struct {
	from   etf.Pid
	reason string
}

// loopProc is an ergo process behavior whose loop hands every message to
// handle as soon as it arrives: those of ergo's mailbox, and those that
// directRouter put in its inbox. handle runs on the loop goroutine and must
// not block: anything that may wait (sending to a remote node waits when
// the connection's send queue is full) goes to another goroutine.
type loopProc struct {
	handle func(msg interface{})
	// onStart is called on the loop goroutine before the first message.
	onStart func(p gen.Process)
	stop    chan string

	inbox inbox
	// direct: deliver runs handle on the caller's goroutine (the
	// connection's reader) instead of queueing; only for a handle that
	// never blocks and needs no order with its mailbox (rpcClient's).
	direct bool
	// inline: deliver runs handle on the caller's goroutine when nothing
	// waits in the inbox and the loop is not handling anything (a child's
	// handle never blocks): an owner's command reaches the child's stdin
	// without waking the loop's goroutine. run is held while handle runs,
	// on either goroutine, and while the loop takes a batch from the
	// inbox, so a message handled inline never overtakes one taken before.
	inline bool
	run    sync.Mutex

	// end is held while ergo links a peer to the process
	// (directRouter.RouteLink) and when ProcessLoop returns, which sets
	// ended: ergo sends the exit signals of a process's links after its
	// loop has returned.
	end   sync.Mutex
	ended bool
}

func newLoopProc(handle func(interface{}), onStart func(gen.Process)) *loopProc {
	l := &loopProc{handle: handle, onStart: onStart, stop: make(chan string, 1)}
	l.inbox.ready = make(chan struct{}, 1)
	return l
}

// deliver queues msg for handle; false once the loop has ended.
func (l *loopProc) deliver(msg etf.Term) bool {
	if l.direct {
		l.handle(msg)
		return true
	}
	if l.inline && l.run.TryLock() {
		if l.inbox.idle() {
			l.handle(msg)
			l.run.Unlock()
			return true
		}
		l.run.Unlock()
	}
	return l.inbox.push(msg)
}

// ProcessInit implements gen.ProcessBehavior.
func (l *loopProc) ProcessInit(p gen.Process, args ...etf.Term) (gen.ProcessState, error) {
	p.SetTrapExit(true) // exit signals arrive as exitSignal, never kill silently
	return gen.ProcessState{Process: p, State: l}, nil
}

// ProcessLoop implements gen.ProcessBehavior.
func (l *loopProc) ProcessLoop(ps gen.ProcessState, started chan<- bool) string {
	ch := ps.ProcessChannels()
	if l.onStart != nil {
		l.onStart(ps.Process)
	}
	started <- true
	defer l.returned()
	defer l.inbox.close()
	var batch []etf.Term
	// drain handles what the inbox holds. A mailbox message (an owner's
	// DOWN) or an exit signal is handled after it: the connection's reader
	// queued the messages its sender sent before that into the inbox
	// first, and they keep coming first.
	// l.run is held.
	drain := func() {
		batch = l.inbox.take(batch)
		for i, m := range batch {
			l.handle(m)
			batch[i] = nil
		}
	}
	for {
		select {
		case <-l.inbox.ready:
			l.run.Lock()
			drain()
			l.run.Unlock()
		case m := <-ch.Mailbox:
			l.run.Lock()
			drain()
			l.handle(m.Message)
			l.run.Unlock()
		case ex := <-ch.GracefulExit:
			l.run.Lock()
			drain()
			l.handle(exitSignal{from: ex.From, reason: ex.Reason})
			l.run.Unlock()
		case d := <-ch.Direct:
			ps.PutSyncReply(d.Ref, nil, errUnsupported)
		case reason := <-l.stop:
			return reason
		case <-ps.Context().Done():
			return "kill"
		}
	}
}

// returned notes that ProcessLoop has returned; it waits for a link that
// ergo is adding (see directRouter.RouteLink).
func (l *loopProc) returned() {
	l.end.Lock()
	l.ended = true
	l.end.Unlock()
}

// Stop ends the process with reason (from any goroutine, once).
func (l *loopProc) Stop(reason string) {
	select {
	case l.stop <- reason:
	default:
	}
}

// inbox is a loopProc's queue of messages from the network: unbounded (an
// owner's commands are bounded by stdin_limit once handled, and the loop
// takes them as they come), in arrival order, and small again once
// drained.
type inbox struct {
	mu     sync.Mutex
	items  []etf.Term
	closed bool
	ready  chan struct{} // holds a token while items is not empty
}

func (b *inbox) push(m etf.Term) bool {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return false
	}
	b.items = append(b.items, m)
	first := len(b.items) == 1
	b.mu.Unlock()
	if first {
		select {
		case b.ready <- struct{}{}:
		default:
		}
	}
	return true
}

// idle reports whether nothing waits in the inbox and it is open.
func (b *inbox) idle() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.items) == 0 && !b.closed
}

// take swaps the queued messages for spare (emptied by the caller) and
// returns them.
func (b *inbox) take(spare []etf.Term) []etf.Term {
	if cap(spare) > maxSpare {
		spare = nil // a burst's backing array is not kept
	}
	b.mu.Lock()
	items := b.items
	b.items = spare[:0]
	b.mu.Unlock()
	return items
}

// maxSpare is the largest backing array an inbox keeps between bursts.
const maxSpare = 256

func (b *inbox) close() {
	b.mu.Lock()
	b.closed = true
	b.items = nil
	b.mu.Unlock()
}

type unsupportedError struct{}

func (unsupportedError) Error() string { return "unsupported" }

var errUnsupported = unsupportedError{}
