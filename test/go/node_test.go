package blackbox

// Node mode (docs/node.md): a real erl node drives "ps_port node" over
// Erlang distribution through node_driver.erl.

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestNodeCommandForms: a command is any iodata, as a port's (nested
// lists, charlists, an improper tail); open takes its program, arguments and
// options as binaries or charlists, the options as a list or a map.
// (What every mode shares: modes_test.go.)
func TestNodeCommandForms(t *testing.T) {
	_, e := nodePair(t)
	e.expect(`{ok, P} = open(<<"cat">>, []), P ! {self(), {command, [$a, "bc", [<<"de">> | <<"f">>], 10]}}, receive {P, {data, D2}} -> D2 after 10000 -> timeout end`, `<<"abcdef\n">>`)
	e.expect(`P ! {self(), eof}, collect(P)`, `{<<>>,<<>>,[],normal}`)
	e.expect(`{ok, P2} = open("sh", ["-c", "echo out; echo err >&2"], [{stderr_to_stdout, true}]), collect(P2)`,
		`{<<"out\nerr\n">>,<<>>,[],normal}`)
	e.expect(`{ok, P3} = open(<<"sh">>, [<<"-c">>, <<"echo out; echo err >&2">>], #{capture_stderr_only => true}), collect(P3)`,
		`{<<>>,<<"err\n">>,[],normal}`)
	e.expect(`{ok, P4} = open(<<"sh">>, [<<"-c">>, <<"echo $FOO-$HOME-$0; pwd">>], [{env, [{"FOO", "bar"}, {<<"HOME">>, false}]}, {cd, <<"/tmp">>}, {arg0, <<"myname">>}]), collect(P4)`,
		`{<<"bar--myname\n/tmp\n">>,<<>>,[],normal}`)
}

func TestNodeFiftyThousandLines(t *testing.T) {
	_, e := nodePair(t)
	for i, c := range []struct{ name, opts string }{
		{"queue_len", `[]`},
		{"queue_len small window", `[{stdio_window, 4096}]`},
		{"ack", `[{flow, ack}]`},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			check := "seq_check"
			if strings.Contains(c.opts, "ack") {
				check = "seq_check_ack"
			}
			got := e.eval(fmt.Sprintf(`{ok, Q%d} = open(<<"seq">>, [<<"1">>, <<"50000">>], %s), %s(Q%d, 50000, 30000)`, i, c.opts, check, i))
			if !strings.HasPrefix(got, "{ok,") {
				t.Fatalf("seq 1 50000: %s", got)
			}
			f := strings.Split(strings.Trim(got, "{}"), ",")
			us, _ := strconv.Atoi(f[2])
			t.Logf("50 000 lines (288 894 bytes) in %s messages, %.1f ms", f[1], float64(us)/1000)
		})
	}
}

func TestNodeBadOpens(t *testing.T) {
	_, e := nodePair(t)
	e.expect(`element(1, open(<<"no_such_program_xyz">>, []))`, `error`)
	e.expect(`{error, {enoent, _}} = open(<<"no_such_program_xyz">>, []), ok`, `ok`)
	e.expect(`{error, {enoent, _}} = open(<<"/no/such/file">>, []), ok`, `ok`)
	e.expect(`{error, {eacces, _}} = open(<<"/etc/passwd">>, []), ok`, `ok`)
	// A missing cd is an enoent too, but its message names the directory
	// as the working directory, and the program as not started.
	e.expect(`open(<<"cat">>, [], [{cd, <<"/no/such/dir">>}])`,
		`{error,{enoent,<<"working directory (cd) \"/no/such/dir\": no such file or directory; \"cat\" was not started: give as cd a directory that exists">>}}`)
	e.expect(`open(<<"./prog">>, [], [{cd, <<"/etc/passwd">>}])`,
		`{error,{enoent,<<"working directory (cd) \"/etc/passwd\": not a directory; \"./prog\" was not started: give as cd a directory that exists">>}}`)
	// A missing program names the program, and no working directory.
	e.expect(`{error, {enoent, M1}} = open(<<"/no/such/prog">>, [], [{cd, <<"/tmp">>}]), {binary:match(M1, <<"\"/no/such/prog\"">>) =/= nomatch, binary:match(M1, <<"working directory">>)}`, `{true,nomatch}`)
	e.expect(`{error, {enoent, M2}} = open(<<"no_such_program_xyz">>, [], [{cd, <<"/tmp">>}]), {binary:match(M2, <<"\"no_such_program_xyz\"">>) =/= nomatch, binary:match(M2, <<"working directory">>)}`, `{true,nomatch}`)
	e.expect(`{error, {badarg, cd, _}} = open(<<"cat">>, [], [{cd, 42}]), ok`, `ok`)
	e.expect(`{error, {badarg, bogus, _}} = open(<<"cat">>, [], [{bogus, 1}]), ok`, `ok`)
	e.expect(`{error, {badarg, args, _}} = open(<<"cat">>, [foo]), ok`, `ok`)
	e.expect(`{error, {badarg, stdio_window, _}} = open(<<"cat">>, [], [{stdio_window, 0}]), ok`, `ok`)
	e.expect(`{error, {badarg, cgroup_controllers, _}} = open(<<"cat">>, [], [{cgroup_controllers, [<<"memory">>]}]), ok`, `ok`)
	e.expect(`{error, {badarg, owner, _}} = gen_server:call({proton_stream, ps_node()}, {open, <<"cat">>, [], [], not_a_pid}), ok`, `ok`)
	e.expect(`gen_server:call({proton_stream, ps_node()}, what)`, `{error,{badcall,what}}`)
}

