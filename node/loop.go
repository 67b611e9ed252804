package node

import (
	"github.com/ergo-services/ergo/etf"
	"github.com/ergo-services/ergo/gen"
)

// mailboxSize is the ergo mailbox of every process here: the largest ergo
// allows. ergo drops a message (with a log line) when a mailbox is full, so
// each process's loop only moves messages out of it and never blocks on
// the network (see loopProc).
const mailboxSize = 65535

// exitSignal is an exit signal from a linked or exiting process, turned into
// a message by trapping exits.
type exitSignal struct {
	from   etf.Pid
	reason string
}

// loopProc is an ergo process behavior whose loop hands every message to
// handle as soon as it arrives. handle runs on the loop goroutine and must
// not block: anything that may wait (sending to a remote node waits when
// the connection's send queue is full) goes to another goroutine.
type loopProc struct {
	handle func(msg interface{})
	// onStart is called on the loop goroutine before the first message.
	onStart func(p gen.Process)
	stop    chan string
}

func newLoopProc(handle func(interface{}), onStart func(gen.Process)) *loopProc {
	return &loopProc{handle: handle, onStart: onStart, stop: make(chan string, 1)}
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
	for {
		select {
		case m := <-ch.Mailbox:
			l.handle(m.Message)
		case ex := <-ch.GracefulExit:
			l.handle(exitSignal{from: ex.From, reason: ex.Reason})
		case d := <-ch.Direct:
			ps.PutSyncReply(d.Ref, nil, errUnsupported)
		case reason := <-l.stop:
			return reason
		case <-ps.Context().Done():
			return "kill"
		}
	}
}

// Stop ends the process with reason (from any goroutine, once).
func (l *loopProc) Stop(reason string) {
	select {
	case l.stop <- reason:
	default:
	}
}

type unsupportedError struct{}

func (unsupportedError) Error() string { return "unsupported" }

var errUnsupported = unsupportedError{}
