package port

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"time"

	"github.com/protonstream/ps_port/etf"
	"github.com/protonstream/ps_port/host"
	"github.com/protonstream/ps_port/procctl"
)

// SharedConfig is what every child of ServeShared gets unless its open
// frame says otherwise.
type SharedConfig struct {
	StdinLimit     int           // host.DefaultStdinLimit when 0
	Window         int           // procctl.DefaultWindow when 0
	DelayToSIGKILL time.Duration // between SIGTERM and SIGKILL
	Logf           host.Logf     // ps_port's log; nil discards
}

// MaxID is the largest child id of the shared protocol.
const MaxID = math.MaxInt32

// shared is ps_port --shared: many children over one {packet,4} port, every
// frame tagged with a child id ("Shared mode" in docs/protocol.md). One
// goroutine reads the port and applies frames; each child's session writes
// its own frames, serialized by the Conn, within its own window, so a child
// whose owner never acks stops only itself.
type shared struct {
	c   *Conn
	cfg SharedConfig

	mu      sync.Mutex
	live    map[int32]*entry // opened, exit not yet sent
	ended   idSet            // exit or spawn_error sent: frames are ignored
	base    []string         // environment opens start from; nil: ps_port's
	closing bool             // shutting down: opens are refused
	running sync.WaitGroup   // one per live entry
}

// entry is one live child; s is nil while it is being started, and the
// frames that come for it meanwhile wait in pending.
type entry struct {
	s       *host.Session
	pending []etf.Tuple
}

// ServeShared runs the shared protocol on c until the port closes (or the
// stream of frames breaks) or stop delivers a signal, then terminates every
// child, reports the exits that can still be written and returns ExitOK
// once every child's tree is gone.
func ServeShared(c *Conn, cfg SharedConfig, stop <-chan os.Signal) int {
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	sv := &shared{c: c, cfg: cfg, live: make(map[int32]*entry)}
	c.room = newRoomWait(c.wfd)
	readDone := make(chan struct{})
	go func() {
		sv.read()
		close(readDone)
	}()
	select {
	case <-readDone:
	case sig := <-stop:
		sv.cfg.Logf("%v: terminating every child", sig)
		sv.shutdown()
	}
	sv.running.Wait()
	return ExitOK
}

// read applies the owner's frames until the port closes.
func (sv *shared) read() {
	for {
		frame, err := sv.c.ReadFrame()
		if errors.Is(err, io.EOF) {
			sv.shutdown()
			return
		}
		if err != nil {
			msg := "the stream of frames is broken: " + err.Error() + "; terminating every child"
			sv.cfg.Logf("%s", msg)
			sv.c.Send(etf.Tuple{etf.Atom("error"), etf.Atom("badframe"), []byte(msg)})
			sv.shutdown()
			return
		}
		sv.apply(frame)
		// The owner read what it acked: room may be free for output.
		sv.c.room.freed()
	}
}

// shutdown terminates every child: nobody will ack any more, so their
// output drains freely.
func (sv *shared) shutdown() {
	sv.mu.Lock()
	sv.closing = true
	var all []*host.Session
	for _, e := range sv.live {
		if e.s != nil {
			all = append(all, e.s)
		}
	}
	sv.mu.Unlock()
	for _, s := range all {
		s.Abandon()
	}
}

// badframe answers a frame that cannot be applied: with the child's id when
// one could be read (id > 0), without otherwise. Nothing else is touched.
func (sv *shared) badframe(id int32, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if id > 0 {
		sv.cfg.Logf("bad frame for child id %d: %s", id, msg)
		sv.c.Send(etf.Tuple{etf.Atom("error"), etf.Int32(id), etf.Atom("badframe"), []byte(msg)})
		return
	}
	sv.cfg.Logf("bad frame: %s", msg)
	sv.c.Send(etf.Tuple{etf.Atom("error"), etf.Atom("badframe"), []byte(msg)})
}

