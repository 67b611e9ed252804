// Package blackbox tests the ps_port binary from outside, driving it exactly
// as the BEAM does: {packet,4} frames of external term format on its stdin
// and stdout.
package blackbox

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/protonstream/ps_port/etf"
)

// psPort is the path of the ps_port binary built once for all tests.
var psPort string

func TestMain(m *testing.M) {
	if bin := os.Getenv("PS_PORT_BIN"); bin != "" {
		// Another build, e.g. an older one for a before/after figure
		// (bench/kill.sh).
		psPort = bin
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "ps_port_bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	psPort = filepath.Join(dir, "ps_port")
	// Both binaries: "ps_port node" execs ps_port_node beside it.
	build := exec.Command("go", "build", "-o", dir+"/", "../../cmd/ps_port", "../../cmd/ps_port_node")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building ps_port:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// portProc is one ps_port started as a {packet,4} port.
type portProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr *syncBuffer
	frames chan etf.Term
	waited chan struct{}
}

// startPort starts ps_port with args and reads its frames in the background.
func startPort(t *testing.T, args ...string) *portProc {
	t.Helper()
	cmd := exec.Command(psPort, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &portProc{t: t, cmd: cmd, stdin: stdin, stdout: bufio.NewReaderSize(out, 1<<20),
		stderr: &syncBuffer{}, frames: make(chan etf.Term, 1024), waited: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.stdin.Close()
		select {
		case <-p.waited:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-p.waited
		}
	})
	go p.readFrames()
	return p
}

func (p *portProc) readFrames() {
	defer close(p.frames)
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(p.stdout, hdr[:]); err != nil {
			p.cmd.Wait()
			close(p.waited)
			return
		}
		b := make([]byte, binary.BigEndian.Uint32(hdr[:]))
		if _, err := io.ReadFull(p.stdout, b); err != nil {
			p.t.Errorf("truncated frame: %v", err)
			p.cmd.Wait()
			close(p.waited)
			return
		}
		t, err := etf.Decode(b)
		if err != nil {
			p.t.Errorf("undecodable frame % x: %v", b, err)
			continue
		}
		p.frames <- t
	}
}

// send writes term t as one frame.
func (p *portProc) send(t etf.Term) {
	p.t.Helper()
	b, err := etf.Encode(t)
	if err != nil {
		p.t.Fatal(err)
	}
	p.sendRaw(b)
}

func (p *portProc) sendRaw(b []byte) {
	p.t.Helper()
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(b)))
	if _, err := p.stdin.Write(append(frame, b...)); err != nil {
		p.t.Fatalf("writing to ps_port: %v", err)
	}
}

// ack acknowledges n bytes. ps_port may have exited already, as a BEAM
// port may have, so a failed write is not an error.
func (p *portProc) ack(n int) {
	b, _ := etf.Encode(etf.Tuple{atom("ack"), int64(n)})
	p.stdin.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...))
}

// next returns the next frame, failing the test after timeout.
func (p *portProc) next(timeout time.Duration) etf.Term {
	p.t.Helper()
	select {
	case t, ok := <-p.frames:
		if !ok {
			p.t.Fatalf("ps_port closed its stdout; stderr: %s", p.stderr)
		}
		return t
	case <-time.After(timeout):
		p.t.Fatalf("no frame within %v; stderr: %s", timeout, p.stderr)
	}
	return nil
}

// started expects {started, Pid} and returns Pid.
func (p *portProc) started() int {
	p.t.Helper()
	t := p.next(5 * time.Second)
	tu, ok := etf.MatchTuple(t, "started", 2)
	if !ok {
		p.t.Fatalf("want {started, Pid}, got %v; stderr: %s", t, p.stderr)
	}
	return int(tu[1].(int64))
}

// output is everything a child wrote, and how it ended.
type output struct {
	stdout, stderr []byte
	exit           etf.Term // {status, N} or {signal, N}
	others         []etf.Term
}

// collect reads frames until {exit, _}, acking output as it goes when ack is
// set, and then waits for ps_port to exit.
func (p *portProc) collect(ack bool, timeout time.Duration) output {
	p.t.Helper()
	var o output
	deadline := time.After(timeout)
	for {
		var t etf.Term
		var ok bool
		select {
		case t, ok = <-p.frames:
			if !ok {
				p.t.Fatalf("ps_port exited without an exit frame; stderr: %s", p.stderr)
			}
		case <-deadline:
			p.t.Fatalf("no exit frame within %v (stdout so far %d bytes); stderr: %s", timeout, len(o.stdout), p.stderr)
		}
		if tu, ok := etf.MatchTuple(t, "stdout", 2); ok {
			o.stdout = append(o.stdout, tu[1].([]byte)...)
			if ack {
				p.ack(len(tu[1].([]byte)))
			}
			continue
		}
		if tu, ok := etf.MatchTuple(t, "stderr", 2); ok {
			o.stderr = append(o.stderr, tu[1].([]byte)...)
			if ack {
				p.ack(len(tu[1].([]byte)))
			}
			continue
		}
		if tu, ok := etf.MatchTuple(t, "exit", 2); ok {
			o.exit = tu[1]
			return o
		}
		o.others = append(o.others, t)
	}
}

// exitCode closes the port, as an owner does after the exit frame, waits for
// ps_port to exit and returns its exit code.
func (p *portProc) exitCode(timeout time.Duration) int {
	p.t.Helper()
	p.stdin.Close()
	for range p.frames {
	}
	select {
	case <-p.waited:
	case <-time.After(timeout):
		p.t.Fatalf("ps_port still running after %v", timeout)
	}
	return p.cmd.ProcessState.ExitCode()
}

// syncBuffer collects ps_port's stderr, written by exec's copier goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// waitGone waits until pid is gone and fails the test after timeout.
func waitGone(t *testing.T, pid int, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for alive(pid) {
		if time.Since(start) > timeout {
			t.Fatalf("process %d still alive after %v", pid, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

func atom(s string) etf.Atom { return etf.Atom(s) }

func status(n int64) etf.Term { return etf.Tuple{atom("status"), n} }
func signal(n int64) etf.Term { return etf.Tuple{atom("signal"), n} }