func TestNodeDisallowedCommand(t *testing.T) {
	echo, err := exec.LookPath("echo")
	if err != nil {
		t.Fatal(err)
	}
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Fatal(err)
	}
	_, e := nodePair(t, "--allow", strings.TrimSuffix(echo, "echo")+"ech?")
	e.expect(`{ok, P} = open(<<"echo">>, [<<"hi">>]), collect(P)`, `{<<"hi\n">>,<<>>,[],normal}`)
	e.expect(`open(<<"cat">>, [])`, fmt.Sprintf(`{error,{not_allowed,<<"%s">>}}`, cat))
	e.expect(`open(<<"../../../../../../../`+strings.TrimPrefix(cat, "/")+`">>, [], [{cd, <<"/tmp">>}])`, fmt.Sprintf(`{error,{not_allowed,<<"%s">>}}`, cat))
	// A relative program under a missing cd: the cd is what is wrong, not
	// the path the program would have had.
	e.expect(`element(1, element(2, open(<<"./echo">>, [], [{cd, <<"/no/such/dir">>}])))`, `enoent`)
}

func TestNodeRefusesToStartWithoutAllowOrCookie(t *testing.T) {
	out, err := exec.Command(psPortBinary(t), "node", "--name", uniqueName("ps"), "--cookie-file", writeCookie(t, "x")).CombinedOutput()
	if code := exitCode(err); code != 2 || !strings.Contains(string(out), "--allow-any") {
		t.Fatalf("without --allow: exit %d, %s", code, out)
	}
	cmd := exec.Command(psPortBinary(t), "node", "--name", uniqueName("ps"), "--allow-any")
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=/usr/bin:/bin"}
	out, err = cmd.CombinedOutput()
	if code := exitCode(err); code != 2 || !strings.Contains(string(out), "no cookie") {
		t.Fatalf("without a cookie: exit %d, %s", code, out)
	}
}

func TestNodeWrongCookieRefused(t *testing.T) {
	ps := startPsNode(t, randomCookie())
	e := startErl(t, randomCookie(), ps.name)
	e.expect(`net_adm:ping(ps_node())`, `pang`)
	e.expect(`{'EXIT', {{nodedown, _}, _}} = (catch gen_server:call({proton_stream, ps_node()}, {open, <<"cat">>, [], [], self()}, 5000)), ok`, `ok`)
	// One line per refused attempt, naming the peer and the reason.
	log := ps.stderr.String()
	want := "refused a connection from " + e.name + " ("
	if !strings.Contains(log, want) || !strings.Contains(log, "wrong cookie") {
		t.Errorf("ps_port did not log %q with \"wrong cookie\":\n%s", want, log)
	}
	for _, noise := range []string{"WARNING", "malformed handshake", "Can't handshake"} {
		if strings.Contains(log, noise) {
			t.Errorf("ps_port's log holds ergo's %q:\n%s", noise, log)
		}
	}
}

