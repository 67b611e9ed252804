package port

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/protonstream/ps_port/etf"
	"github.com/protonstream/ps_port/procctl"
)

// Exit codes of ps_port (docs/protocol.md).
const (
	ExitOK       = 0
	ExitUsage    = 2
	ExitSpawn    = 3
	ExitCgroup   = 4
	ExitProtocol = 5
)

// OOMCounter is implemented by a placement that can tell how many processes
// the kernel's OOM killer took from it (cgroup.Group).
type OOMCounter interface {
	OOMKills() (uint64, error)
}

// Deleter is implemented by a placement that must be removed once its child
// is gone (cgroup.Group).
type Deleter interface {
	Delete() error
}

// SendSpawnError reports a child that could not be started, as the first
// and only frame, and returns the exit code ps_port should exit with.
func (c *Conn) SendSpawnError(reason, message string, code int) int {
	c.Send(etf.Tuple{etf.Atom("spawn_error"), etf.Atom(reason), []byte(message)})
	return code
}

// Started sends {started, pid}; it is the procctl.Spec.Started hook of a
// child served by Serve, so the frame comes before any output.
func (c *Conn) Started(pid int) {
	c.Send(etf.Tuple{etf.Atom("started"), int64(pid)})
}

// Serve runs the packet protocol for a started child until the child is
// gone, and returns ps_port's exit code. stop delivers requests to terminate
// from outside the port (SIGTERM to ps_port).
func Serve(c *Conn, child *procctl.Child, placement procctl.Placement, stop <-chan os.Signal) int {
	closed := make(chan struct{})
	go func() {
		readCommands(c, child)
		close(closed)
	}()
	go func() {
		select {
		case <-stop:
			child.Terminate()
		case <-child.Done():
		}
	}()
	status := child.Wait()
	if oc, ok := placement.(OOMCounter); ok {
		if n, err := oc.OOMKills(); err == nil && n > 0 {
			c.Send(etf.Tuple{etf.Atom("oom_killed"), int64(n)})
		}
	}
	// The exit frame says the child is gone with everything it had: its
	// cgroup goes first.
	if d, ok := placement.(Deleter); ok {
		if err := d.Delete(); err != nil {
			fmt.Fprintf(os.Stderr, "ps_port: %v\n", err)
		}
	}
	exit := etf.Tuple{etf.Atom("status"), int64(status.Code)}
	if status.Signal != 0 {
		exit = etf.Tuple{etf.Atom("signal"), int64(status.Signal)}
	}
	c.finished.Store(true)
	c.Send(etf.Tuple{etf.Atom("exit"), exit})
	// Linger until the owner closes the port, so acks it sends for the last
	// output never hit a closed pipe (which the BEAM reports as epipe).
	<-closed
	if c.protocolErr.Load() {
		return ExitProtocol
	}
	return ExitOK
}

// readCommands applies the owner's frames to the child until the port
// closes.
func readCommands(c *Conn, child *procctl.Child) {
	for {
		frame, err := c.ReadFrame()
		if errors.Is(err, io.EOF) {
			// The port was closed: nobody reads output any more.
			child.Window().Close()
			child.Terminate()
			return
		}
		if err != nil { // the stream of frames is broken: nothing more can be read
			protocolError(c, child, err)
			child.Window().Close()
			return
		}
		if c.finished.Load() {
			continue // the exit frame is out: nothing applies any more
		}
		if err := apply(c, child, frame); err != nil {
			protocolError(c, child, err)
			// The frames are intact: keep applying acks so the owner can
			// still drain the output while the child is terminated.
			drainAcks(c, child)
			return
		}
	}
}

func protocolError(c *Conn, child *procctl.Child, err error) {
	c.protocolErr.Store(true)
	msg := "bad frame from the owner: " + err.Error() + "; terminating the child"
	fmt.Fprintf(os.Stderr, "ps_port: %s\n", msg)
	c.Send(etf.Tuple{etf.Atom("error"), etf.Atom("badframe"), []byte(msg)})
	child.Terminate()
}

var errBadTerm = errors.New("unexpected term")

// apply carries out one command frame.
func apply(c *Conn, child *procctl.Child, frame []byte) error {
	t, err := etf.Decode(frame)
	if err != nil {
		return err
	}
	switch t {
	case etf.Atom("eof"):
		child.CloseStdin()
		return nil
	case etf.Atom("stop"):
		child.Terminate()
		return nil
	}
	if tu, ok := etf.MatchTuple(t, "command", 2); ok {
		data, ok := tu[1].([]byte)
		if !ok {
			return fmt.Errorf("%w: {command, _} wants a binary, got %v", errBadTerm, tu[1])
		}
		if queued := child.StdinQueued(); c.StdinLimit > 0 && queued >= c.StdinLimit {
			msg := fmt.Sprintf("%d bytes for stdin refused: %d bytes are already waiting for the child to read them (--stdin-limit %d); slow down or raise the limit",
				len(data), queued, c.StdinLimit)
			c.Send(etf.Tuple{etf.Atom("error"), etf.Atom("stdin_overflow"), []byte(msg)})
			return nil
		}
		if err := child.Write(data); err != nil {
			msg := fmt.Sprintf("%d bytes for stdin not written: %v", len(data), err)
			c.Send(etf.Tuple{etf.Atom("error"), etf.Atom("stdin_closed"), []byte(msg)})
		}
		return nil
	}
	if tu, ok := etf.MatchTuple(t, "ack", 2); ok {
		n, ok := tu[1].(int64)
		if !ok || n < 0 {
			return fmt.Errorf("%w: {ack, N} wants a non-negative integer, got %v", errBadTerm, tu[1])
		}
		if !child.Window().Ack(int(min(n, 1<<40))) {
			fmt.Fprintf(os.Stderr, "ps_port: owner acked %d bytes, more than in flight; clamped\n", n)
		}
		return nil
	}
	if tu, ok := etf.MatchTuple(t, "signal", 2); ok {
		n, ok := tu[1].(int64)
		if !ok || n < 1 || n > 64 {
			return fmt.Errorf("%w: {signal, N} wants a signal number 1..64, got %v", errBadTerm, tu[1])
		}
		if err := child.Signal(syscall.Signal(n)); err != nil {
			msg := fmt.Sprintf("signal %d not sent: %v", n, err)
			c.Send(etf.Tuple{etf.Atom("error"), etf.Atom("signal"), []byte(msg)})
		}
		return nil
	}
	return fmt.Errorf("%w: %v (see docs/protocol.md for the commands ps_port takes)", errBadTerm, t)
}

// drainAcks keeps applying acks after a protocol error, so output already on
// its way can still be delivered while the child is being terminated.
func drainAcks(c *Conn, child *procctl.Child) {
	for {
		frame, err := c.ReadFrame()
		if err != nil {
			child.Window().Close()
			return
		}
		if t, err := etf.Decode(frame); err == nil {
			if tu, ok := etf.MatchTuple(t, "ack", 2); ok {
				if n, ok := tu[1].(int64); ok && n >= 0 {
					child.Window().Ack(int(min(n, 1<<40)))
				}
			}
		}
	}
}
