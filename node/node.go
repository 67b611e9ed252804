package node

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ergo-services/ergo"
	"github.com/ergo-services/ergo/etf"
	"github.com/ergo-services/ergo/gen"
	ergonode "github.com/ergo-services/ergo/node"
	"github.com/ergo-services/ergo/proto/dist"
	"github.com/protonstream/ps_port/cgroup"
	"github.com/protonstream/ps_port/host"
	"github.com/protonstream/ps_port/internal/limits"
	"github.com/protonstream/ps_port/otpdist"
	"github.com/protonstream/ps_port/procctl"
)

// RegisteredName is the name of the process that opens children.
const RegisteredName = "proton_stream"

// MaxMessageSize is the largest distribution message ps_port sends, and
// the most --max-request may be.
var MaxMessageSize = limits.MaxRequestMax

// DefaultMaxRequest is the largest request (one distribution message from
// a peer, lists and tuples weighed as decoded: otpdist/weigh.go) a node
// takes without --max-request.
var DefaultMaxRequest = limits.MaxRequestDefault

// MinMaxRequest is the least --max-request may be.
var MinMaxRequest = limits.MaxRequestMin

// Config configures a node.
type Config struct {
	Name        string        // NAME@HOST
	Cookie      string        // the distribution cookie; never logged
	Allow       []string      // glob patterns on the program's absolute path
	AllowAny    bool          // allow every program
	AllowEnv    []string      // globs on the loader variables a peer may set (allow.go: loaderEnv)
	AllowUID    []string      // users a peer may run children as, besides the node's own (creds.go)
	AllowGID    []string      // groups likewise
	MaxRequest  int           // largest request (distribution message) taken; 0: DefaultMaxRequest
	CgroupBase  string        // cgroup path below which children's groups go; "" refuses cgroup options
	MaxChildren int           // 0: no limit
	ListenPort  uint16        // distribution port; 0 picks a free one
	NetTickTime time.Duration // as OTP's net_ticktime; 0: otpdist.DefaultNetTickTime (60 s)
	TLS         *tls.Config   // distribution over TLS when set (see otpdist.TLSFiles)
	Log         *log.Logger
}

// Node is a running ps_port node.
type Node struct {
	cfg     Config
	log     *log.Logger
	ergo    ergonode.Node
	rpc     *rpcClient
	spawner gen.Process
	// spawnerEnc is the spawner's pid, encoded (set with links): the
	// From of the replies it writes itself (reply.go).
	spawnerEnc []byte
	allowUID   *idSet
	allowGID   *idSet
	dir        *directory     // loopProcs that take messages from the network directly
	links      *otpdist.Links // connections to OTP peers (direct.go)
	opens      chan struct{}  // bounds concurrent opens

	mu       sync.Mutex
	changed  time.Time // last child started or gone (memory.go)
	children map[*child]struct{}
	markers  map[string]bool    // the markers of children's pc (killEscapees)
	escaping bool               // killEscapees runs
	again    bool               // and must run once more when done
	groups   map[string]etf.Pid // live children's cgroup paths and their owners (cgroups.go)
	reserved int
	running  int // children whose exit has not been sent yet: what --max-children counts
	stopping bool
	done     chan struct{}
}

// Start checks cfg, makes sure epmd runs and starts the node.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Log == nil {
		cfg.Log = log.New(os.Stderr, "ps_port node: ", log.LstdFlags)
	}
	allowUID, allowGID, err := checkConfig(cfg)
	if err != nil {
		return nil, err
	}
	if err := EnsureEPMD(); err != nil {
		return nil, err
	}
	routeErgoLog(cfg.Log)
	dir := newDirectory()
	opts, lnk := otpdist.Options(otpdist.Config{
		TickTime:   cfg.NetTickTime,
		MaxRequest: cfg.MaxRequest,
		Log:        cfg.Log,
		Route:      dir.router,
	})
	opts.TLS = cfg.TLS
	opts.Registrar = dist.CreateRegistrar() // the system epmd
	if cfg.ListenPort != 0 {
		opts.Listeners = []ergonode.Listener{{Listen: cfg.ListenPort}}
	}
	en, err := ergo.StartNodeWithContext(ctx, cfg.Name, cfg.Cookie, opts)
	if err != nil {
		return nil, fmt.Errorf("starting node %s: %w", cfg.Name, err)
	}
	dir.setErgo(en)
	n := &Node{
		cfg:      cfg,
		log:      cfg.Log,
		ergo:     en,
		opens:    make(chan struct{}, 8),
		children: make(map[*child]struct{}),
		markers:  make(map[string]bool),
		dir:      dir,
		links:    lnk,
		groups:   make(map[string]etf.Pid),
		done:     make(chan struct{}),
		allowUID: allowUID,
		allowGID: allowGID,
	}
	if err := n.spawnProcesses(); err != nil {
		en.Stop()
		return nil, err
	}
	go n.watchNodes()
	go n.returnMemory()
	return n, nil
}

