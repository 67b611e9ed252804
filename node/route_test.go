package node

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

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

// fakeErgo stands for ergo's monitors and links of this node's processes,
// with the order of ergo v1.999.224 (node/monitor.go): RouteMonitor and
// RouteLink check that the process is alive, then add the monitor or link;
// a process whose loop has returned is taken out of the registry, its
// context cancelled, then its monitors' DOWNs and its links' exit signals
// are sent (node/core.go, cleanProcess). endsWhileSetting makes the
// process end between the check and the add.
type fakeErgo struct {
	ergonode.CoreRouter
	ergonode.Node    // Name and ProcessByPid only
	name             string
	mu               sync.Mutex
	alive            map[etf.Pid]bool
	procs            map[etf.Pid]*fakeProc
	monitors         map[etf.Ref]etf.Pid   // ref -> monitored process
	downs            []string              // reasons of the DOWNs sent
	links            map[etf.Pid][]etf.Pid // process -> the peers linked to it
	exits            []string              // reasons of the exit signals sent
	endsWhileSetting etf.Pid
}

func (e *fakeErgo) Name() string { return e.name }

// fakeProc is what ProcessByPid finds: a process, with the loopProc that
// runs it if it has one (spawn).
type fakeProc struct {
	gen.Process
	loop      *loopProc
	ctx       context.Context
	cancel    context.CancelFunc
	mailbox   chan gen.ProcessMailboxMessage
	onContext func() // called when Context is
	ended     chan struct{}
}

func (p *fakeProc) Behavior() gen.ProcessBehavior { return p.loop }

func (p *fakeProc) Context() context.Context {
	if p.onContext != nil {
		p.onContext()
	}
	return p.ctx
}

func (p *fakeProc) ProcessChannels() gen.ProcessChannels {
	return gen.ProcessChannels{Mailbox: p.mailbox}
}

func (e *fakeErgo) ProcessByPid(pid etf.Pid) gen.Process {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.alive[pid] {
		return nil
	}
	if p := e.procs[pid]; p != nil {
		if p.ctx.Err() != nil {
			return nil // ergo's IsAlive
		}
		return p
	}
	return &fakeProc{}
}

// spawn runs pid's loopProc as ergo does: once its loop has returned, and
// release is closed (nil: at once), the process ends (end) and ended is
// closed.
func (e *fakeErgo) spawn(pid etf.Pid, release <-chan struct{}) *fakeProc {
	ctx, cancel := context.WithCancel(context.Background())
	p := &fakeProc{loop: newLoopProc(func(interface{}) {}, nil), ctx: ctx, cancel: cancel,
		mailbox: make(chan gen.ProcessMailboxMessage), ended: make(chan struct{})}
	e.mu.Lock()
	e.alive[pid], e.procs[pid] = true, p
	e.mu.Unlock()
	started := make(chan bool, 1)
	go func() {
		reason := p.loop.ProcessLoop(gen.ProcessState{Process: p, State: p.loop}, started)
		if release != nil {
			<-release
		}
		e.end(pid, reason)
		close(p.ended)
	}()
	<-started
	return p
}

// end takes pid out of the registry, cancels its context, then sends its
// monitors' DOWNs and its links' exit signals.
func (e *fakeErgo) end(pid etf.Pid, reason string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.alive, pid)
	if p := e.procs[pid]; p != nil {
		p.cancel()
	}
	for ref, p := range e.monitors {
		if p == pid {
			e.downs = append(e.downs, reason)
			delete(e.monitors, ref)
		}
	}
	for range e.links[pid] {
		e.exits = append(e.exits, reason)
	}
	delete(e.links, pid)
}

// endMeanwhile ends pid between ergo's check and its add, as far as it
// can: a process with a loop ends once its loop returns, which waits for
// whoever holds the loop's end.
func (e *fakeErgo) endMeanwhile(pid etf.Pid) {
	e.mu.Lock()
	p := e.procs[pid]
	e.mu.Unlock()
	if p == nil {
		e.end(pid, "normal")
		return
	}
	p.loop.Stop("normal")
	if p.loop.end.TryLock() { // nobody holds it: the loop returns now
		p.loop.end.Unlock()
		<-p.ended
	}
}

func (e *fakeErgo) aliveNow(pid etf.Pid) bool { return e.ProcessByPid(pid) != nil }

func (e *fakeErgo) RouteMonitor(by, pid etf.Pid, ref etf.Ref) error {
	if !e.aliveNow(pid) {
		e.mu.Lock()
		e.downs = append(e.downs, "noproc")
		e.mu.Unlock()
		return nil
	}
	if pid == e.endsWhileSetting {
		e.endMeanwhile(pid)
	}
	e.mu.Lock()
	e.monitors[ref] = pid
	e.mu.Unlock()
	return nil
}

