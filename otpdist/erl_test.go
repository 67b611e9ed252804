package otpdist

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ergo-services/ergo"
	"github.com/ergo-services/ergo/etf"
	"github.com/ergo-services/ergo/gen"
	ergonode "github.com/ergo-services/ergo/node"
	"github.com/ergo-services/ergo/proto/dist"
)

// The translation against a real BEAM, both directions of the link
// protocol and long references, with an ergo node set up as ps_port's
// (Options). testDistWithErlang runs it with erlCmd as "erl"; this file
// runs it on the host's Erlang/OTP, otproot_test.go on the OTP of a Debian
// release's chroot (scripts/otp-root.sh).

const unlinkPeerErl = `-module(unlink_peer).
-export([start/0]).
start() ->
    register(peer, self()),
    process_flag(trap_exit, true),
    io:format("ready~n"),
    loop().
loop() ->
    receive
        {From, whoami} -> From ! {peer, self(), list_to_binary(erlang:system_info(otp_release))};
        {From, links} -> {links, L} = process_info(self(), links), From ! {links, L};
        {From, linker, Pid, Unlink} ->
            spawn(fun() -> link(Pid), Unlink andalso unlink(Pid), From ! {linker, self()}, exit(boom) end);
        {From, call, Pid} ->
            spawn(fun() -> From ! {called, catch gen:call(Pid, '$gen_call', hello, 5000)} end);
        {From, monitor_alias, Pid} ->
            Ref = monitor(process, Pid, [{alias, explicit_unalias}]),
            From ! monitoring,
            receive {'DOWN', Ref, process, Pid, R} -> From ! {down, R}
            after 5000 -> From ! no_down
            end;
        {From, flood, Pid, N} -> flood(Pid, 1, N), From ! flooded;
        stop -> halt(0);
        _ -> ok
    end,
    loop().
%% N messages to Pid, a monitor and a link set and removed among them.
flood(Pid, I, N) when I > N -> Pid ! {seq, done};
flood(Pid, I, N) ->
    Pid ! {seq, I},
    case I rem 50 of
        0 -> demonitor(monitor(process, Pid));
        25 -> link(Pid), unlink(Pid);
        _ -> ok
    end,
    flood(Pid, I + 1, N).
`

// erlPeer is an erl node running unlink_peer.
type erlPeer struct {
	name string
	cmd  *exec.Cmd
}

func startErlPeer(t *testing.T, erlCmd []string, cookie string) *erlPeer {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "unlink_peer") // /tmp: a chroot of scripts/otp-root.sh sees it too
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	src := filepath.Join(dir, "unlink_peer.erl")
	if err := os.WriteFile(src, []byte(unlinkPeerErl), 0o644); err != nil {
		t.Fatal(err)
	}
	// Compiled by the erlc beside erlCmd's erl ("erl" → "erlc"), so the
	// peer loads a .beam of its own release.
	erlc := append([]string(nil), erlCmd...)
	erlc[len(erlc)-1] += "c"
	cargs := append(append([]string(nil), erlc[1:]...), "-o", dir, src)
	if out, err := exec.Command(erlc[0], cargs...).CombinedOutput(); err != nil {
		t.Fatalf("%v (the node tests need Erlang/OTP on PATH): %v\n%s", erlc, err, out)
	}
	p := &erlPeer{name: randomNodeName("erl")}
	args := append(append([]string(nil), erlCmd[1:]...), "-name", p.name, "-setcookie", cookie, "-noshell", "-pa", dir, "-s", "unlink_peer", "start")
	p.cmd = exec.Command(erlCmd[0], args...)
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	p.cmd.Stderr = &stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %v: %v", erlCmd, err)
	}
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		if t.Failed() {
			t.Logf("erl stderr: %s", stderr.String())
		}
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- true
			}
		}
		close(ready)
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("erl exited before it was ready")
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("erl not ready after 60 s")
	}
	return p
}

func randomNodeName(prefix string) string {
	var b [4]byte
	rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:]) + "@127.0.0.1"
}

