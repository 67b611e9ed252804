package blackbox

// One behaviour, every mode: a test written once against modeOwner and
// modeChild runs as a table over modes, each its own subtest, the way the
// Elixir case modules run against :isolated, :shared and :node.
//
//   - port: one ps_port --packet per child, its options as flags;
//   - shared: one ps_port --shared per test, a child per {open, id, opts};
//   - node: one ps_port node per test and an erl node as the owner,
//     driving it through node_driver.erl.

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/protonstream/ps_port/etf"
)

// childOpts are the options of one child, in every mode's own terms.
type childOpts struct {
	stderrToStdout    bool     // --capture-stderr, {stderr_to_stdout, true}
	captureStderrOnly bool     // --capture-stderr-only, {capture_stderr_only, true}
	cd, uid, gid      string   // --cd, --uid, --gid; {cd | uid | gid, Binary}
	stdinLimit        int      // --stdin-limit, {stdin_limit, N} (0: the default)
	arg0              string   // --arg0, {arg0, Binary}
	env               []string // KEY=VALUE: --env, {env, [{Key, Value}]}
	unset             []string // KEY: --unset, {env, [{Key, false}]}
}

// flags are the options as ps_port --packet's flags.
func (co childOpts) flags() []string {
	var f []string
	if co.stderrToStdout {
		f = append(f, "--capture-stderr")
	}
	if co.captureStderrOnly {
		f = append(f, "--capture-stderr-only")
	}
	for _, kv := range [][2]string{{"--cd", co.cd}, {"--uid", co.uid}, {"--gid", co.gid}} {
		if kv[1] != "" {
			f = append(f, kv[0], kv[1])
		}
	}
	if co.stdinLimit > 0 {
		f = append(f, "--stdin-limit", strconv.Itoa(co.stdinLimit))
	}
	if co.arg0 != "" {
		f = append(f, "--arg0", co.arg0)
	}
	for _, kv := range co.env {
		f = append(f, "--env", kv)
	}
	for _, k := range co.unset {
		f = append(f, "--unset", k)
	}
	return f
}

// terms are the options as {Key, Value} pairs, for the shared and the
// node mode (rendered by erlOpen there).
func (co childOpts) terms() []etf.Term {
	var opts []etf.Term
	if co.stderrToStdout {
		opts = append(opts, opt("stderr_to_stdout", atom("true")))
	}
	if co.captureStderrOnly {
		opts = append(opts, opt("capture_stderr_only", atom("true")))
	}
	for _, kv := range [][2]string{{"cd", co.cd}, {"uid", co.uid}, {"gid", co.gid}} {
		if kv[1] != "" {
			opts = append(opts, opt(kv[0], []byte(kv[1])))
		}
	}
	if co.stdinLimit > 0 {
		opts = append(opts, opt("stdin_limit", int64(co.stdinLimit)))
	}
	if co.arg0 != "" {
		opts = append(opts, opt("arg0", []byte(co.arg0)))
	}
	if len(co.env)+len(co.unset) > 0 {
		env := etf.List{}
		for _, kv := range co.env {
			k, v, _ := strings.Cut(kv, "=")
			env = append(env, etf.Tuple{[]byte(k), []byte(v)})
		}
		for _, k := range co.unset {
			env = append(env, etf.Tuple{[]byte(k), atom("false")})
		}
		opts = append(opts, opt("env", env))
	}
	return opts
}

// spawnError is a refused open or command: the reason (an errno's name,
// baduser, stdin_overflow, ...) and the message.
type spawnError struct {
	reason, message string
}

// childExit is how a child ended: signal false with the exit status, or
// signal true with the signal's number.
type childExit struct {
	signal bool
	n      int
}

func (x childExit) String() string {
	if x.signal {
		return fmt.Sprintf("signal %d", x.n)
	}
	return fmt.Sprintf("status %d", x.n)
}

// childResult is what a child wrote after the last read, and how it ended.
type childResult struct {
	stdout, stderr string
	others         int // messages or frames that are neither output nor the exit
	exit           childExit
}

