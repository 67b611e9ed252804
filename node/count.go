package node

import (
	"fmt"
	"sync"
	"time"

	"github.com/ergo-services/ergo/etf"
)

// A count looks at an owner's queue on the owner's node and answers, for
// flow control (flow.go), how many messages it holds and how many of them
// are data from each child of this node ({child, {data | error, binary}}).
// It runs as erl_eval:expr/5, through rex, of
//
//	case erlang:process_info(P, messages) of
//	    {messages, L} -> {length(L), ets:match_spec_run(L, ets:match_spec_compile(MS))};
//	    undefined -> undefined
//	end
//
// with MS = [{{'$1', {'$2', '_'}}, [Ours and (data or error)], ['$1']}]: the
// runtime's match-spec engine picks the senders of this node's data
// messages, and only they cross the network, not the messages (whose data
// is the children's own output). rex spawns a process for it (a plain call):
// copying a long queue would hold rex up.
//
// The children of one owner share its queue, so one count answers for all
// of them: an owner has at most one count out, and the children that ask
// meanwhile wait for the next, which starts when it comes back. Counted per
// child, 400 children streaming to one owner made its node copy their
// ~3 000 queued messages once per child and window (16 s of its CPU for
// 160 MB); 1 000 of them ran it out of memory.

// ownerCounts has the counts out, by owner. Its mu may be taken under a
// flowCtl's (setMember), never the other way round: members are snapped
// and freed after it is released.
type ownerCounts struct {
	mu     sync.Mutex
	owners map[etf.Pid]*ownerCount
	// call sends a count: rpcClient.callAsync, or a test's.
	call func(node string, direct, block bool, m, f string, args etf.List,
		timeout time.Duration, done func(etf.Term, error))
}

// ownerCount is one owner's: whether a count is out, who waits for the
// next, and its children that count (flowCtl.counting): every count also
// frees what it shows of theirs, so a child whose owner turns to it after
// reading another does not sit out its retry pause.
type ownerCount struct {
	out     bool // a count is out, or due (see pause)
	waiting []countReq
	members map[*flowCtl]struct{}

	// While counts free nothing (an owner that reads none of the children
	// that count: they all wait), they are spaced out by pause, up to
	// maxCountPause, however many children ask: each copies the queue.
	pause    time.Duration
	lastDone time.Time
}

// maxCountPause is the most a count waits after one that freed nothing.
const maxCountPause = 50 * time.Millisecond

// countReq is a child's request: done gets the queue's length and how many
// of its messages are the child's, and returns the bytes that freed (see
// callAsync for where done runs).
// direct: the child's data went straight to the owner's connection, so the
// count may too (behind it).
type countReq struct {
	child  etf.Pid
	direct bool
	done   func(q, mine int, err error) int
}

// count has the owner's node count r.child's messages in owner's queue,
// with the next count of that owner.
func (c *rpcClient) count(owner etf.Pid, r countReq) {
	oc := &c.counts
	oc.mu.Lock()
	o := oc.owners[owner]
	if o == nil {
		o = &ownerCount{}
		oc.owners[owner] = o
	}
	o.waiting = append(o.waiting, r)
	if o.out {
		oc.mu.Unlock()
		return
	}
	o.out = true
	wait := time.Until(o.lastDone.Add(o.pause))
	oc.mu.Unlock()
	if wait > 0 {
		time.AfterFunc(wait, func() { c.fireCount(owner) })
		return
	}
	c.fireCount(owner)
}

// fireCount sends owner's count that is due, for those waiting.
func (c *rpcClient) fireCount(owner etf.Pid) {
	oc := &c.counts
	oc.mu.Lock()
	o := oc.owners[owner]
	batch := o.waiting
	o.waiting = nil
	members := o.memberList()
	oc.mu.Unlock()
	c.sendCount(owner, batch, members)
}

// setMember makes f one of owner's counting children, or not.
func (c *rpcClient) setMember(owner etf.Pid, f *flowCtl, on bool) {
	oc := &c.counts
	oc.mu.Lock()
	defer oc.mu.Unlock()
	o := oc.owners[owner]
	switch {
	case on && o == nil:
		o = &ownerCount{}
		oc.owners[owner] = o
		fallthrough
	case on:
		if o.members == nil {
			o.members = make(map[*flowCtl]struct{})
		}
		o.members[f] = struct{}{}
	case o != nil:
		delete(o.members, f)
		oc.dropIdle(owner, o)
	}
}

// dropIdle forgets owner when nothing of it is left; oc.mu is held.
func (oc *ownerCounts) dropIdle(owner etf.Pid, o *ownerCount) {
	if !o.out && len(o.waiting) == 0 && len(o.members) == 0 {
		delete(oc.owners, owner)
	}
}

// memberList returns the members; oc.mu is held.
func (o *ownerCount) memberList() []*flowCtl {
	fs := make([]*flowCtl, 0, len(o.members))
	for f := range o.members {
		fs = append(fs, f)
	}
	return fs
}