// goProc is an ergo process whose messages and exit signals arrive on a
// channel; it answers gen:calls with {hello_back, Request}.
type goProc struct {
	proc gen.Process
	msgs chan interface{}
	stop chan string
}

// exitSignal is an exit signal goProc trapped.
type exitSignal struct {
	from   etf.Pid
	reason string
}

func spawnGoProc(t *testing.T, en interface {
	Spawn(string, gen.ProcessOptions, gen.ProcessBehavior, ...etf.Term) (gen.Process, error)
}) *goProc {
	t.Helper()
	g := &goProc{msgs: make(chan interface{}, 100), stop: make(chan string, 1)}
	var err error
	if g.proc, err = en.Spawn("", gen.ProcessOptions{MailboxSize: 1024}, g); err != nil {
		t.Fatal(err)
	}
	return g
}

// ProcessInit implements gen.ProcessBehavior.
func (g *goProc) ProcessInit(p gen.Process, args ...etf.Term) (gen.ProcessState, error) {
	p.SetTrapExit(true)
	return gen.ProcessState{Process: p, State: g}, nil
}

// ProcessLoop implements gen.ProcessBehavior.
func (g *goProc) ProcessLoop(ps gen.ProcessState, started chan<- bool) string {
	ch := ps.ProcessChannels()
	started <- true
	for {
		select {
		case m := <-ch.Mailbox:
			g.handle(ps.Process, m.Message)
		case ex := <-ch.GracefulExit:
			g.msgs <- exitSignal{from: ex.From, reason: ex.Reason}
		case reason := <-g.stop:
			return reason
		case <-ps.Context().Done():
			return "kill"
		}
	}
}

// handle answers {'$gen_call', {Pid, Tag}, Req}, Tag a reference or
// [alias | Ref] (OTP 24+), and passes anything else on.
func (g *goProc) handle(p gen.Process, m etf.Term) {
	call, ok := m.(etf.Tuple)
	if !ok || len(call) != 3 || call[0] != etf.Atom("$gen_call") {
		g.msgs <- m
		return
	}
	from := call[1].(etf.Tuple)
	reply := etf.Tuple{etf.Atom("hello_back"), call[2]}
	switch tag := from[1].(type) {
	case etf.Ref:
		p.Send(from[0], etf.Tuple{tag, reply})
	case etf.List: // [alias | Ref]
		ref := tag[1].(etf.Ref)
		p.Send(etf.Alias(ref), etf.Tuple{etf.ListImproper{etf.Atom("alias"), ref}, reply})
	}
}

func (g *goProc) next(t *testing.T, what string) interface{} {
	t.Helper()
	select {
	case m := <-g.msgs:
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10 s", what)
	}
	return nil
}

// expectNothing fails if a message arrives within d.
func (g *goProc) expectNothing(t *testing.T, d time.Duration, what string) {
	t.Helper()
	select {
	case m := <-g.msgs:
		t.Fatalf("%s: got %#v", what, m)
	case <-time.After(d):
	}
}

var (
	ergoOnce   sync.Once
	ergoNode   ergonode.Node
	ergoCookie string
	ergoErr    error
)

// sharedErgoNode is one ergo node, set up as ps_port's, for every test in
// this process: ergo keeps some state in package variables, and a second
// node started beside a stopping one races with it.
func sharedErgoNode(t *testing.T) (ergonode.Node, string) {
	t.Helper()
	ergoOnce.Do(func() {
		ergoCookie = "C" + hex.EncodeToString([]byte(randomNodeName("c"))[:8])
		opts, _ := Options(Config{})
		opts.Registrar = dist.CreateRegistrar()
		ergoNode, ergoErr = ergo.StartNodeWithContext(context.Background(), randomNodeName("go"), ergoCookie, opts)
	})
	if ergoErr != nil {
		t.Fatal(ergoErr)
	}
	return ergoNode, ergoCookie
}