// modeChild is one running child, seen from its owner.
type modeChild interface {
	pid() int                  // its OS pid
	command(data string)       // write data to its stdin
	commandCopy(b byte, n int) // write n bytes b as one command
	refusal() spawnError       // the next message, a refused command
	eof()                      // close its stdin
	signal(sig syscall.Signal)
	read() string         // the next chunk of its stdout (acked)
	collect() childResult // the rest of its output (acked) until its exit
}

// modeOwner opens children in one mode; close ends what the owner started
// and checks that ps_port ended well where that is the owner's to see.
type modeOwner interface {
	open(program string, args []string, o childOpts) modeChild
	// openError opens a child that cannot start and returns the error.
	openError(program string, args []string, o childOpts) spawnError
	// sigterm sends SIGTERM to the ps_port that runs c and returns what
	// waits for that ps_port's exit code (after the child's exit).
	sigterm(c modeChild) (exitCode func() int)
	close()
}

// modes are the ways an owner runs children; forModes runs f against each.
var modes = []struct {
	name  string
	start func(t *testing.T) modeOwner
}{
	{"port", func(t *testing.T) modeOwner { return &portOwner{t: t} }},
	{"shared", func(t *testing.T) modeOwner { return &sharedOwner{t: t, sp: startShared(t)} }},
	{"node", func(t *testing.T) modeOwner { ps, e := nodePair(t); return &nodeOwner{t: t, ps: ps, e: e} }},
}

// forModes runs f as a parallel subtest per mode, with an owner of that
// mode; the owner is closed when f returns.
func forModes(t *testing.T, f func(t *testing.T, o modeOwner)) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			o := m.start(t)
			f(t, o)
			o.close()
		})
	}
}

// The port mode: one ps_port --packet per child.

type portOwner struct {
	t     *testing.T
	ports []*portProc
}

type portChild struct {
	p      *portProc
	osPid  int
	stdout string // read past by read, kept for collect
}

func (o *portOwner) open(program string, args []string, co childOpts) modeChild {
	o.t.Helper()
	p := o.start(program, args, co)
	o.ports = append(o.ports, p)
	return &portChild{p: p, osPid: p.started()}
}

func (o *portOwner) start(program string, args []string, co childOpts) *portProc {
	argv := append(append([]string{"--packet"}, co.flags()...), "--", program)
	return startPort(o.t, append(argv, args...)...)
}

// openError also checks that ps_port exits 3 (ExitSpawn) after the error.
func (o *portOwner) openError(program string, args []string, co childOpts) spawnError {
	o.t.Helper()
	p := o.start(program, args, co)
	tu := p.nextTuple("spawn_error", 3, 5*time.Second)
	if code := p.exitCode(5 * time.Second); code != 3 {
		o.t.Errorf("%s %q %+v: exit code %d, want 3", program, args, co, code)
	}
	return spawnError{string(tu[1].(etf.Atom)), string(tu[2].([]byte))}
}

// close checks that every ps_port exits 0 once its port is closed.
func (o *portOwner) close() {
	o.t.Helper()
	for _, p := range o.ports {
		if code := p.exitCode(5 * time.Second); code != 0 {
			o.t.Errorf("ps_port %v exit code %d, want 0; stderr: %s", p.cmd.Args[1:], code, p.stderr)
		}
	}
}

func (o *portOwner) sigterm(c modeChild) func() int {
	p := c.(*portChild).p
	p.cmd.Process.Signal(syscall.SIGTERM)
	// A --packet ps_port exits once its owner closes the port, as a BEAM
	// does after the exit frame.
	return func() int { return p.exitCode(10 * time.Second) }
}

// waitExited waits for a ps_port's exit (10 s + slack) and returns its
// exit code.
func waitExited(t *testing.T, waited <-chan struct{}, cmd *exec.Cmd, stderr fmt.Stringer) int {
	t.Helper()
	select {
	case <-waited:
	case <-time.After(10*time.Second + testSlack()):
		t.Fatalf("%v still running 10 s (+ slack) after SIGTERM; stderr: %s", cmd.Args, stderr)
	}
	return cmd.ProcessState.ExitCode()
}

func (c *portChild) pid() int            { return c.osPid }
func (c *portChild) command(data string) { c.p.send(etf.Tuple{atom("command"), []byte(data)}) }
func (c *portChild) eof()                { c.p.send(atom("eof")) }
func (c *portChild) commandCopy(b byte, n int) {
	c.p.send(etf.Tuple{atom("command"), bytes.Repeat([]byte{b}, n)})
}

