package port

import (
	"io"
	"os"
	"sync"

	"github.com/protonstream/ps_port/procctl"
)

// RawSink copies a child's captured output to the port as is, without
// framing: MuonTrap's --capture-output protocol.
type RawSink struct {
	mu sync.Mutex
	c  *Conn
}

// NewRawSink returns a sink that writes raw bytes to w.
func NewRawSink(w *os.File) *RawSink { return &RawSink{c: NewConn(nil, w)} }

// Stdout writes p to the port.
func (s *RawSink) Stdout(p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.writev(p, nil)
}

// Stderr writes p to the port too: in raw mode captured stderr is merged.
func (s *RawSink) Stderr(p []byte) error { return s.Stdout(p) }

// ServeRaw runs MuonTrap's protocol: every byte b read from in gives b+1
// bytes of output credit, and in reaching EOF (the port closing) terminates
// the child. It returns the child's exit status, or 128+signal, once the
// child's tree is gone and every output byte has been acknowledged (or the
// port closed): an owner that acks its last output must find the port still
// open, not get epipe.
func ServeRaw(in io.Reader, child *procctl.Child, stop <-chan os.Signal) int {
	go func() {
		buf := make([]byte, 512)
		for {
			n, err := in.Read(buf)
			credit := 0
			for _, b := range buf[:n] {
				credit += int(b) + 1
			}
			child.Window().Ack(credit)
			if err != nil {
				child.Window().Close()
				child.Terminate()
				return
			}
		}
	}()
	go func() {
		select {
		case <-stop:
			child.Terminate()
			// A SIGTERMed ps_port does not wait for acks either.
			child.Window().Close()
		case <-child.Done():
		}
	}()
	status := child.Wait()
	child.Window().WaitAcked()
	if status.Signal != 0 {
		return 128 + int(status.Signal)
	}
	return status.Code
}
