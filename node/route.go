package node

import (
	"sync"
	"sync/atomic"

	"github.com/ergo-services/ergo/etf"
	"github.com/ergo-services/ergo/gen"
	ergonode "github.com/ergo-services/ergo/node"
)

// directory knows this node's loopProcs by pid and by registered name, so
// that messages from the network reach them without ergo's mailbox.
//
// ergo puts a message for a local process into a channel of MailboxSize
// entries, allocated whole when the process starts (48 bytes an entry,
// twice: the mailbox and the exit-signal box), and drops the message with
// a log line when the channel is full. Sized for a flood (65535 entries) it
// cost every child 6 MiB of heap, which Go must zero (and so make
// resident) when it reuses it; sized small it drops. Messages from other
// nodes are what can flood (an owner's commands), so directRouter hands
// them to the loopProc's inbox, a queue that grows as needed and shrinks
// back, in the order the connection delivered them. What still comes
// through ergo's mailbox is local: the DOWN of an owner monitor, one per
// monitor, so the mailbox can be small (childMailbox).
//
// It also knows which loopProcs monitor which remote process (watch), so
// that a monitored process's DOWN from its node reaches them even when it
// arrives before ergo has registered the monitor: ergo sends the monitor
// request first and registers it after, and drops a DOWN it does not know
// yet (a process that died a moment before the monitor was set).
type directory struct {
	mu       sync.RWMutex
	byPid    map[etf.Pid]*loopProc
	byName   map[string]*loopProc
	watchers map[etf.Pid]map[*loopProc]struct{}

	// ergo is the node's ergo, once started (setErgo): what ended asks.
	ergo atomic.Pointer[ergonode.Node]
}

// setErgo tells the directory the node's ergo, for ended.
func (d *directory) setErgo(en ergonode.Node) { d.ergo.Store(&en) }

// ended reports whether pid is a process of this node that ergo no longer
// knows: it has ended. false until setErgo.
func (d *directory) ended(pid etf.Pid) bool {
	en := d.ergo.Load()
	return en != nil && string(pid.Node) == (*en).Name() && (*en).ProcessByPid(pid) == nil
}

// loop is pid's process if it is a loopProc of this node that ergo knows,
// and the loopProc; nil, nil otherwise.
func (d *directory) loop(pid etf.Pid) (gen.Process, *loopProc) {
	en := d.ergo.Load()
	if en == nil || string(pid.Node) != (*en).Name() {
		return nil, nil
	}
	p := (*en).ProcessByPid(pid)
	if p == nil {
		return nil, nil
	}
	l, _ := p.Behavior().(*loopProc)
	if l == nil {
		return nil, nil
	}
	return p, l
}

func newDirectory() *directory {
	return &directory{byPid: make(map[etf.Pid]*loopProc), byName: make(map[string]*loopProc),
		watchers: make(map[etf.Pid]map[*loopProc]struct{})}
}

// watch notes that l monitors pid, or is about to: pid's DOWN goes to l.
func (d *directory) watch(pid etf.Pid, l *loopProc) {
	d.mu.Lock()
	w := d.watchers[pid]
	if w == nil {
		w = make(map[*loopProc]struct{}, 1)
		d.watchers[pid] = w
	}
	w[l] = struct{}{}
	d.mu.Unlock()
}

// unwatch undoes watch.
func (d *directory) unwatch(pid etf.Pid, l *loopProc) {
	d.mu.Lock()
	if w := d.watchers[pid]; w != nil {
		delete(w, l)
		if len(w) == 0 {
			delete(d.watchers, pid)
		}
	}
	d.mu.Unlock()
}

// down delivers pid's DOWN to the loopProcs that watch it.
func (d *directory) down(pid etf.Pid, reason string, ref etf.Ref) {
	d.mu.RLock()
	var ls []*loopProc
	for l := range d.watchers[pid] {
		ls = append(ls, l)
	}
	d.mu.RUnlock()
	for _, l := range ls {
		l.deliver(gen.MessageDown{Ref: ref, Pid: pid, Reason: reason})
	}
}

func (d *directory) add(pid etf.Pid, name string, l *loopProc) {
	d.mu.Lock()
	d.byPid[pid] = l
	if name != "" {
		d.byName[name] = l
	}
	d.mu.Unlock()
}

func (d *directory) remove(pid etf.Pid) {
	d.mu.Lock()
	if l := d.byPid[pid]; l != nil {
		delete(d.byPid, pid)
		for name, n := range d.byName {
			if n == l {
				delete(d.byName, name)
			}
		}
	}
	d.mu.Unlock()
}

func (d *directory) pid(pid etf.Pid) *loopProc {
	d.mu.RLock()
	l := d.byPid[pid]
	d.mu.RUnlock()
	return l
}