func (e *fakeErgo) RouteDemonitor(by etf.Pid, ref etf.Ref) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.monitors[ref]; !ok {
		return lib.ErrMonitorUnknown
	}
	delete(e.monitors, ref)
	return nil
}

// RouteLink links peer to pid, as a peer's LINK does.
func (e *fakeErgo) RouteLink(peer, pid etf.Pid) error {
	if !e.aliveNow(pid) {
		e.mu.Lock()
		e.exits = append(e.exits, "noproc")
		e.mu.Unlock()
		return lib.ErrProcessUnknown
	}
	if pid == e.endsWhileSetting {
		e.endMeanwhile(pid)
	}
	e.mu.Lock()
	e.links[pid] = append(e.links[pid], peer)
	e.mu.Unlock()
	return nil
}

func newFakeErgo(name string) *fakeErgo {
	return &fakeErgo{name: name, alive: map[etf.Pid]bool{}, procs: map[etf.Pid]*fakeProc{},
		monitors: map[etf.Ref]etf.Pid{}, links: map[etf.Pid][]etf.Pid{}}
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
			e := newFakeErgo(self)
			e.alive[child] = tc.alive
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

// TestLinkOfAProcessEndingMeanwhileGetsOneExit: a peer's link to a loopProc
// of this node gets exactly one exit signal however the process's end and
// the link cross, including the order in which ergo alone loses it (the
// process ends between ergo's check and its adding the link) and a link
// that comes after the loop has returned but before ergo has unregistered
// the process.
func TestLinkOfAProcessEndingMeanwhileGetsOneExit(t *testing.T) {
	const self = "ps@127.0.0.1"
	owner := etf.Pid{Node: "erl@127.0.0.1", ID: 77, Creation: 3}
	child := etf.Pid{Node: self, ID: 1001, Creation: 1}
	cases := []struct {
		name     string
		spawned  bool // a loopProc runs the process
		crossing bool // ends between ergo's check and its adding the link
		returned bool // its loop has returned, ergo has not unregistered it
		endAfter bool // ends after the link was set
		exits    []string
		linked   bool // the link is still set afterwards
	}{
		{name: "alive", spawned: true, linked: true},
		{name: "ended before", exits: []string{"noproc"}},
		{name: "ends while ergo sets it", spawned: true, crossing: true, exits: []string{"normal"}},
		{name: "loop returned, not yet unregistered", spawned: true, returned: true, exits: []string{"noproc"}},
		{name: "ends after", spawned: true, endAfter: true, exits: []string{"normal"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newFakeErgo(self)
			var p *fakeProc
			release := make(chan struct{})
			var once sync.Once
			unregister := func() { once.Do(func() { close(release) }) }
			if tc.spawned {
				p = e.spawn(child, release)
			}
			if tc.crossing {
				e.endsWhileSetting = child
			}
			if tc.returned {
				p.loop.Stop("normal")
				waitReturned(t, p.loop)
				// ergo unregisters the process once RouteLink waits for it
				p.onContext = func() { go unregister() }
			} else {
				unregister()
			}
			dir := newDirectory()
			dir.setErgo(e)
			r := directRouter{CoreRouter: e, dir: dir}
			err := r.RouteLink(owner, child)
			if len(tc.exits) > 0 && tc.exits[0] == "noproc" {
				if err != lib.ErrProcessUnknown {
					t.Fatalf("RouteLink: %v, want %v", err, lib.ErrProcessUnknown)
				}
			} else if err != nil {
				t.Fatalf("RouteLink: %v", err)
			}
			unregister()
			if tc.endAfter || tc.crossing {
				p.loop.Stop("normal")
			}
			if p != nil && (tc.endAfter || tc.crossing || tc.returned) {
				<-p.ended
			}
			e.mu.Lock()
			exits, linked := append([]string(nil), e.exits...), len(e.links[child]) > 0
			e.mu.Unlock()
			if fmt.Sprint(exits) != fmt.Sprint(tc.exits) {
				t.Fatalf("exit signals sent: %v, want %v", exits, tc.exits)
			}
			if linked != tc.linked {
				t.Fatalf("link still set: %v, want %v", linked, tc.linked)
			}
			if p != nil { // the loop of "alive" ends
				p.loop.Stop("normal")
				<-p.ended
			}
		})
	}
}

// waitReturned waits until l's loop has returned.
func waitReturned(t *testing.T, l *loopProc) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.end.Lock()
		ended := l.ended
		l.end.Unlock()
		if ended {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the loop did not return within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}
