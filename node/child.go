package node

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ergo-services/ergo/etf"
	"github.com/ergo-services/ergo/gen"
	"github.com/protonstream/ps_port/host"
	"github.com/protonstream/ps_port/procctl"
)

var (
	atomData      = etf.Atom("data")
	atomErrorData = etf.Atom("error")
	atomEXIT      = etf.Atom("EXIT")
	atomNormal    = etf.Atom("normal")
)

// outKind says what an outItem sends.
type outKind int

const (
	outData    outKind = iota // {pid, {tag, bytes}} to the owner; counted by flow control
	outMsg                    // {pid, term} to the owner
	outRaw                    // the reply term to a call from (direct.go: callReply)
	outConnect                // {pid, :connected} to the old owner, then the new owner takes over
	outExit                   // {:EXIT, pid, reason} to the owner; last item
)

type outItem struct {
	kind outKind
	tag  etf.Atom
	data []byte // outData: the bytes; buf[headroom:]
	buf  []byte // outData: data with headroom bytes before it for the packet's head
	term etf.Term
	from callFrom // outRaw: the call
	pid  etf.Pid
}

// outQueue holds what a child sends, in order. Data in it is bounded by the
// child's window; other items are few. A goroutine sends what it holds
// (drain) while it holds anything, and ends when it is empty, so an idle
// child has none; at most one runs at a time, which keeps the order.
type outQueue struct {
	mu      sync.Mutex
	items   []outItem
	discard bool   // no more data: the owner closed the child or is gone
	running bool   // drain runs, or the queue is held (see release)
	ended   bool   // the exit was sent: nothing more goes out
	drain   func() // started on a goroutine when items arrive
}

// add queues it and starts drain if none runs; q.mu is held.
func (q *outQueue) add(it outItem) {
	if q.ended {
		return
	}
	q.items = append(q.items, it)
	if !q.running {
		q.running = true
		go q.drain()
	}
}

func (q *outQueue) push(it outItem) {
	q.mu.Lock()
	q.add(it)
	q.mu.Unlock()
}

// release lets drain start: a queue starts held until the child can send.
func (q *outQueue) release() {
	q.mu.Lock()
	q.running = false
	if len(q.items) > 0 {
		q.running = true
		go q.drain()
	}
	q.mu.Unlock()
}

// next takes the oldest item; false when there is none, and drain must end.
func (q *outQueue) next() (outItem, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 || q.ended {
		q.running = false
		q.items = nil // a burst's array is not kept
		return outItem{}, false
	}
	it := q.items[0]
	q.items[0] = outItem{}
	q.items = q.items[1:]
	if it.kind == outExit {
		q.ended = true
	}
	return it, true
}

// child is one OS process and the ergo process that stands for it.
type child struct {
	n      *Node
	req    *openRequest
	path   string
	loop   *loopProc
	proc   gen.Process
	self   etf.Pid
	s      *host.Session // the child's session: stdin rule, exit report
	pc     *procctl.Child
	pid    int // set by Started, before anything else can use it
	window *procctl.Window
	flow   *flowCtl // nil with flow: :ack

	out      outQueue
	finished chan struct{}
	exiting  func() // just before the exit is sent (set by Node.start)
	ended    func() // after the exit was sent (set by Node.start)

	// the sender's (one runs at a time, see outQueue)
	dest    etf.Pid   // where output goes: the owner as the sender knows it
	monitor etf.Ref   // the monitor of dest
	way     directWay // how messages to dest go (direct.go)

	mu        sync.Mutex // guards owner, closing
	owner     etf.Pid    // whose messages are obeyed
	closing   bool       // :close received
	ownerGone atomic.Bool
	exited    atomic.Bool // the OS process has ended (Exit)
	ackWarned atomic.Bool
}

// terminate takes the child's tree down as a port close does.
func (c *child) terminate() {
	c.s.Stop()
}