// sendCount sends the count that answers batch (every request in it was
// made after its child's data was sent, so the count follows that data)
// and frees for members what it shows consumed of the messages they had
// sent before it.
func (c *rpcClient) sendCount(owner etf.Pid, batch []countReq, members []*flowCtl) {
	direct := true
	for _, r := range batch {
		direct = direct && r.direct
	}
	snaps := make([]memberSnap, 0, len(members))
	for _, f := range members {
		if s, ok := f.snap(owner); ok {
			snaps = append(snaps, s)
			direct = direct && s.direct
		}
	}
	args := etf.List{countExpr, countBindings(owner, batch[0].child.Node),
		etf.Atom("none"), etf.Atom("none"), etf.Atom("value")}
	call := c.counts.call
	if call == nil {
		call = c.callAsync
	}
	call(string(owner.Node), direct, false, "erl_eval", "expr", args, rpcTimeout,
		func(r etf.Term, err error) {
			q, mine, err := countResult(r, err)
			freed := 0
			if err == nil && q >= 0 {
				for _, s := range snaps {
					freed += s.f.free(s.epoch, s.n-mine[s.f.c.self])
				}
			}
			for _, req := range batch {
				freed += req.done(q, mine[req.child], err)
			}
			c.countDone(owner, freed > 0)
		})
}

// countDone ends owner's count out: the next one starts for those who
// asked meanwhile (on a goroutine of its own: this runs on the
// connection's reader, which must not wait for the network).
func (c *rpcClient) countDone(owner etf.Pid, progress bool) {
	oc := &c.counts
	oc.mu.Lock()
	o := oc.owners[owner]
	if progress {
		o.pause = 0
	} else {
		o.pause = min(max(2*o.pause, time.Millisecond), maxCountPause)
	}
	o.lastDone = time.Now()
	if len(o.waiting) == 0 {
		o.out = false
		oc.dropIdle(owner, o)
		oc.mu.Unlock()
		return
	}
	wait := o.pause
	oc.mu.Unlock()
	if wait > 0 {
		time.AfterFunc(wait, func() { c.fireCount(owner) })
		return
	}
	go c.fireCount(owner)
}

// countExpr is the count's expression in Erlang's abstract format.
var countExpr = func() etf.Term {
	atom := func(a string) etf.Term { return etf.Tuple{etf.Atom("atom"), 1, etf.Atom(a)} }
	v := func(name string) etf.Term { return etf.Tuple{etf.Atom("var"), 1, etf.Atom(name)} }
	tuple := func(es ...etf.Term) etf.Term { return etf.Tuple{etf.Atom("tuple"), 1, etf.List(es)} }
	call := func(m, f string, args ...etf.Term) etf.Term {
		return etf.Tuple{etf.Atom("call"), 1, etf.Tuple{etf.Atom("remote"), 1, atom(m), atom(f)}, etf.List(args)}
	}
	clause := func(pat, body etf.Term) etf.Term {
		return etf.Tuple{etf.Atom("clause"), 1, etf.List{pat}, etf.List{}, etf.List{body}}
	}
	senders := call("ets", "match_spec_run", v("L"), call("ets", "match_spec_compile", v("MS")))
	return etf.Tuple{etf.Atom("case"), 1, call("erlang", "process_info", v("P"), atom("messages")), etf.List{
		clause(tuple(atom("messages"), v("L")), tuple(call("erlang", "length", v("L")), senders)),
		clause(atom("undefined"), atom("undefined")),
	}}
}()

// countBindings binds P to the owner and MS to the match spec that picks
// the senders of data messages from node's processes.
func countBindings(owner etf.Pid, node etf.Atom) etf.List {
	op := func(name string, args ...etf.Term) etf.Term { return append(etf.Tuple{etf.Atom(name)}, args...) }
	guard := op("andalso",
		op("andalso", op("is_pid", etf.Atom("$1")), op("=:=", op("node", etf.Atom("$1")), node)),
		op("orelse", op("=:=", etf.Atom("$2"), etf.Atom("data")), op("=:=", etf.Atom("$2"), etf.Atom("error"))))
	ms := etf.List{etf.Tuple{
		etf.Tuple{etf.Atom("$1"), etf.Tuple{etf.Atom("$2"), etf.Atom("_")}},
		etf.List{guard},
		etf.List{etf.Atom("$1")},
	}}
	return etf.List{etf.Tuple{etf.Atom("MS"), ms}, etf.Tuple{etf.Atom("P"), owner}} // an orddict: sorted
}

// countResult reads a count's answer: the queue's length (-1: the owner is
// dead) and its data messages by sender.
func countResult(r etf.Term, err error) (int, map[etf.Pid]int, error) {
	if err != nil {
		return 0, nil, err
	}
	if isAtom(r, "undefined") {
		return -1, nil, nil
	}
	if tu, ok := r.(etf.Tuple); ok && len(tu) == 2 {
		q, ok1 := intOf(tu[0])
		senders, ok2 := tu[1].(etf.List)
		if ok1 && ok2 {
			mine := make(map[etf.Pid]int)
			for _, s := range senders {
				if p, ok := s.(etf.Pid); ok {
					mine[p]++
				}
			}
			return int(q), mine, nil
		}
	}
	return 0, nil, fmt.Errorf("counting the owner's messages answered %s", describe(r))
}