// testDistWithErlang runs the translation's checks against a peer started
// with erlCmd, which must run OTP release wantRelease ("29"; "" for any).
func testDistWithErlang(t *testing.T, erlCmd []string, wantRelease string) {
	ensureEPMD(t)
	en, cookie := sharedErgoNode(t)
	peer := startErlPeer(t, erlCmd, cookie)

	conns := make(chan *distConn, 10)
	onDistConn = func(name string, dc *distConn) {
		if name == peer.name {
			conns <- dc
		}
	}
	defer func() { onDistConn = nil }()
	g := spawnGoProc(t, en)
	self := g.proc.Self()
	peerName := gen.ProcessID{Name: "peer", Node: peer.name}

	// This node connects (the handshake's Start side).
	if err := g.proc.Send(peerName, etf.Tuple{self, etf.Atom("whoami")}); err != nil {
		t.Fatal(err)
	}
	who, ok := g.next(t, "whoami reply").(etf.Tuple)
	if !ok || len(who) != 3 {
		t.Fatalf("whoami: %#v", who)
	}
	peerPid := who[1].(etf.Pid)
	t.Logf("peer %s runs OTP %s", peer.name, who[2])
	if rel := fmt.Sprintf("%s", who[2]); wantRelease != "" && rel != wantRelease {
		t.Fatalf("the peer runs OTP %s, want %s", rel, wantRelease)
	}
	var dc *distConn
	select {
	case dc = <-conns:
	default:
		t.Fatalf("the connection to %s has no distConn", peer.name)
	}
	if !dc.unlinkID {
		t.Fatalf("the peer did not advertise UNLINK_ID")
	}
	links := func() etf.List {
		t.Helper()
		g.proc.Send(peerName, etf.Tuple{self, etf.Atom("links")})
		r, ok := g.next(t, "links").(etf.Tuple)
		if !ok || len(r) != 2 {
			t.Fatalf("links: %#v", r)
		}
		l, _ := r[1].(etf.List)
		return l
	}
	hasSelf := func(l etf.List) bool {
		for _, p := range l {
			if p == self {
				return true
			}
		}
		return false
	}

	t.Run("unlink from this node", func(t *testing.T) {
		g.proc.Link(peerPid)
		if l := links(); !hasSelf(l) {
			t.Fatalf("linked, but the peer's links are %v", l)
		}
		g.proc.Unlink(peerPid)
		// The UNLINK_ID went before this request, and its ack came
		// before this reply: had ergo seen the ack, it would have
		// dropped the connection.
		if l := links(); hasSelf(l) {
			t.Fatalf("unlinked, but the peer's links are %v", l)
		}
		g.proc.Link(peerPid)
		g.proc.Unlink(peerPid)
		g.proc.Link(peerPid)
		if l := links(); !hasSelf(l) {
			t.Fatalf("linked again, but the peer's links are %v", l)
		}
		g.proc.Unlink(peerPid)
		if l := links(); hasSelf(l) {
			t.Fatalf("links %v", l)
		}
		if out, acks := dc.stats.unlinkIDOut.Load(), dc.stats.unlinkIDAckIn.Load(); out != 3 || acks != 3 {
			t.Fatalf("%d UNLINK_IDs sent, %d acks consumed; want 3 and 3", out, acks)
		}
	})

	t.Run("unlink from the peer", func(t *testing.T) {
		// A linked process that exits with boom: the exit signal arrives.
		g.proc.Send(peerName, etf.Tuple{self, etf.Atom("linker"), self, false})
		l1 := g.next(t, "linker").(etf.Tuple)[1].(etf.Pid)
		ex, ok := g.next(t, "exit signal").(exitSignal)
		if !ok || ex.from != l1 || ex.reason != "boom" {
			t.Fatalf("want the exit signal from %s, got %#v", l1, ex)
		}
		// Linked, then unlinked: nothing arrives, and ergo forgot the link.
		g.proc.Send(peerName, etf.Tuple{self, etf.Atom("linker"), self, true})
		g.next(t, "linker")
		g.expectNothing(t, 300*time.Millisecond, "an exit signal after the peer unlinked")
		if l := g.proc.Links(); len(l) != 0 {
			t.Fatalf("ergo still has links %v", l)
		}
		if in, acks := dc.stats.unlinkIDIn.Load(), dc.stats.unlinkIDAckOut.Load(); in != 1 || acks != 1 {
			t.Fatalf("%d UNLINK_IDs received, %d acks sent; want 1 and 1", in, acks)
		}
	})

	t.Run("calls and monitors with the peer's references", func(t *testing.T) {
		g.proc.Send(peerName, etf.Tuple{self, etf.Atom("call"), self})
		if r := g.next(t, "call reply"); !termIs(r, `{called,{ok,{hello_back,hello}}}`) {
			t.Fatalf("gen:call to ergo: %#v", r)
		}
		g2 := spawnGoProc(t, en)
		g.proc.Send(peerName, etf.Tuple{self, etf.Atom("monitor_alias"), g2.proc.Self()})
		g.next(t, "monitoring")
		g2.stop <- "normal"
		if r := g.next(t, "DOWN"); !termIs(r, `{down,normal}`) {
			t.Fatalf("the DOWN of a monitor with an alias: %#v", r)
		}
	})

	t.Run("sends in order, on the reader and through ergo", func(t *testing.T) {
		// The SENDs between the monitors and links go on the reader
		// once ergo has routed those (local.go); the others through
		// ergo. Either way they arrive in the order sent.
		before := dc.stats.onReader.Load()
		const n = 500
		g.proc.Send(peerName, etf.Tuple{self, etf.Atom("flood"), self, n})
		for i := 1; i <= n; i++ {
			m, ok := g.next(t, "a flooded message").(etf.Tuple)
			if !ok || len(m) != 2 || m[0] != etf.Atom("seq") || fmt.Sprint(m[1]) != fmt.Sprint(i) {
				t.Fatalf("message %d: got %#v", i, m)
			}
		}
		if m := g.next(t, "the flood's end"); !termIs(m, "{seq,done}") {
			t.Fatalf("after %d messages: %#v", n, m)
		}
		if m := g.next(t, "flooded"); m != etf.Atom("flooded") {
			t.Fatalf("want flooded, got %#v", m)
		}
		if got := dc.stats.onReader.Load() - before; got == 0 {
			t.Fatalf("none of %d SENDs was handled on the connection's reader", n)
		} else {
			t.Logf("%d of %d SENDs handled on the reader", got, n+2)
		}
		if l := links(); hasSelf(l) {
			t.Fatalf("links %v after the flood's link and unlink", l)
		}
	})

	// The connection is still the one made first (nothing dropped it).
	if l := links(); hasSelf(l) {
		t.Fatalf("links %v", l)
	}
	select {
	case <-conns:
		t.Fatalf("the connection was made again")
	default:
	}
	g.proc.Send(peerName, etf.Atom("stop"))
}

// termIs compares a decoded term with how Erlang would print it, roughly.
func termIs(t interface{}, want string) bool {
	return strings.ReplaceAll(describeTerm(t), " ", "") == want
}

func describeTerm(t interface{}) string {
	switch v := t.(type) {
	case etf.Tuple:
		s := make([]string, len(v))
		for i, e := range v {
			s[i] = describeTerm(e)
		}
		return "{" + strings.Join(s, ",") + "}"
	case etf.Atom:
		return string(v)
	case string:
		return string(v)
	default:
		return fmt.Sprintf("%v", t)
	}
}

// ensureEPMD starts epmd (the registrar ergo uses) unless it runs.
func ensureEPMD(t *testing.T) {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(dist.DefaultEPMDPort))
	if out, err := exec.Command("epmd", "-daemon").CombinedOutput(); err != nil {
		t.Fatalf("epmd -daemon: %v %s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("epmd does not listen on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestDistWithErlang(t *testing.T) {
	testDistWithErlang(t, []string{"erl"}, "")
}