func newChild(n *Node, req *openRequest) *child {
	c := &child{n: n, req: req, owner: req.owner, dest: req.owner, finished: make(chan struct{})}
	c.out.running = true // held until start releases it
	c.out.drain = c.sender
	c.loop = newLoopProc(c.handle, nil)
	c.loop.inline = true // handle never blocks
	return c
}

// Stdout implements procctl.Sink.
func (c *child) Stdout(p []byte) error { return c.emit(atomData, p) }

// Stderr implements procctl.Sink.
func (c *child) Stderr(p []byte) error { return c.emit(atomErrorData, p) }

func (c *child) emit(tag etf.Atom, p []byte) error {
	c.out.mu.Lock()
	defer c.out.mu.Unlock()
	if c.out.discard {
		return nil // the window is closed: nothing to account for
	}
	// Room before the bytes for the packet's head (direct.go), so the
	// packet goes out in one write without another copy.
	buf := append(make([]byte, headroom, headroom+len(p)), p...)
	c.out.add(outItem{kind: outData, tag: tag, data: buf[headroom:], buf: buf})
	return nil
}

// handle runs on the ergo process's loop goroutine for every message.
func (c *child) handle(msg interface{}) {
	switch m := msg.(type) {
	case gen.MessageDown:
		c.mu.Lock()
		mine := m.Pid == c.owner
		c.mu.Unlock()
		if mine {
			c.ownerDown(downReason(m.Pid, m.Reason))
		}
	case exitSignal:
		c.mu.Lock()
		mine := m.from == c.owner
		c.mu.Unlock()
		if mine && m.reason != "normal" {
			c.n.log.Printf("child %d: exit signal %q from its owner: closing", c.pc.Pid(), m.reason)
			c.close(false)
		}
	case etf.Tuple:
		if from, req, ok := parseCall(m); ok {
			c.handleCall(from, req)
			return
		}
		if len(m) == 2 {
			if from, ok := m[0].(etf.Pid); ok {
				c.mu.Lock()
				owner := c.owner
				c.mu.Unlock()
				if from != owner {
					c.n.log.Printf("child %d: ignoring %s from %s, who is not its owner %s",
						c.pc.Pid(), describe(m[1]), from, owner)
					return
				}
				c.ownerMsg(m[1])
				return
			}
		}
		c.n.log.Printf("child %d: ignoring unexpected message %s", c.pc.Pid(), describe(m))
	default:
		c.n.log.Printf("child %d: ignoring unexpected message %s", c.pc.Pid(), describe(m))
	}
}

func (c *child) handleCall(from callFrom, req etf.Term) {
	var reply etf.Term
	switch {
	case isAtom(req, "$os_pid"):
		reply = c.pc.Pid()
	case isAtom(req, "$stdin_queued"):
		reply = c.pc.StdinQueued()
	default:
		if why, ok := tooLarge(req); ok {
			reply = errorTerm(etf.Tuple{etf.Atom("too_large"), []byte(why)})
			break
		}
		reply = errorTerm(etf.Tuple{etf.Atom("badcall"), req})
	}
	c.out.push(outItem{kind: outRaw, from: from, term: reply})
}

// errMsg queues {pid, {:error, reason, message}} for the owner.
func (c *child) errMsg(reason, format string, a ...interface{}) {
	text := fmt.Sprintf(format, a...)
	c.n.log.Printf("child %d: %s", c.pid, text)
	c.out.push(outItem{kind: outMsg, term: etf.Tuple{atomError, etf.Atom(reason), []byte(text)}})
}