// A connection from OTP, used and closed, logs nothing of ergo's (OTP 25's
// global sync sends a map with a tuple key that ergo warned about every
// time, with a timestamp of its own) and says once that it is gone.
func TestNodeLogsQuiet(t *testing.T) {
	ps, e := nodePair(t)
	e.expect(`{ok, P} = open(<<"echo">>, [<<"hi">>]), collect(P)`, `{<<"hi\n">>,<<>>,[],normal}`)
	e.kill()
	waitLog(t, ps.stderr, 20*time.Second, "the connection to "+e.name+" is gone")
	log := ps.stderr.String()
	for _, noise := range []string{"WARNING", "map key", "ergo:", "%!"} {
		if strings.Contains(log, noise) {
			t.Errorf("ps_port's log holds %q:\n%s", noise, log)
		}
	}
	if n := strings.Count(log, "\n"); n > 4 {
		t.Errorf("%d log lines for one connection and one child:\n%s", n, log)
	}
}

// treeCmd starts a shell that ignores SIGTERM (so only SIGKILL after
// delay_to_sigkill ends it) with two sleeps below it, one in a new session.
const treeCmd = `<<"sh">>, [<<"-c">>, <<"trap '' TERM; setsid sleep 1000 & sleep 1000 & wait">>]`

// treePids waits until the tree of osPid has its three processes.
func treePids(t *testing.T, osPid int) []int {
	t.Helper()
	var pids []int
	waitFor(t, 5*time.Second, func() string { return fmt.Sprintf("tree of %d: %v", osPid, pids) }, func() bool {
		pids = descendantsOf(osPid)
		return len(pids) >= 3
	})
	t.Cleanup(func() { killAll(pids) })
	return pids
}

func TestNodeOwnerKilledTakesTreeDown(t *testing.T) {
	_, e := nodePair(t)
	for _, delay := range []int{100, 500} {
		t.Run(fmt.Sprintf("delay_to_sigkill=%d", delay), func(t *testing.T) {
			e.t = t
			got := e.eval(fmt.Sprintf(`{O%d, _, Os%d} = spawn_owner(%s, [{delay_to_sigkill, %d}]), Os%d`, delay, delay, treeCmd, delay, delay))
			osPid, err := strconv.Atoi(got)
			if err != nil {
				t.Fatal(got)
			}
			pids := treePids(t, osPid)
			e.expect(fmt.Sprintf(`exit(O%d, kill)`, delay), `true`)
			took := waitAllGone(t, pids, time.Duration(delay)*time.Millisecond+2*time.Second)
			t.Logf("owner killed: tree of %d processes gone after %v (delay_to_sigkill %d ms)", len(pids), took, delay)
			if limit := time.Duration(delay+100) * time.Millisecond; took > limit+200*time.Millisecond+testSlack() {
				t.Errorf("took %v, more than delay_to_sigkill + 100 ms (+200 ms for the race detector, + slack for a loaded machine)", took)
			}
		})
	}
}