// checkConfig refuses a configuration the node cannot run with, and reads
// its user and group lists.
func checkConfig(cfg Config) (allowUID, allowGID *idSet, err error) {
	if n, h, ok := strings.Cut(cfg.Name, "@"); !ok || n == "" || h == "" || strings.Contains(h, "@") {
		return nil, nil, fmt.Errorf("node name %q: want NAME@HOST, e.g. ps@127.0.0.1", cfg.Name)
	}
	if cfg.Cookie == "" {
		return nil, nil, errors.New("no cookie")
	}
	if !cfg.AllowAny && len(cfg.Allow) == 0 {
		return nil, nil, errors.New("no program is allowed: give --allow PATTERN (repeatable) or --allow-any")
	}
	if err := checkPatterns(cfg.Allow); err != nil {
		return nil, nil, err
	}
	if err := checkEnvPatterns(cfg.AllowEnv); err != nil {
		return nil, nil, err
	}
	if allowUID, err = parseIDs("--allow-uid", cfg.AllowUID, false); err != nil {
		return nil, nil, err
	}
	if allowGID, err = parseIDs("--allow-gid", cfg.AllowGID, true); err != nil {
		return nil, nil, err
	}
	if cfg.CgroupBase != "" {
		if err := relPath("cgroup-base", cfg.CgroupBase); err != nil {
			return nil, nil, fmt.Errorf("--cgroup-base %q: want a clean path relative to the cgroup root", cfg.CgroupBase)
		}
	}
	return allowUID, allowGID, nil
}

// spawnProcesses starts the node's own processes: the rpc client and the
// registered spawner, both taking the network's messages directly.
func (n *Node) spawnProcesses() error {
	var err error
	n.rpc = newRPCClient()
	if n.rpc.proc, err = n.ergo.Spawn("", gen.ProcessOptions{MailboxSize: mainMailbox}, n.rpc.loop); err != nil {
		return fmt.Errorf("starting the rpc process: %w", err)
	}
	if n.links != nil {
		if n.rpc.selfEnc, err = encodeTerm(n.rpc.proc.Self()); err != nil {
			return fmt.Errorf("encoding the rpc process's pid: %w", err)
		}
		n.rpc.links = n.links
	}
	n.dir.add(n.rpc.proc.Self(), "", n.rpc.loop)
	sp := newLoopProc(n.handleSpawner, nil)
	sp.inline = true // handleSpawner never blocks: an open runs on its own goroutine
	if n.spawner, err = n.ergo.Spawn(RegisteredName, gen.ProcessOptions{MailboxSize: mainMailbox}, sp); err != nil {
		return fmt.Errorf("registering %s: %w", RegisteredName, err)
	}
	n.dir.add(n.spawner.Self(), RegisteredName, sp)
	if n.links != nil {
		if n.spawnerEnc, err = encodeTerm(n.spawner.Self()); err != nil {
			return fmt.Errorf("encoding the spawner's pid: %w", err)
		}
	}
	return nil
}

// Name is the node's name.
func (n *Node) Name() string { return n.ergo.Name() }