func (c *child) ownerMsg(t etf.Term) {
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if closing {
		return // a closed port ignores what follows too
	}
	switch {
	case isAtom(t, "close"):
		c.close(true)
	case isAtom(t, "eof"):
		c.s.EOF()
	default:
		if why, ok := tooLarge(t); ok {
			c.errMsg("too_large", "%s", why)
			return
		}
		if cmd, ok := tagged(t, "command", 2); ok {
			c.command(cmd[1])
			return
		}
		if con, ok := tagged(t, "connect", 2); ok {
			newOwner, ok := con[1].(etf.Pid)
			if !ok {
				c.errMsg("badarg", "{:connect, new_owner}: want a pid, got %s", describe(con[1]))
				return
			}
			c.mu.Lock()
			c.owner = newOwner
			c.mu.Unlock()
			c.out.push(outItem{kind: outConnect, pid: newOwner})
			return
		}
		if sig, ok := tagged(t, "signal", 2); ok {
			n, ok := intOf(sig[1])
			if ok && c.s.Signal(n) == nil {
				return // sent, or its failure reported
			}
			c.errMsg("badarg", "{:signal, n}: %v, got %s", host.ErrBadSignal, describe(sig[1]))
			return
		}
		if ack, ok := tagged(t, "ack", 2); ok {
			n, ok := intOf(ack[1])
			if !ok || n < 0 {
				c.errMsg("badarg", "{:ack, bytes}: want a non-negative integer, got %s", describe(ack[1]))
				return
			}
			if c.flow != nil {
				if c.ackWarned.CompareAndSwap(false, true) {
					c.n.log.Printf("child %d: ignoring {:ack, _}: it was opened with flow: :queue_len", c.pc.Pid())
				}
				return
			}
			c.s.Ack(n)
			return
		}
		c.errMsg("badarg", "unknown message %s", describe(t))
	}
}

// command queues a {:command, data} under the host's stdin rule (accepted
// or refused whole, docs/node.md), which reports refusals.
func (c *child) command(data etf.Term) {
	size := iodataSize(data, 0)
	if size < 0 {
		c.errMsg("badarg", "{:command, data}: data is not iodata: %s", describe(data))
		return
	}
	b, err := appendIodata(make([]byte, 0, size), data, 0)
	if err != nil {
		c.errMsg("badarg", "{:command, data}: %v", err)
		return
	}
	c.s.Command(b)
}

// close terminates the child as a port close does; with reply, the owner
// gets {pid, :closed} first. Nothing of the child's output follows.
func (c *child) close(reply bool) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.closing = true
	c.mu.Unlock()
	c.out.mu.Lock()
	c.out.discard = true
	if reply {
		c.out.add(outItem{kind: outMsg, term: etf.Atom("closed")})
	}
	c.out.mu.Unlock()
	c.s.Abandon()
}

// downReason says in words why the owner is gone, from the reason of its
// DOWN. ergo gives the reason as a string: an atom's name, or a tuple
// flattened by fmt (ergo's own; {shutdown, x} reads "[shutdown x]").
func downReason(owner etf.Pid, reason string) string {
	switch reason {
	case "noconnection":
		// Also what a normal exit looks like when the owner's node halts
		// or closes the connection first: its processes send no DOWN.
		return fmt.Sprintf("the connection to owner %s's node %s is gone (noconnection)", owner, owner.Node)
	case "noproc":
		return "owner " + owner.String() + " was not alive when the child started (noproc)"
	}
	return "owner " + owner.String() + " exited with reason " + reason
}

// ownerDown terminates the child because nobody owns it any more. Safe from
// any goroutine. A child that has already ended needs nothing: a DOWN that
// arrives after its exit (the owner took {:EXIT, pid, reason} and exited)
// is not news, and is not logged.
func (c *child) ownerDown(why string) {
	if !c.ownerGone.CompareAndSwap(false, true) {
		return
	}
	if c.exited.Load() {
		return
	}
	c.n.log.Printf("child %d (%s): %s; terminating it", c.pc.Pid(), c.path, why)
	c.out.mu.Lock()
	c.out.discard = true
	c.out.mu.Unlock()
	c.s.Abandon()
}

// currentOwner is the owner as the loop sees it.
func (c *child) currentOwner() etf.Pid {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.owner
}

