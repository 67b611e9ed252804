package node

import (
	"fmt"
	"testing"

	"github.com/ergo-services/ergo/etf"
	"github.com/ergo-services/ergo/gen"
	"github.com/ergo-services/ergo/lib"
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

// fakeErgo stands for ergo's monitors of this node's processes, with the
// order of ergo v1.999.224 (node/monitor.go): RouteMonitor checks that the
// process is alive, then adds the monitor; a process that ends is taken out
// of the registry, then its monitors' DOWNs are sent. endsWhileSetting
// makes the process end between the check and the add.
type fakeErgo struct {
	ergonode.CoreRouter
	ergonode.Node    // Name and ProcessByPid only
	name             string
	alive            map[etf.Pid]bool
	monitors         map[etf.Ref]etf.Pid // ref -> monitored process
	downs            []string            // reasons of the DOWNs sent
	endsWhileSetting etf.Pid
}

func (e *fakeErgo) Name() string { return e.name }

// aliveProcess is what ProcessByPid finds: any non-nil gen.Process.
type aliveProcess struct{ gen.Process }

func (e *fakeErgo) ProcessByPid(pid etf.Pid) gen.Process {
	if e.alive[pid] {
		return aliveProcess{}
	}
	return nil
}

// end takes pid out of the registry, then sends its monitors' DOWNs.
func (e *fakeErgo) end(pid etf.Pid, reason string) {
	delete(e.alive, pid)
	for ref, p := range e.monitors {
		if p == pid {
			e.downs = append(e.downs, reason)
			delete(e.monitors, ref)
		}
	}
}

func (e *fakeErgo) RouteMonitor(by, pid etf.Pid, ref etf.Ref) error {
	if !e.alive[pid] {
		e.downs = append(e.downs, "noproc")
		return nil
	}
	if pid == e.endsWhileSetting {
		e.end(pid, "normal")
	}
	e.monitors[ref] = pid
	return nil
}

func (e *fakeErgo) RouteDemonitor(by etf.Pid, ref etf.Ref) error {
	if _, ok := e.monitors[ref]; !ok {
		return lib.ErrMonitorUnknown
	}
	delete(e.monitors, ref)
	return nil
}

// TestMonitorOfAProcessEndingMeanwhileGetsOneDown: a peer's monitor of a
// process of this node gets exactly one DOWN however the process's end and
// the monitor cross, including the order in which ergo alone loses it (the
// process ends between ergo's check and its adding the monitor).
func TestMonitorOfAProcessEndingMeanwhileGetsOneDown(t *testing.T) {
	const self = "ps@127.0.0.1"
	owner := etf.Pid{Node: "erl@127.0.0.1", ID: 77, Creation: 3}
	child := etf.Pid{Node: self, ID: 1001, Creation: 1}
	ref := etf.Ref{Node: "erl@127.0.0.1", Creation: 3, ID: [5]uint32{1, 2, 3}}
	cases := []struct {
		name      string
		alive     bool
		crossing  bool // ends between ergo's check and its adding the monitor
		endAfter  bool // ends after the monitor was set
		downs     []string
		monitored bool // the monitor is still set afterwards
	}{
		{name: "alive", alive: true, monitored: true},
		{name: "ended before", alive: false, downs: []string{"noproc"}},
		{name: "ends while ergo sets it", alive: true, crossing: true, downs: []string{"noproc"}},
		{name: "ends after", alive: true, endAfter: true, downs: []string{"normal"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := &fakeErgo{name: self, alive: map[etf.Pid]bool{child: tc.alive}, monitors: map[etf.Ref]etf.Pid{}}
			if tc.crossing {
				e.endsWhileSetting = child
			}
			dir := newDirectory()
			dir.setErgo(e)
			r := directRouter{CoreRouter: e, dir: dir}
			if err := r.RouteMonitor(owner, child, ref); err != nil {
				t.Fatalf("RouteMonitor: %v", err)
			}
			if tc.endAfter {
				e.end(child, "normal")
			}
			if fmt.Sprint(e.downs) != fmt.Sprint(tc.downs) {
				t.Fatalf("DOWNs sent: %v, want %v", e.downs, tc.downs)
			}
			if _, ok := e.monitors[ref]; ok != tc.monitored {
				t.Fatalf("monitor still set: %v, want %v", ok, tc.monitored)
			}
		})
	}
}
