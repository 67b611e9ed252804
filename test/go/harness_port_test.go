package blackbox

// ps_port as a port: one child (--packet), many children (--shared, frames
// sorted by child id) and MuonTrap's raw mode.

import (
	"bufio"
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"hash"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/protonstream/ps_port/etf"
)

// startPipes starts ps_port with args, its stdin and stdout piped and its
// stderr collected, as a BEAM port runs it.
func startPipes(t testing.TB, args ...string) (*exec.Cmd, io.WriteCloser, io.Reader, *syncBuffer) {
	t.Helper()
	return startPipesOf(t, psPort, args...)
}

// startPipesOf is startPipes with another binary (ps_port_lean).
func startPipesOf(t testing.TB, bin string, args ...string) (*exec.Cmd, io.WriteCloser, io.Reader, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, stdin, out, stderr
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

// startPort starts ps_port with args and reads its frames in the
// background. Cleanup closes its stdin, as a closed port does, and kills it
// when it has not exited 5 s later.
func startPort(t *testing.T, args ...string) *portProc {
	t.Helper()
	return startPortOf(t, psPort, args...)
}

// startPortOf is startPort with another binary (ps_port_lean).
func startPortOf(t *testing.T, bin string, args ...string) *portProc {
	t.Helper()
	cmd, stdin, out, stderr := startPipesOf(t, bin, args...)
	p := &portProc{t: t, cmd: cmd, stdin: stdin, stdout: bufio.NewReaderSize(out, 1<<20),
		stderr: stderr, frames: make(chan etf.Term, 1024), waited: make(chan struct{})}
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

// rawProc is ps_port in MuonTrap's raw mode: stdout is the child's bytes,
// stdin takes acks (byte b acknowledges b+1 bytes).
type rawProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Reader
	exited chan error
}

// startRaw starts ps_port in raw mode; cleanup closes its stdin and kills
// it.
func startRaw(t *testing.T, args ...string) *rawProc {
	t.Helper()
	cmd, stdin, out, _ := startPipes(t, args...)
	p := &rawProc{cmd: cmd, stdin: stdin, out: bufio.NewReader(out), exited: make(chan error, 1)}
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
	})
	return p
}

// pidLine reads the child's first line, its pid, and returns it and the
// line.
func (p *rawProc) pidLine(t *testing.T) (int, string) {
	t.Helper()
	line, err := p.out.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the child's output: %q, %v", line, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("child wrote %q, want its pid", line)
	}
	return pid, line
}

// packet is b as one {packet,4} frame: its length, big-endian, then b.
func packet(b []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
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
	if _, err := p.stdin.Write(packet(b)); err != nil {
		p.t.Fatalf("writing to ps_port: %v", err)
	}
}

// ack acknowledges n bytes. ps_port may have exited already, as a BEAM
// port may have, so a failed write is not an error.
func (p *portProc) ack(n int) {
	b, _ := etf.Encode(etf.Tuple{atom("ack"), int64(n)})
	p.stdin.Write(packet(b))
}