// sender sends what the child's queue holds, in order, until it is empty.
// It runs on a goroutine of its own (outQueue) because sending to a node
// waits while that connection's send queue is full. dest and monitor are
// its own: one sender runs at a time.
func (c *child) sender() {
	for {
		it, ok := c.out.next()
		if !ok {
			return
		}
		gone := c.ownerGone.Load()
		switch it.kind {
		case outData:
			if gone {
				continue
			}
			c.sendData(it.tag, it.data, it.buf)
			if c.flow != nil {
				_, direct := c.dist()
				c.flow.sent(len(it.data), direct)
			}
		case outMsg:
			if !gone {
				c.sendTerm(etf.Tuple{c.self, it.term})
			}
		case outRaw:
			c.callReply(it.from, it.term)
		case outConnect:
			if !gone {
				c.sendTerm(etf.Tuple{c.self, etf.Atom("connected")})
			}
			old := c.dest
			c.dest = it.pid
			if c.flow != nil {
				c.flow.reset(c.dest)
			}
			c.proc.DemonitorProcess(c.monitor)
			c.n.dir.watch(c.dest, c.loop)
			c.monitor = c.proc.MonitorProcess(c.dest)
			if old != c.dest {
				c.n.dir.unwatch(old, c.loop)
			}
		case outExit:
			c.exiting()
			if !gone {
				c.sendTerm(etf.Tuple{atomEXIT, c.self, it.term})
				// ergo keeps a monitor until its target dies, also when
				// the process that set it exits first: without this, a
				// long-lived owner collected a monitor per child, in
				// ergo and on its own node.
				c.proc.DemonitorProcess(c.monitor)
			}
			c.ended()
			return
		}
	}
}

func (c *child) send(to interface{}, msg etf.Term) {
	if err := c.proc.Send(to, msg); err != nil {
		c.n.log.Printf("child %d: sending to %v: %v", c.pc.Pid(), to, err)
	}
}

// Started implements host.Output: the pid is known before the child can
// write anything.
func (c *child) Started(pid int) { c.pid = pid }

// Error implements host.Output: a refused request (stdin overflow, stdin
// closed, a signal not sent) goes to the owner and the log.
func (c *child) Error(reason, message string) { c.errMsg(reason, "%s", message) }

// StdinWritten implements host.Output: stdin credit for an owner that
// opened with stdin_ack: true, queued in order with the child's output.
func (c *child) StdinWritten(n int64) {
	c.out.push(outItem{kind: outMsg, term: etf.Tuple{etf.Atom("stdin_written"), n}})
}

// OOMKilled implements host.Output.
func (c *child) OOMKilled(n uint64) {
	c.n.log.Printf("child %d: its cgroup recorded %d OOM kills", c.pid, n)
	c.out.push(outItem{kind: outMsg, term: etf.Tuple{etf.Atom("oom_killed"), int64(n)}})
}

// Exit implements host.Output: the child, its tree and its cgroup are gone
// and all its output is queued; the exit goes last.
func (c *child) Exit(st procctl.ExitStatus) {
	c.exited.Store(true)
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	var reason etf.Term
	switch {
	case closing || (st.Signal == 0 && st.Code == 0):
		reason = atomNormal
	case st.Signal != 0:
		reason = etf.Tuple{etf.Atom("signal"), int(st.Signal)}
	default:
		reason = etf.Tuple{etf.Atom("exit_status"), st.Code}
	}
	// The exit goes out from this goroutine when nothing waits ahead of
	// it (a child's output is usually all sent by now): starting a sender
	// goroutine for it cost a hand-off between threads on every child's
	// end, before its owner could hear of it.
	c.out.mu.Lock()
	if c.out.running || len(c.out.items) > 0 || c.out.ended {
		c.out.add(outItem{kind: outExit, term: reason})
		c.out.mu.Unlock()
		return
	}
	c.out.running = true
	c.out.items = append(c.out.items, outItem{kind: outExit, term: reason})
	c.out.mu.Unlock()
	c.sender()
}

// rpcTimeout bounds one rex call.
const rpcTimeout = 10 * time.Second
