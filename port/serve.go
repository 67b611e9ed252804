package port

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/protonstream/ps_port/etf"
	"github.com/protonstream/ps_port/host"
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

// SendSpawnError reports a child that could not be started, as the first
// and only frame, and returns the exit code ps_port should exit with: 4
// when its cgroup could not be made, 3 otherwise.
func (c *Conn) SendSpawnError(err error) int {
	reason, code := ReasonOf(err), ExitSpawn
	if reason == "badcgroup" {
		code = ExitCgroup
	}
	c.Send(etf.Tuple{etf.Atom("spawn_error"), etf.Atom(reason), []byte(err.Error())})
	return code
}

// ReasonOf is the reason atom a start error is reported with.
func ReasonOf(err error) string {
	var se *procctl.SpawnError
	if errors.As(err, &se) {
		return se.Reason
	}
	return "badarg"
}

// Started sends {started, pid}. Conn is the host.Output of the one child
// of --packet mode.
func (c *Conn) Started(pid int) {
	c.Send(etf.Tuple{etf.Atom("started"), int64(pid)})
}

// Error sends {error, reason, message}.
func (c *Conn) Error(reason, message string) {
	c.Send(etf.Tuple{etf.Atom("error"), etf.Atom(reason), []byte(message)})
}

// StdinWritten sends {stdin_written, n} (only with --stdin-ack).
func (c *Conn) StdinWritten(n int64) {
	c.Send(etf.Tuple{etf.Atom("stdin_written"), n})
}

// OOMKilled sends {oom_killed, count}.
func (c *Conn) OOMKilled(count uint64) {
	c.Send(etf.Tuple{etf.Atom("oom_killed"), count})
}

// Exit sends the last frame, {exit, {status, n}} or {exit, {signal, n}}.
func (c *Conn) Exit(st procctl.ExitStatus) {
	c.finished.Store(true)
	c.Send(etf.Tuple{etf.Atom("exit"), exitTerm(st)})
}

func exitTerm(st procctl.ExitStatus) etf.Term {
	if st.Signal != 0 {
		return etf.Tuple{etf.Atom("signal"), int64(st.Signal)}
	}
	return etf.Tuple{etf.Atom("status"), int64(st.Code)}
}

// Serve runs the packet protocol for the started child of session s (whose
// Output is c) until the child is gone and the owner has closed the port,
// and returns ps_port's exit code. stop delivers requests to terminate
// from outside the port (SIGTERM to ps_port).
func Serve(c *Conn, s *host.Session, stop <-chan os.Signal) int {
	closed := make(chan struct{})
	go func() {
		readCommands(c, s)
		close(closed)
	}()
	go func() {
		select {
		case <-stop:
			s.Stop()
		case <-s.Done():
		}
	}()
	s.Wait()
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
func readCommands(c *Conn, s *host.Session) {
	for {
		frame, err := c.ReadFrame()
		if errors.Is(err, io.EOF) {
			s.Abandon() // the port was closed: nobody reads output any more
			return
		}
		if err != nil { // the stream of frames is broken: nothing more can be read
			protocolError(c, s, err)
			s.Abandon()
			return
		}
		if c.finished.Load() {
			continue // the exit frame is out: nothing applies any more
		}
		if err := apply(s, frame); err != nil {
			protocolError(c, s, err)
			// The frames are intact: keep applying acks so the owner can
			// still drain the output while the child is terminated.
			drainAcks(c, s)
			return
		}
	}
}

func protocolError(c *Conn, s *host.Session, err error) {
	c.protocolErr.Store(true)
	msg := "bad frame from the owner: " + err.Error() + "; terminating the child"
	fmt.Fprintf(os.Stderr, "ps_port: %s\n", msg)
	c.Send(etf.Tuple{etf.Atom("error"), etf.Atom("badframe"), []byte(msg)})
	s.Stop()
}

var errBadTerm = errors.New("unexpected term")

// apply carries out one command frame.
func apply(s *host.Session, frame []byte) error {
	t, err := etf.Decode(frame)
	if err != nil {
		return err
	}
	switch t {
	case etf.Atom("eof"):
		s.EOF()
		return nil
	case etf.Atom("stop"):
		s.Stop()
		return nil
	}
	if tu, ok := etf.MatchTuple(t, "command", 2); ok {
		data, ok := tu[1].([]byte)
		if !ok {
			return fmt.Errorf("%w: {command, _} wants a binary, got %v", errBadTerm, tu[1])
		}
		s.Command(data)
		return nil
	}
	if tu, ok := etf.MatchTuple(t, "ack", 2); ok {
		n, ok := tu[1].(int64)
		if !ok || n < 0 {
			return fmt.Errorf("%w: {ack, N} wants a non-negative integer, got %v", errBadTerm, tu[1])
		}
		s.Ack(n)
		return nil
	}
	if tu, ok := etf.MatchTuple(t, "signal", 2); ok {
		n, ok := tu[1].(int64)
		if !ok {
			return fmt.Errorf("%w: {signal, N}: %v, got %v", errBadTerm, host.ErrBadSignal, tu[1])
		}
		if err := s.Signal(n); err != nil {
			return fmt.Errorf("%w: {signal, N}: %v", errBadTerm, err)
		}
		return nil
	}
	return fmt.Errorf("%w: %v (see docs/protocol.md for the commands ps_port takes)", errBadTerm, t)
}

// drainAcks keeps applying acks after a protocol error, so output already on
// its way can still be delivered while the child is being terminated.
func drainAcks(c *Conn, s *host.Session) {
	for {
		frame, err := c.ReadFrame()
		if err != nil {
			s.Abandon()
			return
		}
		if t, err := etf.Decode(frame); err == nil {
			if tu, ok := etf.MatchTuple(t, "ack", 2); ok {
				if n, ok := tu[1].(int64); ok && n >= 0 {
					s.Ack(n)
				}
			}
		}
	}
}
