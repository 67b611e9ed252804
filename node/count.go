package node

import (
	"fmt"
	"sync"

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

// ownerCounts has the counts out, by owner.
type ownerCounts struct {
	mu     sync.Mutex
	owners map[etf.Pid]*ownerCount
}

// ownerCount is one owner's: whether a count is out, and who waits for the
// next.
type ownerCount struct {
	out     bool
	waiting []countReq
}

// countReq is a child's request: done gets the queue's length and how many
// of its messages are the child's (see callAsync for where done runs).
// direct: the child's data went straight to the owner's connection, so the
// count may too (behind it).
type countReq struct {
	child  etf.Pid
	direct bool
	done   func(q, mine int, err error)
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
	batch := o.take()
	oc.mu.Unlock()
	c.sendCount(owner, batch)
}

// take marks a count out and returns who it answers; oc.mu is held.
func (o *ownerCount) take() []countReq {
	o.out = true
	batch := o.waiting
	o.waiting = nil
	return batch
}

// sendCount sends the count that answers batch (every request in it was
// made after its child's data was sent, so the count follows that data).
func (c *rpcClient) sendCount(owner etf.Pid, batch []countReq) {
	direct := true
	for _, r := range batch {
		direct = direct && r.direct
	}
	args := etf.List{countExpr, countBindings(owner, batch[0].child.Node),
		etf.Atom("none"), etf.Atom("none"), etf.Atom("value")}
	c.callAsync(string(owner.Node), direct, false, "erl_eval", "expr", args, rpcTimeout,
		func(r etf.Term, err error) {
			q, mine, err := countResult(r, err)
			for _, req := range batch {
				req.done(q, mine[req.child], err)
			}
			c.countDone(owner)
		})
}

// countDone ends owner's count out: the next one starts for those who
// asked meanwhile (on a goroutine of its own: this runs on the
// connection's reader, which must not wait for the network).
func (c *rpcClient) countDone(owner etf.Pid) {
	oc := &c.counts
	oc.mu.Lock()
	o := oc.owners[owner]
	if len(o.waiting) == 0 {
		delete(oc.owners, owner)
		oc.mu.Unlock()
		return
	}
	batch := o.take()
	oc.mu.Unlock()
	go c.sendCount(owner, batch)
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
