package blackbox

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/protonstream/ps_port/etf"
)

// Every output byte arrives, in order, through a window much smaller than the
// stream, and before the exit frame.
func TestLargeStreamSmallWindow(t *testing.T) {
	t.Parallel()
	const size = 64 << 20
	p := startPort(t, "--packet", "--stdio-window", "4096", "--",
		"sh", "-c", "head -c "+strconv.Itoa(size)+" /dev/urandom | tee /dev/stderr | sha256sum >&2")
	p.started()
	o := p.collect(true, 120*time.Second)
	if len(o.stdout) != 0 {
		t.Fatalf("unexpected stdout")
	}
	// stderr is the stream followed by its sha256sum line.
	if len(o.stderr) < size {
		t.Fatalf("got %d bytes, want %d", len(o.stderr), size)
	}
	data, sumLine := o.stderr[:size], string(o.stderr[size:])
	sum := sha256.Sum256(data)
	if got := strings.Fields(sumLine); len(got) == 0 || got[0] != hex.EncodeToString(sum[:]) {
		t.Errorf("checksum mismatch: child says %q, received %x", sumLine, sum)
	}
	if !equal(o.exit, status(0)) {
		t.Errorf("exit %v", o.exit)
	}
}

func TestHeadZeroByteExact(t *testing.T) {
	t.Parallel()
	const size = 64 << 20
	p := startPort(t, "--packet", "--stdio-window", "65536", "--", "head", "-c", strconv.Itoa(size), "/dev/zero")
	p.started()
	o := p.collect(true, 120*time.Second)
	if len(o.stdout) != size || bytes.IndexByte(o.stdout, 1) >= 0 {
		t.Errorf("got %d bytes, want %d zero bytes", len(o.stdout), size)
	}
}

// Without acks ps_port stops after one window of output.
func TestWindowBoundsInFlight(t *testing.T) {
	t.Parallel()
	const window = 10000
	p := startPort(t, "--packet", "--stdio-window", strconv.Itoa(window), "--", "yes")
	p.started()
	// yes never stops writing: wait (however loaded the machine) until the
	// window arrived, then a while longer for anything over it, which a
	// right ps_port never sends.
	got := 0
	deadline := time.After(10*time.Second + testSlack())
	var quiet <-chan time.Time
loop:
	for {
		select {
		case f := <-p.frames:
			tu, ok := etf.MatchTuple(f, "stdout", 2)
			if !ok {
				t.Fatalf("unexpected frame %v", f)
			}
			got += len(tu[1].([]byte))
			if got >= window && quiet == nil {
				quiet = time.After(300 * time.Millisecond)
			}
		case <-quiet:
			break loop
		case <-deadline:
			break loop
		}
	}
	if got != window {
		t.Errorf("%d bytes in flight without an ack, want exactly the window %d", got, window)
	}
	p.send(etf.Tuple{atom("ack"), int64(100)})
	f := p.next(2 * time.Second)
	if tu, ok := etf.MatchTuple(f, "stdout", 2); !ok || len(tu[1].([]byte)) != 100 {
		t.Errorf("after acking 100 bytes want a 100-byte frame, got %v", f)
	}
	p.ack(window) // all consumed: what is left in the pipe can drain
	p.send(atom("stop"))
	p.collect(true, 5*time.Second)
}

// A child that never reads stdin does not stop its output from flowing.
func TestStdinNeverBlocksOutput(t *testing.T) {
	t.Parallel()
	p := startPort(t, "--packet", "--", "sh", "-c", "sleep 0.3; seq 1 20000")
	p.started()
	chunk := bytes.Repeat([]byte("x"), 1<<20)
	for i := 0; i < 8; i++ { // 8 MiB, far more than the pipe holds
		p.send(etf.Tuple{atom("command"), chunk})
	}
	o := p.collect(true, 10*time.Second)
	if want := seq(20000); string(o.stdout) != want {
		t.Errorf("got %d bytes of seq output, want %d", len(o.stdout), len(want))
	}
}

func TestSIGTERMIgnoringChildIsKilledAfterDelay(t *testing.T) {
	t.Parallel()
	const delay = 300 * time.Millisecond
	p := startPort(t, "--packet", "--delay-to-sigkill", "300", "--", "sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.01; done")
	pid := p.started()
	if f := p.next(5 * time.Second); !equal(f, etf.Tuple{atom("stdout"), []byte("ready\n")}) {
		t.Fatalf("want ready, got %v", f)
	}
	start := time.Now()
	p.send(atom("stop"))
	o := p.collect(true, 5*time.Second)
	took := time.Since(start)
	if !equal(o.exit, signal(9)) {
		t.Errorf("exit %v, want SIGKILL", o.exit)
	}
	// Never before the delay; after it, as soon as a loaded machine allows.
	if took < delay || took > delay+400*time.Millisecond+testSlack() {
		t.Errorf("killed after %v, want %v (+ slack)", took, delay)
	}
	if alive(pid) {
		t.Errorf("child %d still alive", pid)
	}
}

