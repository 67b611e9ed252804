package node

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ergo-services/ergo/etf"
	"github.com/ergo-services/ergo/gen"
	"github.com/protonstream/ps_port/otpdist"
)

// rpcClient calls functions on other nodes through their rex server, as
// rpc:call/4 does: {'$gen_call', {Self, Ref}, {call, M, F, A, user}} to
// {rex, Node}, answered with {Ref, Result}; or as rpc:block_call/4 does
// ({block_call, ...}), which rex runs itself instead of in a process it
// spawns for the call: for a BIF that answers at once (flow control's
// message_queue_len, thousands of times per second while a child streams).
// One ergo process serves every call; nobody waits for an answer: it goes
// to the caller's function (callAsync).
type rpcClient struct {
	loop *loopProc
	proc gen.Process
	// links, when set, has the connections a request may be written to
	// directly (otpdist.Direct), skipping ergo's sender goroutine and its
	// flusher's timer: two goroutine hand-offs per request.
	links   *otpdist.Links
	selfEnc []byte // proc's pid, encoded (set with links)

	mu      sync.Mutex
	pending map[etf.Ref]pendingCall

	counts ownerCounts // see count.go
}

// pendingCall is where a call's answer goes, with the timer that ends it.
type pendingCall struct {
	done  func(etf.Term, error)
	timer *time.Timer
	node  string // whom done's call went to
}

var errRPCTimeout = errors.New("rpc timed out")

func newRPCClient() *rpcClient {
	c := &rpcClient{pending: make(map[etf.Ref]pendingCall)}
	c.counts.owners = make(map[etf.Pid]*ownerCount)
	c.loop = newLoopProc(c.handle, nil)
	// A reply wakes its caller straight from the connection's reader: one
	// goroutine hand-off less on flow control's round trip.
	c.loop.direct = true
	return c
}

func (c *rpcClient) handle(msg interface{}) {
	tu, ok := msg.(etf.Tuple)
	if !ok || len(tu) != 2 {
		return
	}
	ref, ok := tu[0].(etf.Ref)
	if !ok {
		return
	}
	c.mu.Lock()
	pc, ok := c.pending[ref]
	delete(c.pending, ref)
	c.mu.Unlock()
	if ok {
		pc.timer.Stop()
		pc.done(rpcResult(pc.node, tu[1]))
	}
}

// rpcResult is a rex answer as callAsync's done gets it.
func rpcResult(node string, r etf.Term) (etf.Term, error) {
	if tu, ok := r.(etf.Tuple); ok && len(tu) == 2 && isAtom(tu[0], "badrpc") {
		return nil, fmt.Errorf("rpc to %s: badrpc %s", node, describe(tu[1]))
	}
	return r, nil
}

// callAsync runs M:F(A...) on node: done gets the result or the error,
// once, on the connection's reader (which must not block: done may not
// send to the network) or, past timeout, on a timer's goroutine. The
// request is sent on the caller's goroutine, which may wait for room on the
// connection. direct: the request may be written straight to node's
// connection (the caller's messages to that node that it must follow went
// the same way, or are on the wire). block: rex runs it itself
// (rpc:block_call/4), for functions that return at once.
func (c *rpcClient) callAsync(node string, direct, block bool, m, f string, args etf.List,
	timeout time.Duration, done func(etf.Term, error)) {
	ref := c.proc.MakeRef()
	c.mu.Lock()
	c.pending[ref] = pendingCall{done: done, node: node,
		timer: time.AfterFunc(timeout, func() { c.abandon(ref, errRPCTimeout) })}
	c.mu.Unlock()
	if err := c.send(node, direct, c.request(ref, block, m, f, args)); err != nil {
		c.abandon(ref, fmt.Errorf("rpc to %s: %w", node, err))
	}
}

// abandon ends callAsync's call ref with err, unless its answer came.
func (c *rpcClient) abandon(ref etf.Ref, err error) {
	c.mu.Lock()
	pc, ok := c.pending[ref]
	delete(c.pending, ref)
	c.mu.Unlock()
	if ok {
		pc.timer.Stop()
		pc.done(nil, err)
	}
}

// request is the $gen_call to rex for M:F(A...) with tag ref.
func (c *rpcClient) request(ref etf.Ref, block bool, m, f string, args etf.List) etf.Term {
	kind := "call"
	if block {
		kind = "block_call"
	}
	return etf.Tuple{etf.Atom("$gen_call"), etf.Tuple{c.proc.Self(), ref},
		etf.Tuple{etf.Atom(kind), etf.Atom(m), etf.Atom(f), args, etf.Atom("user")}}
}

// send sends req to rex on node: written to node's connection when direct
// and ergo serves one, through ergo otherwise.
func (c *rpcClient) send(node string, direct bool, req etf.Term) error {
	if direct && c.links != nil && c.selfEnc != nil {
		if dc := c.links.Direct(node); dc != nil {
			body, err := encodeTerm(req)
			if err != nil {
				return err
			}
			return dc.WriteDirect(otpdist.RegSendPacket(c.selfEnc, "rex", body))
		}
	}
	return c.proc.Send(gen.ProcessID{Name: "rex", Node: node}, req)
}

// queueLen asks for the message_queue_len of pid and gives done the
// answer, -1 when pid is dead (see callAsync for where done runs).
func (c *rpcClient) queueLen(pid etf.Pid, direct bool, timeout time.Duration, done func(int, error)) {
	c.callAsync(string(pid.Node), direct, true, "erlang", "process_info",
		etf.List{pid, etf.Atom("message_queue_len")}, timeout, func(r etf.Term, err error) {
			done(queueLenOf(r, err))
		})
}

// queueLenOf reads process_info's answer for message_queue_len.
func queueLenOf(r etf.Term, err error) (int, error) {
	if err != nil {
		return 0, err
	}
	if isAtom(r, "undefined") {
		return -1, nil
	}
	if tu, ok := r.(etf.Tuple); ok && len(tu) == 2 {
		if n, ok := intOf(tu[1]); ok {
			return int(n), nil
		}
	}
	return 0, fmt.Errorf("process_info answered %s", describe(r))
}