// EnsureEPMD starts "epmd -daemon" when nothing listens on epmd's port.
func EnsureEPMD() error {
	addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(dist.DefaultEPMDPort))
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		return nil
	}
	out, err := exec.Command("epmd", "-daemon").CombinedOutput()
	if err != nil {
		return fmt.Errorf("epmd is not running and \"epmd -daemon\" failed: %v %s", err, strings.TrimSpace(string(out)))
	}
	for i := 0; i < 100; i++ {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("started epmd but it does not listen on port 4369")
}

// handleSpawner runs on the registered process's loop, or on the
// connection's reader that delivered the request (loopProc.inline): it
// never blocks, every reply is written from a goroutine of its own.
func (n *Node) handleSpawner(msg interface{}) {
	from, req, ok := parseCall(msg)
	if !ok {
		n.log.Printf("%s: ignoring %s", RegisteredName, describe(msg))
		return
	}
	if why, ok := tooLarge(req); ok {
		go n.reply(from, errorTerm(etf.Tuple{etf.Atom("too_large"), []byte(why)}))
		return
	}
	open, ok := tagged(req, "open", 5)
	if !ok {
		go n.reply(from, errorTerm(etf.Tuple{etf.Atom("badcall"), req}))
		return
	}
	go func() {
		n.opens <- struct{}{}
		reply, c := n.open(open[1], open[2], open[3], open[4])
		<-n.opens
		if c == nil {
			n.reply(from, reply)
			return
		}
		// The child's monitor of its owner, then the reply: both written
		// directly (otpdist/monitors.go, reply.go), in one write when the
		// owner is the caller or on its node.
		dc := n.direct(c.req.owner.Node)
		if dc != nil {
			dc.Cork()
		}
		c.monitor = c.proc.MonitorProcess(c.req.owner)
		n.reply(from, reply)
		if dc != nil {
			if err := dc.Uncork(); err != nil {
				n.log.Printf("replying to %s: distribution: %v", from.pid, err)
			}
		}
		c.out.release() // the child may send now, after its monitor
	}()
}

// reply answers a call of the spawner's: straight onto the caller's
// connection when ergo serves one (replyDirect), else through ergo.
func (n *Node) reply(from callFrom, reply etf.Term) {
	if n.replyDirect(from, reply) {
		return
	}
	to, msg := from.replyTo(reply)
	if err := n.spawner.Send(to, msg); err != nil {
		n.log.Printf("replying to %s: %v", from.pid, err)
	}
}

// open starts a child and answers {:ok, pid} or {:error, reason}; a child
// started is returned too, its monitor of its owner not set yet and its
// queue held (see handleSpawner).
func (n *Node) open(command, args, opts, owner etf.Term) (etf.Term, *child) {
	req, err := parseOpen(command, args, opts, owner)
	if err != nil {
		return n.openError(err), nil
	}
	if !n.reserve() {
		n.mu.Lock()
		stopping := n.stopping
		n.mu.Unlock()
		if stopping {
			return errorTerm(etf.Atom("shutting_down")), nil
		}
		return errorTerm(etf.Tuple{etf.Atom("too_many_children"), n.cfg.MaxChildren}), nil
	}
	c, err := n.start(req)
	if err != nil {
		n.release()
		return n.openError(err), nil
	}
	return etf.Tuple{atomOK, c.self}, c
}

func (n *Node) openError(err error) etf.Term {
	var ba *badarg
	var na *notAllowedError
	var se *procctl.SpawnError
	var ce *cgroupError
	switch {
	case errors.As(err, &ba):
		return errorTerm(ba.term())
	case errors.As(err, &na):
		return errorTerm(etf.Tuple{etf.Atom("not_allowed"), []byte(na.path)})
	case errors.As(err, &se):
		return errorTerm(etf.Tuple{etf.Atom(se.Reason), []byte(se.Error())})
	case errors.As(err, &ce):
		return errorTerm(etf.Tuple{etf.Atom("badcgroup"), []byte(ce.Error())})
	}
	return errorTerm(etf.Tuple{etf.Atom("einval"), []byte(err.Error())})
}

type cgroupError struct{ err error }

func (e *cgroupError) Error() string { return e.err.Error() }
func (e *cgroupError) Unwrap() error { return e.err }

func (n *Node) reserve() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopping || (n.cfg.MaxChildren > 0 && n.running+n.reserved >= n.cfg.MaxChildren) {
		return false
	}
	n.reserved++
	return true
}