func (c *portChild) refusal() spawnError {
	c.p.t.Helper()
	return refused(c.p.t, c.p.nextTuple("error", 3, 10*time.Second)[1:])
}

// refused reads [Reason, Message] of an error frame.
func refused(t *testing.T, rm []etf.Term) spawnError {
	t.Helper()
	r, ok1 := rm[0].(etf.Atom)
	m, ok2 := rm[1].([]byte)
	if !ok1 || !ok2 {
		t.Fatalf("want an atom and a binary, got %v", rm)
	}
	return spawnError{string(r), string(m)}
}

func (c *portChild) signal(sig syscall.Signal) { c.p.send(etf.Tuple{atom("signal"), int64(sig)}) }

func (c *portChild) read() string {
	c.p.t.Helper()
	return string(c.p.nextOutput(10 * time.Second))
}

func (c *portChild) collect() childResult {
	c.p.t.Helper()
	out := c.p.collect(true, 10*time.Second)
	return childResult{stdout: string(out.stdout), stderr: string(out.stderr), others: len(out.others), exit: portExit(c.p.t, out.exit)}
}

// portExit reads {status, N} or {signal, N}.
func portExit(t *testing.T, x etf.Term) childExit {
	t.Helper()
	if tu, ok := etf.MatchTuple(x, "status", 2); ok {
		return childExit{n: int(tu[1].(int64))}
	}
	if tu, ok := etf.MatchTuple(x, "signal", 2); ok {
		return childExit{signal: true, n: int(tu[1].(int64))}
	}
	t.Fatalf("want {status, N} or {signal, N}, got %v", x)
	return childExit{}
}

// The shared mode: one ps_port --shared, a child per id.

type sharedOwner struct {
	t    *testing.T
	sp   *sharedPort
	mu   sync.Mutex
	last int64
}

type sharedChild struct {
	sp    *sharedPort
	id    int64
	osPid int
}

func (o *sharedOwner) open(program string, args []string, co childOpts) modeChild {
	o.t.Helper()
	id := o.open1(program, args, co)
	return &sharedChild{sp: o.sp, id: id, osPid: o.sp.started(id)}
}

// open1 sends {open, Id, Opts} with a fresh id and returns the id.
func (o *sharedOwner) open1(program string, args []string, co childOpts) int64 {
	o.mu.Lock()
	o.last++
	id := o.last
	o.mu.Unlock()
	o.sp.open(id, program, args, co.terms()...)
	return id
}

func (o *sharedOwner) openError(program string, args []string, co childOpts) spawnError {
	o.t.Helper()
	id := o.open1(program, args, co)
	f := o.sp.next(id, 10*time.Second)
	if len(f) != 4 || f[0] != atom("spawn_error") {
		o.t.Fatalf("%s %q %+v: want {spawn_error, %d, Reason, Message}, got %v", program, args, co, id, f)
	}
	return spawnError{string(f[2].(etf.Atom)), string(f[3].([]byte))}
}

// close checks that ps_port --shared exits 0 once its port is closed.
func (o *sharedOwner) close() {
	o.t.Helper()
	if code := o.sp.waitExit(10 * time.Second); code != 0 {
		o.t.Errorf("ps_port --shared exited %d, want 0; stderr: %s", code, o.sp.stderr)
	}
}

func (o *sharedOwner) sigterm(modeChild) func() int {
	o.sp.cmd.Process.Signal(syscall.SIGTERM)
	return func() int { return waitExited(o.t, o.sp.waited, o.sp.cmd, o.sp.stderr) }
}

func (c *sharedChild) pid() int { return c.osPid }
func (c *sharedChild) command(data string) {
	c.sp.sendTerm(etf.Tuple{atom("command"), c.id, []byte(data)})
}
func (c *sharedChild) eof() { c.sp.sendTerm(etf.Tuple{atom("eof"), c.id}) }
func (c *sharedChild) commandCopy(b byte, n int) {
	c.sp.sendTerm(etf.Tuple{atom("command"), c.id, bytes.Repeat([]byte{b}, n)})
}