// idOf reads a child id.
func idOf(t etf.Term) (int32, bool) {
	n, ok := t.(int64)
	if !ok || n < 1 || n > MaxID {
		return 0, false
	}
	return int32(n), true
}

// arities of the per-child frames, by tag.
var arities = map[etf.Atom]int{"open": 3, "command": 3, "eof": 2, "ack": 3, "signal": 3, "stop": 2}

// apply carries out one frame.
func (sv *shared) apply(frame []byte) {
	t, err := etf.Decode(frame)
	if err != nil {
		sv.badframe(0, "%v", err)
		return
	}
	tu, _ := t.(etf.Tuple)
	var tag etf.Atom
	if len(tu) > 0 {
		tag, _ = tu[0].(etf.Atom)
	}
	if tag == "environ" && len(tu) == 2 {
		sv.environ(tu[1])
		return
	}
	arity, known := arities[tag]
	if !known || len(tu) < 2 {
		sv.badframe(0, "unexpected term %s (see \"Shared mode\" in docs/protocol.md for the frames ps_port --shared takes)", describe(t))
		return
	}
	id, ok := idOf(tu[1])
	if !ok {
		sv.badframe(0, "%s frame %s: the id must be an integer in 1..%d", tag, describe(t), MaxID)
		return
	}
	if len(tu) != arity {
		sv.badframe(id, "%s frame %s: want a tuple of %d elements", tag, describe(t), arity)
		return
	}
	if tag == "open" {
		sv.open(id, tu[2])
		return
	}
	sv.mu.Lock()
	e := sv.live[id]
	ended := e == nil && sv.ended.has(id)
	var s *host.Session
	if e != nil {
		if s = e.s; s == nil {
			// Still starting: applied in order once it runs (or dropped
			// with it when it cannot start).
			e.pending = append(e.pending, tu)
		}
	}
	sv.mu.Unlock()
	switch {
	case ended:
		return // late: its exit is out (acks and commands race with it)
	case e == nil:
		sv.badframe(id, "%s frame for child id %d, which was never opened", tag, id)
		return
	case s != nil:
		sv.dispatch(s, id, tu)
	}
}

// dispatch applies a well-formed per-child frame to its session.
func (sv *shared) dispatch(s *host.Session, id int32, tu etf.Tuple) {
	switch tu[0].(etf.Atom) {
	case "command":
		data, ok := tu[2].([]byte)
		if !ok {
			sv.badframe(id, "{command, Id, Data}: want Data as a binary, got %s", describe(tu[2]))
			return
		}
		s.Command(data)
	case "eof":
		s.EOF()
	case "ack":
		n, ok := tu[2].(int64)
		if !ok || n < 0 {
			sv.badframe(id, "{ack, Id, Bytes}: want Bytes as a non-negative integer, got %s", describe(tu[2]))
			return
		}
		s.Ack(n)
	case "signal":
		n, ok := tu[2].(int64)
		if !ok {
			sv.badframe(id, "{signal, Id, Signum}: %v, got %s", host.ErrBadSignal, describe(tu[2]))
			return
		}
		if err := s.Signal(n); err != nil {
			sv.badframe(id, "{signal, Id, Signum}: %v", err)
		}
	case "stop":
		s.Stop()
	}
}

// environ replaces the base environment of later opens.
func (sv *shared) environ(t etf.Term) {
	env, err := envList(t, false)
	if err != nil {
		sv.badframe(0, "{environ, Env}: %v", err)
		return
	}
	set := make([]string, 0, len(env))
	for _, kv := range env {
		set = append(set, kv[0]+"="+kv[1])
	}
	sv.mu.Lock()
	sv.base = set
	sv.mu.Unlock()
}