func (n *Node) release() {
	n.mu.Lock()
	n.reserved--
	n.mu.Unlock()
}

// start spawns the OS process and its ergo process.
func (n *Node) start(req *openRequest) (*child, error) {
	if err := n.checkEnv(req); err != nil {
		return nil, err
	}
	env := req.environ(os.Environ())
	prog, err := n.openProgram(req, env)
	if err != nil {
		return nil, err
	}
	defer prog.file.Close() // the child has its own reference once started
	cred, err := n.credential(req)
	if err != nil {
		return nil, err
	}
	hreq := hostRequest(req, prog, env, cred)
	c := newChild(n, req)
	c.path = prog.path
	if req.cgWanted {
		g, err := n.createGroup(req)
		if err != nil {
			return nil, err
		}
		hreq.Group = g // the session deletes it
	}
	s, err := host.Start(hreq, c, n.log.Printf)
	if err != nil {
		return nil, err
	}
	c.s, c.pc = s, s.Child()
	c.window = c.pc.Window()
	if req.flow == flowQueueLen {
		c.flow = newFlowCtl(c, c.window.Size())
	}
	proc, err := n.ergo.Spawn("", gen.ProcessOptions{MailboxSize: childMailbox}, c.loop)
	if err != nil {
		s.Abandon()
		s.Wait() // and its cgroup is gone
		return nil, fmt.Errorf("spawning the ergo process: %w", err)
	}
	c.proc, c.self = proc, proc.Self()
	n.dir.add(c.self, "", c.loop)
	n.dir.watch(req.owner, c.loop) // before the monitor: its DOWN may come at once
	n.adopt(c)
	// The monitor of the owner is set, and c.out released, by the open's
	// goroutine (handleSpawner), with the reply.
	return c, nil
}

// direct is the connection ergo serves to node through otpdist, or nil.
func (n *Node) direct(node etf.Atom) otpdist.Direct {
	if n.links == nil {
		return nil
	}
	return n.links.Direct(string(node))
}

// hostRequest is the session an open asks for, its program opened and
// its environment merged and checked.
func hostRequest(req *openRequest, prog *program, env []string, cred *syscall.Credential) host.Request {
	arg0 := req.arg0
	if arg0 == "" {
		arg0 = req.command
	}
	hreq := host.Request{
		Program:        prog.path,
		Exec:           prog.file,
		Args:           req.args,
		Arg0:           arg0,
		Dir:            req.dir,
		BaseEnv:        env, // already merged and checked
		Credential:     cred,
		Window:         req.window,
		StdinLimit:     req.stdinLimit,
		StdinAck:       req.stdinAck,
		MaxRead:        otpdist.MaxChunk,
		DelayToSIGKILL: req.delay,
		// Sweep stays false: this program runs many children.
	}
	switch {
	case req.stderrToStdout:
		hreq.Stderr = procctl.ToStdout
	case req.stderrOnly:
		hreq.Stdout = procctl.Null
	}
	return hreq
}

// adopt counts a started child among the node's, and sets what its exit
// undoes.
func (n *Node) adopt(c *child) {
	n.mu.Lock()
	n.reserved--
	n.running++
	n.children[c] = struct{}{}
	n.markers[c.pc.Marker()] = true
	n.changed = time.Now()
	n.mu.Unlock()
	// The slot is free before the owner hears of the exit, so an owner that
	// opens again on {'EXIT', Pid, _} is not refused by --max-children.
	c.exiting = func() {
		n.mu.Lock()
		n.running--
		n.mu.Unlock()
	}
	c.ended = func() {
		if c.flow != nil {
			c.flow.stop()
		}
		n.dir.remove(c.self)
		n.dir.unwatch(c.dest, c.loop)
		c.loop.Stop("normal")
		n.mu.Lock()
		delete(n.children, c)
		delete(n.markers, c.pc.Marker())
		n.changed = time.Now()
		n.mu.Unlock()
		close(c.finished)
		n.killEscapees()
	}
}

