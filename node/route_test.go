package node

import (
	"testing"

	"github.com/ergo-services/ergo/etf"
	"github.com/ergo-services/ergo/gen"
	ergonode "github.com/ergo-services/ergo/node"
)

// ergoMonitors stands for ergo's router: it records the DOWNs handed on.
type ergoMonitors struct {
	ergonode.CoreRouter
	got []etf.Pid
}

func (r *ergoMonitors) RouteMonitorExit(terminated etf.Pid, reason string, ref etf.Ref) error {
	r.got = append(r.got, terminated)
	return nil
}

// TestDownReachesWatchersBeforeErgoKnowsTheMonitor: a DOWN from the
// network goes to the inbox of every loopProc that watches the process
// (ergo, which registers a monitor only after sending it, would drop a DOWN
// that comes back first), and on to ergo; after unwatch it goes to ergo
// only.
func TestDownReachesWatchersBeforeErgoKnowsTheMonitor(t *testing.T) {
	owner := etf.Pid{Node: "erl@127.0.0.1", ID: 77, Creation: 3}
	other := etf.Pid{Node: "erl@127.0.0.1", ID: 78, Creation: 3}
	dir := newDirectory()
	a, b := newLoopProc(func(interface{}) {}, nil), newLoopProc(func(interface{}) {}, nil)
	dir.watch(owner, a)
	dir.watch(owner, b)
	dir.watch(other, b)
	ergo := &ergoMonitors{}
	r := directRouter{CoreRouter: ergo, dir: dir}
	ref := etf.Ref{Node: "erl@127.0.0.1", Creation: 3, ID: [5]uint32{1, 2, 3}}

	r.RouteMonitorExit(owner, "noproc", ref)
	for name, l := range map[string]*loopProc{"a": a, "b": b} {
		items := l.inbox.take(nil)
		if len(items) != 1 {
			t.Fatalf("%s's inbox holds %d messages, want the DOWN", name, len(items))
		}
		d, ok := items[0].(gen.MessageDown)
		if !ok || d.Pid != owner || d.Reason != "noproc" || d.Ref != ref {
			t.Fatalf("%s got %#v, want the owner's DOWN with reason noproc", name, items[0])
		}
	}
	if len(ergo.got) != 1 || ergo.got[0] != owner {
		t.Fatalf("ergo got DOWNs of %v, want the owner's", ergo.got)
	}

	dir.unwatch(owner, a)
	dir.unwatch(owner, b)
	r.RouteMonitorExit(owner, "normal", ref)
	if n := len(a.inbox.take(nil)) + len(b.inbox.take(nil)); n != 0 {
		t.Fatalf("%d DOWNs delivered after unwatch", n)
	}
	if len(dir.watchers[owner]) != 0 || len(dir.watchers[other]) != 1 {
		t.Fatalf("watchers left: %v", dir.watchers)
	}
	if len(ergo.got) != 2 {
		t.Fatalf("ergo got %d DOWNs, want 2", len(ergo.got))
	}
}