// open starts child id.
func (sv *shared) open(id int32, opts etf.Term) {
	sv.mu.Lock()
	switch {
	case sv.live[id] != nil:
		sv.mu.Unlock()
		sv.badframe(id, "open: child id %d is in use; ids are never reused", id)
		return
	case sv.ended.has(id):
		sv.mu.Unlock()
		sv.badframe(id, "open: child id %d was used before; ids are never reused", id)
		return
	case sv.closing:
		sv.mu.Unlock()
		sv.spawnError(id, "shutting_down", "ps_port is shutting down (its port was closed or it got a signal to stop): nothing more is started")
		return
	}
	e := &entry{}
	sv.live[id] = e
	sv.running.Add(1)
	base := sv.base
	sv.mu.Unlock()
	// Started on a goroutine of its own, so that the frames of running
	// children (acks above all) never wait for a fork or a cgroup.
	go sv.start(id, e, opts, base)
}

// start starts child id, then applies the frames that came meanwhile.
func (sv *shared) start(id int32, e *entry, opts etf.Term, base []string) {
	req, err := sv.request(opts, base)
	var s *host.Session
	if err == nil {
		s, err = host.Start(req, &childOut{sv: sv, id: id}, sv.cfg.Logf)
	}
	if err != nil {
		sv.mu.Lock()
		delete(sv.live, id)
		sv.ended.add(id)
		sv.mu.Unlock()
		sv.running.Done()
		sv.spawnError(id, ReasonOf(err), err.Error())
		return
	}
	for {
		sv.mu.Lock()
		pending := e.pending
		e.pending = nil
		if len(pending) == 0 {
			e.s = s // from now on the reader applies frames itself
			closing := sv.closing
			sv.mu.Unlock()
			if closing { // shutdown ran while it started
				s.Abandon()
			}
			return
		}
		sv.mu.Unlock()
		for _, tu := range pending {
			sv.dispatch(s, id, tu)
		}
	}
}

// spawnError tells the owner (and only the owner, as in --packet mode)
// that child id did not start.
func (sv *shared) spawnError(id int32, reason, msg string) {
	sv.c.Send(etf.Tuple{etf.Atom("spawn_error"), etf.Int32(id), etf.Atom(reason), []byte(msg)})
}

// exited is called once child id's exit frame is out.
func (sv *shared) exited(id int32) {
	sv.mu.Lock()
	delete(sv.live, id)
	sv.ended.add(id)
	sv.mu.Unlock()
	sv.running.Done()
}

// childOut is the host.Output (and procctl.Mover) of one child: its frames,
// tagged with its id.
type childOut struct {
	sv *shared
	id int32
}

func (o *childOut) Stdout(p []byte) error { return o.sv.c.sendBinary("stdout", int64(o.id), p) }
func (o *childOut) Stderr(p []byte) error { return o.sv.c.sendBinary("stderr", int64(o.id), p) }

func (o *childOut) MoveStdout(fd, n int) error { return o.sv.c.move("stdout", int64(o.id), fd, n) }
func (o *childOut) MoveStderr(fd, n int) error { return o.sv.c.move("stderr", int64(o.id), fd, n) }

func (o *childOut) Started(pid int) {
	o.sv.c.Send(etf.Tuple{etf.Atom("started"), etf.Int32(o.id), int64(pid)})
}

func (o *childOut) Error(reason, message string) {
	o.sv.c.Send(etf.Tuple{etf.Atom("error"), etf.Int32(o.id), etf.Atom(reason), []byte(message)})
}

func (o *childOut) StdinWritten(n int64) {
	o.sv.c.Send(etf.Tuple{etf.Atom("stdin_written"), etf.Int32(o.id), n})
}

func (o *childOut) OOMKilled(count uint64) {
	o.sv.c.Send(etf.Tuple{etf.Atom("oom_killed"), etf.Int32(o.id), count})
}

func (o *childOut) Exit(st procctl.ExitStatus) {
	o.sv.c.Send(etf.Tuple{etf.Atom("exit"), etf.Int32(o.id), exitTerm(st)})
	o.sv.exited(o.id)
}