func TestObedientChildStopsAtOnce(t *testing.T) {
	t.Parallel()
	p := startPort(t, "--packet", "--delay-to-sigkill", "5000", "--", "sleep", "100")
	p.started()
	start := time.Now()
	p.send(atom("stop"))
	o := p.collect(true, 5*time.Second)
	if !equal(o.exit, signal(15)) {
		t.Errorf("exit %v, want SIGTERM", o.exit)
	}
	// Well before the 5 s delay to SIGKILL (the exit status already says
	// SIGTERM did it); testSlack for a loaded machine.
	if took := time.Since(start); took > time.Second+testSlack() {
		t.Errorf("stop took %v for a child that obeys SIGTERM", took)
	}
}

// startDaemon starts a port whose child double-forks a daemon that leaves
// the child's session, and returns the daemon's pid.
func startDaemon(t *testing.T, args ...string) (*portProc, int) {
	t.Helper()
	script := `(setsid sh -c 'trap "" TERM; echo $$; echo done; exec sleep 1000' &); sleep 1000`
	p := startPort(t, append(args, "--", "sh", "-c", script)...)
	p.started()
	var out []byte
	for !bytes.Contains(out, []byte("done\n")) {
		out = append(out, p.nextOutput(5*time.Second)...)
	}
	pid, err := strconv.Atoi(strings.Fields(string(out))[0])
	if err != nil || !alive(pid) {
		t.Fatalf("daemon pid from %q not alive", out)
	}
	return p, pid
}

func TestDaemonKilledOnPortClose(t *testing.T) {
	t.Parallel()
	p, daemon := startDaemon(t, "--packet", "--delay-to-sigkill", "200")
	p.stdin.Close() // the BEAM closed the port
	waitGone(t, daemon, 200*time.Millisecond+time.Second)
	if code := p.exitCode(5 * time.Second); code != 0 {
		t.Errorf("ps_port exit code %d", code)
	}
}

func TestSIGTERMToPsPortTerminatesTree(t *testing.T) {
	t.Parallel()
	p, daemon := startDaemon(t, "--packet", "--delay-to-sigkill", "200")
	p.cmd.Process.Signal(syscall.SIGTERM)
	o := p.collect(true, 5*time.Second)
	if !equal(o.exit, signal(15)) {
		t.Errorf("exit %v", o.exit)
	}
	waitGone(t, daemon, time.Second)
}

func TestChildDiesWithPsPort(t *testing.T) {
	t.Parallel()
	p := startPort(t, "--packet", "--", "sleep", "1000")
	pid := p.started()
	p.cmd.Process.Kill()
	waitGone(t, pid, 2*time.Second)
}

// TestSpawnErrorBadCgroup: a group in a controller that does not exist is
// refused with badcgroup, and ps_port exits 4. (The other spawn errors, in
// every mode: TestModesSpawnErrors.)
func TestSpawnErrorBadCgroup(t *testing.T) {
	t.Parallel()
	p := startPort(t, "--packet", "-c", "no_such_controller", "-g", "ps_port_test/x", "--", "true")
	f := p.next(5 * time.Second)
	tu, ok := etf.MatchTuple(f, "spawn_error", 3)
	if !ok || tu[1] != etf.Atom("badcgroup") {
		t.Fatalf("want {spawn_error, badcgroup, _}, got %v", f)
	}
	if msg := string(tu[2].([]byte)); !strings.Contains(msg, "no_such_controller") {
		t.Errorf("message %q does not name the controller", msg)
	}
	if code := p.exitCode(5 * time.Second); code != 4 {
		t.Errorf("exit code %d, want 4", code)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--no-such-flag", "true"}, {}, {"--env", "NOEQUALS", "true"}} {
		cmd := exec.Command(psPort, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Errorf("%v: want exit code 2, got %v", args, err)
		}
		if !strings.Contains(stderr.String(), "usage") && !strings.Contains(stderr.String(), "--env") {
			t.Errorf("%v: stderr %q has no usage", args, stderr.String())
		}
	}
}

func TestBadFrames(t *testing.T) {
	t.Parallel()
	huge := binary.BigEndian.AppendUint32(nil, 0xFFFFFFFF)
	cases := map[string]func(p *portProc){
		"not ETF":       func(p *portProc) { p.sendRaw([]byte("garbage")) },
		"unknown term":  func(p *portProc) { p.send(etf.Tuple{atom("launch"), atom("missiles")}) },
		"bad ack":       func(p *portProc) { p.send(etf.Tuple{atom("ack"), int64(-1)}) },
		"command atom":  func(p *portProc) { p.send(etf.Tuple{atom("command"), atom("x")}) },
		"4 GiB length":  func(p *portProc) { p.stdin.Write(huge) },
		"deep nesting":  func(p *portProc) { p.sendRaw(deepTuple(10000)) },
		"truncated ETF": func(p *portProc) { p.sendRaw([]byte{131, 104, 2, 119}) },
	}
	for name, bad := range cases {
		p := startPort(t, "--packet", "--", "sleep", "1000")
		pid := p.started()
		bad(p)
		o := p.collect(true, 5*time.Second)
		if len(o.others) == 0 {
			t.Errorf("%s: no error frame", name)
		} else if _, ok := etf.MatchTuple(o.others[0], "error", 3); !ok {
			t.Errorf("%s: want {error, badframe, _}, got %v", name, o.others[0])
		}
		if !equal(o.exit, signal(15)) {
			t.Errorf("%s: exit %v, want the child terminated", name, o.exit)
		}
		if code := p.exitCode(5 * time.Second); code != 5 {
			t.Errorf("%s: exit code %d, want 5", name, code)
		}
		if alive(pid) {
			t.Errorf("%s: child %d left running", name, pid)
		}
	}
}