func (c *sharedChild) refusal() spawnError {
	c.sp.t.Helper()
	f := c.sp.next(c.id, 10*time.Second)
	if len(f) != 4 || f[0] != atom("error") {
		c.sp.t.Fatalf("child %d: want {error, %d, Reason, Message}, got %v", c.id, c.id, f)
	}
	return refused(c.sp.t, f[2:])
}
func (c *sharedChild) signal(sig syscall.Signal) {
	c.sp.sendTerm(etf.Tuple{atom("signal"), c.id, int64(sig)})
}

func (c *sharedChild) read() string {
	c.sp.t.Helper()
	f := c.sp.next(c.id, 10*time.Second)
	if len(f) != 3 || f[0] != atom("stdout") {
		c.sp.t.Fatalf("child %d: want {stdout, %d, Data}, got %v", c.id, c.id, f)
	}
	data := f[2].([]byte)
	c.sp.sendTerm(etf.Tuple{atom("ack"), c.id, int64(len(data))})
	return string(data)
}

func (c *sharedChild) collect() childResult {
	c.sp.t.Helper()
	out := c.sp.collect(c.id, true, 10*time.Second)
	return childResult{stdout: string(out.stdout), stderr: string(out.stderr), others: len(out.others), exit: portExit(c.sp.t, out.exit)}
}

// The node mode: an erl node owns the children of one ps_port node.

type nodeOwner struct {
	t    *testing.T
	ps   *psNode
	e    *erlNode
	mu   sync.Mutex
	last int
}

type nodeChild struct {
	e     *erlNode
	v     string // the child's variable in the erl node's bindings
	osPid int    // 0 until asked
	n     int    // refusals read (for fresh variable names)
}

func (o *nodeOwner) open(program string, args []string, co childOpts) modeChild {
	o.t.Helper()
	o.mu.Lock()
	o.last++
	c := &nodeChild{e: o.e, v: "C" + strconv.Itoa(o.last)}
	o.mu.Unlock()
	o.e.expect(fmt.Sprintf(`{ok, %s} = %s, is_pid(%[1]s) andalso node(%[1]s) =:= ps_node()`, c.v, erlOpen(program, args, co)), "true")
	return c
}

// erlOpen is the call to node_driver's open/3.
func erlOpen(program string, args []string, co childOpts) string {
	bins := make([]string, len(args))
	for i, a := range args {
		bins[i] = erlBin(a)
	}
	return fmt.Sprintf(`open(%s, [%s], %s)`, erlBin(program), strings.Join(bins, ", "), erlTerm(etf.List(co.terms())))
}