func (d *directory) name(name string) *loopProc {
	d.mu.RLock()
	l := d.byName[name]
	d.mu.RUnlock()
	return l
}

// directRouter is the router a connection's reader delivers to: ergo's,
// except that sends to a process in the directory go to its inbox. One
// reader per connection (NumHandlers 1) calls it, so a sender's messages
// enter the inbox in the order they were sent.
type directRouter struct {
	ergonode.CoreRouter
	dir *directory
}

// router wraps the router of a connection's reader (otpdist.Config.Route).
func (d *directory) router(r ergonode.CoreRouter) ergonode.CoreRouter {
	return directRouter{CoreRouter: r, dir: d}
}

// RouteSend implements ergonode.CoreRouter.
func (r directRouter) RouteSend(from etf.Pid, to etf.Pid, message etf.Term) error {
	if l := r.dir.pid(to); l != nil && l.deliver(message) {
		return nil
	}
	return r.CoreRouter.RouteSend(from, to, message)
}

// RouteMonitorExit implements ergonode.CoreRouter: a monitored process's
// DOWN from its node goes to the loopProcs that watch it (see directory),
// in order with the messages its node sent before, and to ergo, which
// delivers it to the monitor's owner when it knows the monitor (a second
// DOWN, which the child ignores).
func (r directRouter) RouteMonitorExit(terminated etf.Pid, reason string, ref etf.Ref) error {
	r.dir.down(terminated, reason, ref)
	return r.CoreRouter.RouteMonitorExit(terminated, reason, ref)
}

// RouteMonitor implements ergonode.CoreRouter: a peer's monitor of a
// process of this node, set through ergo, which loses the DOWN of a
// process that ends while it sets the monitor. ergo checks that the
// process is alive, then adds the monitor to its list; a process that
// ends in between has already been taken out of ergo's registry and had
// its list's DOWNs sent (ergo unregisters a process, then sends them), so
// the monitor is added to a list nobody reads again and the peer waits
// for a DOWN forever: a gen_server:call to a child that has just exited,
// such as the shim's call for the child's OS pid, hung until its timeout
// (about once in ten runs of test/elixir/node_mode/cmd_test.exs on OTP 29,
// where a child that exits at once and the call cross).
//
// So once ergo has added it, a monitor of a process that has ended is
// taken back, and, when it was still there (ergo's list had not sent its
// DOWN), set again, which ergo now answers at once with a DOWN noproc, as
// OTP does for a monitor of a process that is gone. Taking it back and
// ergo's sending of the list's DOWNs hold the same lock, so the peer gets
// exactly one DOWN.
func (r directRouter) RouteMonitor(by etf.Pid, process etf.Pid, ref etf.Ref) error {
	if err := r.CoreRouter.RouteMonitor(by, process, ref); err != nil || !r.dir.ended(process) {
		return err
	}
	if r.CoreRouter.RouteDemonitor(by, ref) != nil {
		return nil // its DOWN went out (or the monitor was answered at once)
	}
	return r.CoreRouter.RouteMonitor(by, process, ref)
}

// RouteLink implements ergonode.CoreRouter: a peer's link to a process of
// this node (Process.link/1 on a child), set through ergo, which has the
// same gap as for a monitor: it checks that the process is alive, then
// adds the link, and a process whose links' exit signals went out in
// between keeps a link nobody reads, so the peer never gets an exit
// signal, not even the noproc that OTP gives for a link to a process that
// is gone. Unlike a monitor, such a link cannot be taken back afterwards:
// ergo's RouteUnlink does not say whether the link was still there, and
// linking again would then send a second exit signal.
//
// So ergo adds a link to a loopProc while its loop cannot return
// (loopProc.end): ergo sends a process's exit signals only after its loop
// has returned, and they include the link. When the loop has already
// returned, the link waits for ergo to cancel the process's context, which
// it does as soon as it has unregistered it: ergo then answers the link at
// once with an exit signal noproc and adds nothing. Either way the peer
// gets exactly one exit signal. (A process that is not a loopProc, none
// that a peer links to, is left to ergo.)
func (r directRouter) RouteLink(from etf.Pid, to etf.Pid) error {
	if p, l := r.dir.loop(to); l != nil {
		l.end.Lock()
		if !l.ended {
			defer l.end.Unlock()
		} else {
			l.end.Unlock()
			<-p.Context().Done()
		}
	}
	return r.CoreRouter.RouteLink(from, to)
}

// RouteSendReg implements ergonode.CoreRouter.
func (r directRouter) RouteSendReg(from etf.Pid, to gen.ProcessID, message etf.Term) error {
	if l := r.dir.name(to.Name); l != nil && l.deliver(message) {
		return nil
	}
	return r.CoreRouter.RouteSendReg(from, to, message)
}