func (n *Node) createGroup(req *openRequest) (*claimedGroup, error) {
	const opt = "cgroup_controllers"
	if n.cfg.CgroupBase == "" {
		return nil, bad(opt, "this node was started without --cgroup-base, so it creates no cgroups")
	}
	var p string
	switch {
	case req.cgPath != "":
		p = path.Join(n.cfg.CgroupBase, req.cgPath)
	case req.cgBase != "":
		p = path.Join(n.cfg.CgroupBase, req.cgBase, randomName())
	default:
		p = path.Join(n.cfg.CgroupBase, randomName())
	}
	if err := n.claimGroup(p, req.owner); err != nil {
		return nil, err
	}
	g, err := cgroup.Create(cgroup.Spec{Controllers: req.controllers, Path: p, Sets: req.sets, Logf: n.log.Printf})
	if err != nil {
		n.releaseGroup(p)
		return nil, &cgroupError{err}
	}
	return &claimedGroup{Group: g, n: n, path: p}, nil
}

func randomName() string {
	var b [8]byte
	rand.Read(b[:])
	return "ps-" + hex.EncodeToString(b[:])
}

// watchNodes ends children whose owner's node is no longer connected, in
// case the DOWN that says so was lost.
func (n *Node) watchNodes() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-n.done:
			return
		case <-t.C:
		}
		n.killEscapees()
		connected := map[string]bool{}
		for _, name := range n.ergo.Nodes() {
			connected[name] = true
		}
		n.mu.Lock()
		var lost []*child
		for c := range n.children {
			if !connected[string(c.currentOwner().Node)] {
				lost = append(lost, c)
			}
		}
		n.mu.Unlock()
		for _, c := range lost {
			c.ownerDown("the owner's node " + string(c.currentOwner().Node) + " is not connected")
		}
	}
}

// killEscapees kills the processes reparented to this node that no live
// child claims (procctl.KillUnclaimed): they dropped their child's marker
// and left its session, and would otherwise outlive every termination
// without a cgroup and not count against --max-children. It runs every
// second and after each child's end.
//
// Runs do not pile up: one that finds another running asks it to run once
// more and returns, so 1 000 children ending at once cost a few runs, not
// 1 000 (each lists ps_port's children and every child's marker).
func (n *Node) killEscapees() {
	n.mu.Lock()
	if n.escaping {
		n.again = true
		n.mu.Unlock()
		return
	}
	n.escaping = true
	n.mu.Unlock()
	claimed := func(m string) bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.markers[m]
	}
	for {
		for _, pid := range procctl.KillUnclaimed(claimed) {
			n.log.Printf("killed process %d: reparented to this node, it carries no live child's %s (it dropped it and left its child's session)",
				pid, procctl.MarkerEnv)
		}
		n.mu.Lock()
		if !n.again {
			n.escaping = false
			n.mu.Unlock()
			return
		}
		n.again = false
		n.mu.Unlock()
	}
}

// Children is the number of live children.
func (n *Node) Children() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.children)
}

// Shutdown refuses new children, terminates every child as a port close
// does, lets their owners get the rest of their output and exit messages
// (waiting at most timeout), and stops the node.
func (n *Node) Shutdown(timeout time.Duration) {
	n.mu.Lock()
	if n.stopping {
		n.mu.Unlock()
		n.Wait()
		return
	}
	n.stopping = true
	var all []*child
	for c := range n.children {
		all = append(all, c)
	}
	n.mu.Unlock()
	deadline := time.After(timeout)
	for _, c := range all {
		c.terminate()
	}
	for _, c := range all {
		select {
		case <-c.finished:
		case <-deadline:
			// Owners that do not read: stop waiting for their window.
			c.window.Close()
			select {
			case <-c.finished:
			case <-time.After(time.Second):
			}
		}
	}
	time.Sleep(100 * time.Millisecond) // let the connections flush
	close(n.done)
	// ergo's Stop takes about a second to wind its applications down; the
	// children are gone, so do not wait for it longer than this.
	stopped := make(chan struct{})
	go func() { n.ergo.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(300 * time.Millisecond):
	}
}

// Wait blocks until the node has stopped.
func (n *Node) Wait() {
	n.ergo.Wait()
}