// erlTerm writes a term as Erlang source: atoms, binaries, integers,
// tuples and lists (what childOpts.terms makes).
func erlTerm(x etf.Term) string {
	var parts []string
	switch x := x.(type) {
	case etf.Atom:
		return string(x)
	case []byte:
		return erlBin(string(x))
	case int64:
		return strconv.FormatInt(x, 10)
	case etf.Tuple:
		for _, e := range x {
			parts = append(parts, erlTerm(e))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case etf.List:
		for _, e := range x {
			parts = append(parts, erlTerm(e))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	panic(fmt.Sprintf("erlTerm: %T", x))
}

var openError = regexp.MustCompile(`^\{error,\{([a-z_]+),` + hexBin + `\}\}$`)

func (o *nodeOwner) openError(program string, args []string, co childOpts) spawnError {
	o.t.Helper()
	o.mu.Lock()
	o.last++
	v := "E" + strconv.Itoa(o.last) // the bindings persist: fresh names
	o.mu.Unlock()
	got := o.e.eval(fmt.Sprintf(`case %s of {error, {%[2]sR, %[2]sM}} when is_binary(%[2]sM) -> {error, {%[2]sR, binary:encode_hex(%[2]sM)}}; %[2]sX -> %[2]sX end`,
		erlOpen(program, args, co), v))
	m := openError.FindStringSubmatch(got)
	if m == nil {
		o.t.Fatalf("%s %q %+v: want {error, {Reason, Message}}, got %s", program, args, co, got)
	}
	return spawnError{m[1], unhex(o.t, m[2])}
}

func (o *nodeOwner) close() {}

func (o *nodeOwner) sigterm(modeChild) func() int {
	o.ps.cmd.Process.Signal(syscall.SIGTERM)
	return func() int { return waitExited(o.t, o.ps.waited, o.ps.cmd, o.ps.stderr) }
}

// pid asks for the child's OS pid (a child that has exited has none to
// give: ask while it runs).
func (c *nodeChild) pid() int {
	if c.osPid == 0 {
		c.osPid = c.e.evalInt(fmt.Sprintf(`os_pid(%s)`, c.v))
	}
	return c.osPid
}

func (c *nodeChild) command(data string) {
	c.e.expect(fmt.Sprintf(`%s ! {self(), {command, %s}}, ok`, c.v, erlBin(data)), "ok")
}

func (c *nodeChild) eof() { c.e.expect(fmt.Sprintf(`%s ! {self(), eof}, ok`, c.v), "ok") }

func (c *nodeChild) commandCopy(b byte, n int) {
	c.e.expect(fmt.Sprintf(`%s ! {self(), {command, binary:copy(<<%d>>, %d)}}, ok`, c.v, b, n), "ok")
}

var nodeError = regexp.MustCompile(`^\{([a-z_]+),` + hexBin + `\}$`)

func (c *nodeChild) refusal() spawnError {
	t := c.e.t
	t.Helper()
	c.n++
	v := fmt.Sprintf("%sR%d", c.v, c.n) // the bindings persist: fresh names
	got := c.e.eval(fmt.Sprintf(`receive {%s, {error, %[2]sR, %[2]sM}} -> {%[2]sR, binary:encode_hex(%[2]sM)}; {%[1]s, %[2]sX} -> {unexpected, %[2]sX} after 10000 -> timeout end`, c.v, v))
	m := nodeError.FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("%s: want {error, Reason, Message}, got %s", c.v, got)
	}
	return spawnError{m[1], unhex(t, m[2])}
}

func (c *nodeChild) signal(sig syscall.Signal) {
	c.e.expect(fmt.Sprintf(`%s ! {self(), {signal, %d}}, ok`, c.v, sig), "ok")
}

// hexBin matches a binary printed by ~0tp that holds hex digits.
var hexBin = `<<(?:"([0-9A-F]*)")?>>`

func (c *nodeChild) read() string {
	c.e.t.Helper()
	got := c.e.eval(fmt.Sprintf(`receive {%s, {data, D}} -> binary:encode_hex(D) after 10000 -> timeout end`, c.v))
	m := regexp.MustCompile(`^` + hexBin + `$`).FindStringSubmatch(got)
	if m == nil {
		c.e.t.Fatalf("%s: want {data, _}, got %s", c.v, got)
	}
	return unhex(c.e.t, m[1])
}

var collected = regexp.MustCompile(`^\{` + hexBin + `,` + hexBin + `,(\d+),(.*)\}$`)

var exitReason = regexp.MustCompile(`^\{(exit_status|signal),(\d+)\}$`)

func (c *nodeChild) collect() childResult {
	t := c.e.t
	t.Helper()
	v := c.v
	got := c.e.eval(fmt.Sprintf(`{%[1]sO, %[1]sE, %[1]sX, %[1]sR} = collect(%[1]s), {binary:encode_hex(%[1]sO), binary:encode_hex(%[1]sE), length(%[1]sX), %[1]sR}`, v))
	m := collected.FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("%s: want {Stdout, Stderr, Others, Reason}, got %s", v, got)
	}
	r := childResult{stdout: unhex(t, m[1]), stderr: unhex(t, m[2])}
	r.others, _ = strconv.Atoi(m[3])
	switch x := exitReason.FindStringSubmatch(m[4]); {
	case m[4] == "normal":
		r.exit = childExit{n: 0}
	case x == nil:
		t.Fatalf("%s: exit reason %s, want normal, {exit_status, N} or {signal, N}", v, m[4])
	default:
		n, _ := strconv.Atoi(x[2])
		r.exit = childExit{signal: x[1] == "signal", n: n}
		if !r.exit.signal && n == 0 {
			t.Errorf("%s: exit reason {exit_status, 0}, want normal", v)
		}
	}
	return r
}

func unhex(t *testing.T, s string) string {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("not hex: %q", s)
	}
	return string(b)
}