func TestRawMuonTrapMode(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(psPort, "--capture-output", "--stdio-window", "3", "--", "sh", "-c", "printf abcdefgh; exit 3")
	stdin, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	read := func(n int) string {
		got := make([]byte, 0, n)
		buf := make([]byte, 16)
		done := time.AfterFunc(5*time.Second, func() { cmd.Process.Kill() })
		defer done.Stop()
		for len(got) < n {
			k, err := out.Read(buf[:n-len(got)])
			got = append(got, buf[:k]...)
			if err != nil {
				break
			}
		}
		return string(got)
	}
	if got := read(3); got != "abc" {
		t.Fatalf("first read %q, want the window's 3 bytes", got)
	}
	stdin.Write([]byte{1}) // each byte b credits b+1 bytes
	if got := read(2); got != "de" {
		t.Fatalf("after a 2-byte ack got %q", got)
	}
	stdin.Write([]byte{0, 1})
	if got := read(3); got != "fgh" {
		t.Fatalf("after a 3-byte ack got %q", got)
	}
	// ps_port exits once the last output has been acked (raw_test.go).
	stdin.Write([]byte{2})
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Errorf("want exit code 3, got %v", err)
	}
}

func TestErlangOpensPsPort(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("erl"); err != nil {
		t.Fatal("erl not found: install erlang-base (make deps)")
	}
	script := `P = open_port({spawn_executable, "` + psPort + `"}, [binary, {packet, 4}, exit_status, {args, ["--packet", "--", "cat"]}]),
receive {P, {data, D0}} -> {started, _} = binary_to_term(D0, [safe]) end,
port_command(P, term_to_binary({command, <<"ping">>})),
receive {P, {data, D1}} -> {stdout, <<"ping">>} = binary_to_term(D1, [safe]) end,
port_command(P, term_to_binary(eof)),
receive {P, {data, D2}} -> {exit, {status, 0}} = binary_to_term(D2, [safe]) end,
port_close(P),
io:format("round trip ok~n"), halt(0).`
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "erl", "-noshell", "-eval", script).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "round trip ok") {
		t.Fatalf("erl: %v\n%s", err, out)
	}
}

func equal(a, b etf.Term) bool {
	x, err1 := etf.Encode(a)
	y, err2 := etf.Encode(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

func seq(n int) string {
	var sb strings.Builder
	for i := 1; i <= n; i++ {
		sb.WriteString(strconv.Itoa(i))
		sb.WriteByte('\n')
	}
	return sb.String()
}

func deepTuple(depth int) []byte {
	b := []byte{131}
	for i := 0; i < depth; i++ {
		b = append(b, 104, 1)
	}
	return append(b, 106)
}

// A child that never reads stdin: past --stdin-limit, commands are refused
// loudly, and ps_port's memory stays bounded.
func TestStdinOverflowIsRefusedLoudly(t *testing.T) {
	t.Parallel()
	p := startPort(t, "--packet", "--stdin-limit", "1048576", "--", "sleep", "1000")
	p.started()
	chunk := bytes.Repeat([]byte("x"), 256<<10)
	const sent = 64 // 16 MiB against a 1 MiB limit (+ the 64 KiB pipe)
	for i := 0; i < sent; i++ {
		p.send(etf.Tuple{atom("command"), chunk})
	}
	refused := 0
	deadline := time.After(5 * time.Second)
	for refused < sent-6 {
		select {
		case f := <-p.frames:
			tu, ok := etf.MatchTuple(f, "error", 3)
			if !ok || tu[1] != atom("stdin_overflow") {
				t.Fatalf("unexpected frame %v", f)
			}
			refused++
		case <-deadline:
			t.Fatalf("only %d of %d commands refused", refused, sent)
		}
	}
	status, _ := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/status")
	for _, line := range strings.Split(string(status), "\n") {
		if rss, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.Fields(rss)[0])
			if kb > 64<<10 {
				t.Errorf("ps_port RSS %d KiB after 16 MiB of refused stdin", kb)
			}
		}
	}
	p.send(atom("stop"))
	p.collect(true, 5*time.Second)
}