// next returns the next frame, failing the test after timeout (plus
// testSlack: CI machines are shared and loaded).
func (p *portProc) next(timeout time.Duration) etf.Term {
	p.t.Helper()
	select {
	case t, ok := <-p.frames:
		if !ok {
			p.t.Fatalf("ps_port closed its stdout; stderr: %s", p.stderr)
		}
		return t
	case <-time.After(timeout + testSlack()):
		p.t.Fatalf("no frame within %v (+ slack); stderr: %s", timeout, p.stderr)
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

// nextTuple returns the next frame, which must be a tuple of n elements
// tagged tag, failing the test after timeout.
func (p *portProc) nextTuple(tag string, n int, timeout time.Duration) etf.Tuple {
	p.t.Helper()
	f := p.next(timeout)
	tu, ok := etf.MatchTuple(f, etf.Atom(tag), n)
	if !ok {
		p.t.Fatalf("want a {%s, ...} of %d elements, got %v", tag, n, f)
	}
	return tu
}

// nextOutput returns the next frame's {stdout, Data} and acks it.
func (p *portProc) nextOutput(timeout time.Duration) []byte {
	p.t.Helper()
	out := p.nextTuple("stdout", 2, timeout)[1].([]byte)
	p.ack(len(out))
	return out
}

// nextPid reads the next frame, which must be {stdout, Data} with Data a
// pid on a line (a child that reports its grandchild's), and acks it.
func (p *portProc) nextPid(timeout time.Duration) int {
	p.t.Helper()
	out := p.nextOutput(timeout)
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		p.t.Fatalf("child wrote %q, want a pid", out)
	}
	return pid
}

// output is everything a child wrote, and how it ended.
type output struct {
	stdout, stderr []byte
	exit           etf.Term // {status, N} or {signal, N}
	others         []etf.Term
}

// collect reads frames until {exit, _}, acking output as it goes when ack is
// set, and then waits for ps_port to exit. It fails the test after timeout
// plus testSlack.
func (p *portProc) collect(ack bool, timeout time.Duration) output {
	p.t.Helper()
	var o output
	deadline := time.After(timeout + testSlack())
	for {
		var t etf.Term
		var ok bool
		select {
		case t, ok = <-p.frames:
			if !ok {
				p.t.Fatalf("ps_port exited without an exit frame; stderr: %s", p.stderr)
			}
		case <-deadline:
			p.t.Fatalf("no exit frame within %v (+ slack) (stdout so far %d bytes); stderr: %s", timeout, len(o.stdout), p.stderr)
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
// ps_port to exit and returns its exit code. It fails the test when
// ps_port runs on timeout plus testSlack after the port closed.
func (p *portProc) exitCode(timeout time.Duration) int {
	p.t.Helper()
	p.stdin.Close()
	for range p.frames {
	}
	select {
	case <-p.waited:
	case <-time.After(timeout + testSlack()):
		p.t.Fatalf("ps_port still running after %v (+ slack)", timeout)
	}
	return p.cmd.ProcessState.ExitCode()
}

// sharedPort is one ps_port --shared, its frames sorted by child id.
type sharedPort struct {
	*portProc
	mu     sync.Mutex
	queues map[int64]*frameQueue
	noID   *frameQueue // frames that carry no id ({error, badframe, _})
	wmu    sync.Mutex  // one frame at a time on ps_port's stdin
}

// frameQueue is an unbounded queue of one child's frames, so the test never
// stops reading ps_port's stdout because one child's frames are not
// consumed (which would stall every child: a BEAM port always reads).
type frameQueue struct {
	mu     sync.Mutex
	cond   sync.Cond
	frames []etf.Tuple
	closed bool
}

func newFrameQueue() *frameQueue {
	q := &frameQueue{}
	q.cond.L = &q.mu
	return q
}

func (q *frameQueue) push(t etf.Tuple) {
	q.mu.Lock()
	q.frames = append(q.frames, t)
	q.cond.Broadcast()
	q.mu.Unlock()
}

func (q *frameQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}

// pop returns the next frame, or nil when the port closed or timeout passed.
func (q *frameQueue) pop(timeout time.Duration) etf.Tuple {
	timer := time.AfterFunc(timeout, func() {
		q.mu.Lock()
		q.cond.Broadcast()
		q.mu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(timeout)
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.frames) == 0 && !q.closed && time.Now().Before(deadline) {
		q.cond.Wait()
	}
	if len(q.frames) == 0 {
		return nil
	}
	t := q.frames[0]
	q.frames = q.frames[1:]
	return t
}

// startShared starts ps_port --shared with extra flags.
func startShared(t *testing.T, args ...string) *sharedPort {
	t.Helper()
	sp := &sharedPort{portProc: startPort(t, append([]string{"--shared"}, args...)...),
		queues: make(map[int64]*frameQueue), noID: newFrameQueue()}
	go sp.demux()
	return sp
}

// demux sorts frames by id: the second element of every frame that has one.
func (sp *sharedPort) demux() {
	for f := range sp.frames {
		tu, ok := f.(etf.Tuple)
		if !ok || len(tu) < 2 {
			sp.t.Errorf("frame without a tuple: %v", f)
			continue
		}
		if id, ok := tu[1].(int64); ok {
			sp.queue(id).push(tu)
		} else {
			sp.noID.push(tu)
		}
	}
	sp.mu.Lock()
	for _, q := range sp.queues {
		q.close()
	}
	sp.mu.Unlock()
	sp.noID.close()
}

func (sp *sharedPort) queue(id int64) *frameQueue {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	q := sp.queues[id]
	if q == nil {
		q = newFrameQueue()
		sp.queues[id] = q
	}
	return q
}

// sendTerm writes one frame; a ps_port that has exited is not an error
// here (a port's owner may still write to it).
func (sp *sharedPort) sendTerm(t etf.Term) {
	b, err := etf.Encode(t)
	if err != nil {
		sp.t.Errorf("encoding %v: %v", t, err)
		return
	}
	sp.wmu.Lock()
	defer sp.wmu.Unlock()
	sp.stdin.Write(packet(b))
}

// open sends {open, id, opts} with the program and its args first.
func (sp *sharedPort) open(id int64, program string, args []string, opts ...etf.Term) {
	l := etf.List{etf.Tuple{atom("program"), []byte(program)}, etf.Tuple{atom("args"), binList(args)}}
	sp.sendTerm(etf.Tuple{atom("open"), id, append(l, opts...)})
}

func binList(ss []string) etf.List {
	l := etf.List{}
	for _, s := range ss {
		l = append(l, []byte(s))
	}
	return l
}

// next returns child id's next frame, failing the test after timeout plus
// testSlack.
func (sp *sharedPort) next(id int64, timeout time.Duration) etf.Tuple {
	sp.t.Helper()
	f := sp.queue(id).pop(timeout + testSlack())
	if f == nil {
		sp.t.Fatalf("child %d: no frame within %v (+ slack); stderr: %s", id, timeout, sp.stderr)
	}
	return f
}

// started expects {started, id, Pid} and returns Pid.
func (sp *sharedPort) started(id int64) int {
	sp.t.Helper()
	f := sp.next(id, 10*time.Second)
	if len(f) != 3 || f[0] != atom("started") {
		sp.t.Fatalf("child %d: want {started, %d, Pid}, got %v; stderr: %s", id, id, f, sp.stderr)
	}
	return int(f[2].(int64))
}

// sharedOutput is what one child wrote, hashed, and how it ended.
type sharedOutput struct {
	stdoutMD5, stderrMD5 string
	stdoutN, stderrN     int
	stdout, stderr       []byte // the first 1 MiB of each
	exit                 etf.Term
	others               []etf.Tuple
}

// collect reads child id's frames until its exit, acking output when ack
// is set. It fails the test after timeout plus testSlack.
func (sp *sharedPort) collect(id int64, ack bool, timeout time.Duration) sharedOutput {
	sp.t.Helper()
	var o sharedOutput
	hOut, hErr := md5.New(), md5.New()
	deadline := time.Now().Add(timeout + testSlack())
	for {
		f := sp.queue(id).pop(time.Until(deadline))
		if f == nil {
			sp.t.Fatalf("child %d: no exit frame within %v (+ slack) (stdout so far %d bytes); stderr: %s", id, timeout, o.stdoutN, sp.stderr)
		}
		switch {
		case len(f) == 3 && (f[0] == atom("stdout") || f[0] == atom("stderr")):
			p := f[2].([]byte)
			var h hash.Hash
			if f[0] == atom("stdout") {
				h, o.stdoutN = hOut, o.stdoutN+len(p)
				if len(o.stdout) < 1<<20 {
					o.stdout = append(o.stdout, p...)
				}
			} else {
				h, o.stderrN = hErr, o.stderrN+len(p)
				if len(o.stderr) < 1<<20 {
					o.stderr = append(o.stderr, p...)
				}
			}
			h.Write(p)
			if ack {
				sp.sendTerm(etf.Tuple{atom("ack"), id, int64(len(p))})
			}
		case len(f) == 3 && f[0] == atom("exit"):
			o.exit = f[2]
			o.stdoutMD5, o.stderrMD5 = fmt.Sprintf("%x", hOut.Sum(nil)), fmt.Sprintf("%x", hErr.Sum(nil))
			return o
		default:
			o.others = append(o.others, f)
		}
	}
}

// waitExit closes the port (as a BEAM does), and returns ps_port's exit code;
// it fails the test after timeout plus testSlack.
func (sp *sharedPort) waitExit(timeout time.Duration) int {
	sp.t.Helper()
	sp.stdin.Close()
	select {
	case <-sp.waited:
	case <-time.After(timeout + testSlack()):
		sp.t.Fatalf("ps_port --shared still running %v (+ slack) after its port closed; stderr: %s", timeout, sp.stderr)
	}
	return sp.cmd.ProcessState.ExitCode()
}

func md5hex(b []byte) string { return fmt.Sprintf("%x", md5.Sum(b)) }