func TestNodeErlKilledTakesChildrenDown(t *testing.T) {
	ps, e := nodePair(t)
	var all []int
	for i := 0; i < 3; i++ {
		osPid := e.evalInt(fmt.Sprintf(`{ok, K%d} = open(%s, [{delay_to_sigkill, 200}]), os_pid(K%d)`, i, treeCmd, i))
		all = append(all, treePids(t, osPid)...)
	}
	// One more owned by a process that has already exited normally.
	e.kill()
	took := waitAllGone(t, all, 3*time.Second)
	t.Logf("erl SIGKILLed: %d processes gone after %v", len(all), took)
	deadline := time.Now().Add(3 * time.Second)
	for !strings.Contains(ps.stderr.String(), "terminating it") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNodeCloseAndConnect(t *testing.T) {
	_, e := nodePair(t)
	osPid := e.evalInt(`{ok, P} = open(<<"cat">>, []), os_pid(P)`)
	e.expect(`P ! {self(), close}, collect(P)`, `{<<>>,<<>>,[closed],normal}`)
	waitGone(t, osPid, 2*time.Second)

	// connect hands the child to another process; the old owner is ignored.
	e.expect(`{ok, C} = open(<<"cat">>, []), Self = self(), New = spawn(fun() -> receive go -> ok end, C ! {self(), {command, <<"from new\n">>}}, C ! {self(), eof}, Self ! {new, collect(C)} end), C ! {self(), {connect, New}}, receive {C, connected} -> connected after 30000 -> timeout end`, `connected`)
	e.expect(`C ! {self(), {command, <<"from old\n">>}}, C ! {self(), close}, New ! go, receive {new, R} -> R after 10000 -> timeout end`, `{<<"from new\n">>,<<>>,[],normal}`)
	e.expect(`flush()`, `[]`)
}

func TestNodeTwoHundredChildren(t *testing.T) {
	ps, e := nodePair(t)
	rss0 := ps.rssKiB(t)
	start := time.Now()
	got := e.evalTimeout(`{ok, Ws} = open_many(200), [OsPid || {_, _, OsPid} <- Ws]`, 2*time.Minute)
	took := time.Since(start)
	var pids []int
	for _, f := range strings.Split(strings.Trim(got, "[]"), ",") {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("open_many: %s", got)
		}
		pids = append(pids, n)
	}
	t.Cleanup(func() { killAll(pids) })
	if len(pids) != 200 {
		t.Fatalf("%d children, want 200", len(pids))
	}
	for _, p := range pids {
		if !alive(p) {
			t.Fatalf("cat %d is not running", p)
		}
	}
	rss := ps.rssKiB(t)
	t.Logf("200 children opened and echoed in %v; ps_port RSS %d KiB (%d KiB before, %.1f KiB per child)",
		took, rss, rss0, float64(rss-rss0)/200)
	e.expect(`close_many(Ws)`, `200`)
	waitAllGone(t, pids, 5*time.Second)
}

// TestNodeStdinClosedAndClose: close ends a child whose stdin queue is
// full (the owner gets closed, then the exit); a command sent right behind
// eof is refused, in order, before what follows it. The child there does
// not end on EOF: one that does (cat) may be gone, and its exit sent, before
// a command that was on its way arrives (seen on a loaded CI machine), and
// a message to a child that has ended is not answered.
// (The stdin limit in every mode: TestModesStdinLimit.)
func TestNodeStdinClosedAndClose(t *testing.T) {
	_, e := nodePair(t)
	e.expect(`{ok, S} = open(<<"sleep">>, [<<"100">>], [{stdin_limit, 1000}]), S ! {self(), {command, binary:copy(<<"x">>, 100000)}}, S ! {self(), {command, binary:copy(<<"x">>, 2000)}}, receive {S, {error, stdin_overflow, _}} -> refused after 30000 -> timeout end`, `refused`)
	e.expect(`S ! {self(), close}, collect(S)`, `{<<>>,<<>>,[closed],normal}`)
	e.expect(`{ok, E} = open(<<"sleep">>, [<<"100">>]), E ! {self(), eof}, E ! {self(), {command, <<"late">>}}, E ! {self(), close}, collect(E)`,
		`{<<>>,<<>>,[{error,stdin_closed,<<"4 bytes for stdin refused: stdin was closed by eof">>},closed],normal}`)
}

func TestNodeMaxChildren(t *testing.T) {
	_, e := nodePair(t, "--allow-any", "--max-children", "2")
	e.expect(`{ok, A} = open(<<"sleep">>, [<<"100">>]), {ok, B} = open(<<"sleep">>, [<<"100">>]), open(<<"sleep">>, [<<"100">>])`,
		`{error,{too_many_children,2}}`)
	e.expect(`A ! {self(), close}, collect(A)`, `{<<>>,<<>>,[closed],normal}`)
	e.expect(`{ok, C} = open(<<"true">>, []), collect(C)`, `{<<>>,<<>>,[],normal}`)
	// A slot is free once its exit is reported: opening again at once on
	// {'EXIT', Pid, _} is never refused.
	e.expect(`lists:all(fun(_) -> {ok, Xn} = open(<<"true">>, []), element(4, collect(Xn)) =:= normal end, lists:seq(1, 50))`, `true`)
	e.expect(`B ! {self(), close}, collect(B)`, `{<<>>,<<>>,[closed],normal}`)
}

// TestNodeFlowControlBoundsMemory: a child that writes 50 MB to an owner
// that does not read for a while costs at most the window, in the owner's
// mailbox and in ps_port, and nothing is lost when the owner catches up.
func TestNodeFlowControlBoundsMemory(t *testing.T) {
	ps, e := nodePair(t)
	const total = 50_000_000
	for i, c := range []struct {
		name, opts, ack string
		window          int
	}{
		{"queue_len", `[{stdio_window, 65536}]`, "false", 65536},
		{"ack", `[{stdio_window, 65536}, {flow, ack}]`, "true", 65536},
		// The default window: output moved from the pipe in messages as
		// large as the pipe holds (node/move.go) stays within it too.
		{"queue_len_default", `[]`, "false", 262144},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			rss0 := ps.rssKiB(t)
			e.eval(fmt.Sprintf(`{ok, Z%d} = open(<<"head">>, [<<"-c">>, <<"%d">>, <<"/dev/zero">>], %s)`, i, total, c.opts))
			e.eval(`timer:sleep(1000)`)
			queued := e.evalInt(fmt.Sprintf(`mailbox_bytes(Z%d)`, i))
			rss := ps.rssKiB(t)
			if queued > c.window {
				t.Errorf("%d bytes wait in the owner's mailbox, more than the %d-byte window", queued, c.window)
			}
			if queued == 0 {
				t.Errorf("nothing waits in the mailbox of an owner that did not read for 1 s")
			}
			got := e.evalTimeout(fmt.Sprintf(`count_bytes(Z%d, %s, 60000)`, i, c.ack), 2*time.Minute)
			f := strings.Split(strings.Trim(got, "{}"), ",")
			if len(f) != 3 || f[0] != strconv.Itoa(total) || f[1] != "normal" {
				t.Fatalf("count_bytes: %s", got)
			}
			us, _ := strconv.Atoi(f[2])
			t.Logf("owner idle 1 s: %d bytes queued in its mailbox, ps_port RSS %d KiB (%d before); then 50 MB in %.0f ms (%.0f MB/s)",
				queued, rss, rss0, float64(us)/1000, float64(total)/float64(us))
		})
	}
}

// TestNodeDownNotLostBehindAFlood: the owner floods the child's mailbox
// with commands and is killed right after; its DOWN, queued behind them,
// still takes the tree down.
func TestNodeDownNotLostBehindAFlood(t *testing.T) {
	ps, e := nodePair(t)
	got := e.evalTimeout(`{FO, _, FOs} = flood_owner(<<"sh">>, [<<"-c">>, <<"trap '' TERM; sleep 1000 & cat > /dev/null">>], [{delay_to_sigkill, 200}, {stdin_limit, 100000000}], 200000, 100), FOs`, 2*time.Minute)
	osPid, err := strconv.Atoi(got)
	if err != nil {
		t.Fatal(got)
	}
	pids := treePids(t, osPid)
	e.expect(`exit(FO, kill)`, `true`)
	took := waitAllGone(t, pids, 20*time.Second)
	t.Logf("200 000 commands then the owner killed: tree of %d gone after %v", len(pids), took)
	if strings.Contains(ps.stderr.String(), "is full") {
		t.Errorf("ps_port dropped messages:\n%s", ps.stderr.String())
	}
}

// TestNodeSelectiveReceiveAcrossChildren: the owner reads one child to the
// end while the other child's output waits in its mailbox. queue_len counts
// both, so flow control must look at the messages to keep the first going.
func TestNodeSelectiveReceiveAcrossChildren(t *testing.T) {
	_, e := nodePair(t)
	for i, opts := range []string{`[{stdio_window, 65536}]`, `[]`} {
		e.eval(fmt.Sprintf(`{ok, SA%d} = open(<<"head">>, [<<"-c">>, <<"5000000">>, <<"/dev/zero">>], %s), {ok, SB%d} = open(<<"head">>, [<<"-c">>, <<"5000000">>, <<"/dev/zero">>], %s), timer:sleep(200)`, i, opts, i, opts))
		a := e.eval(fmt.Sprintf(`count_bytes(SA%d, false, 10000)`, i))
		b := e.eval(fmt.Sprintf(`count_bytes(SB%d, false, 10000)`, i))
		if !strings.HasPrefix(a, "{5000000,normal,") || !strings.HasPrefix(b, "{5000000,normal,") {
			t.Fatalf("%s: first child %s, second %s", opts, a, b)
		}
		t.Logf("%s: first child 5 MB read alone while the second waits: %s µs", opts, strings.Split(strings.Trim(a, "{}"), ",")[2])
	}
}
