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

// nodePair starts a ps_port node (flags extra, default --allow-any) and an
// erl node with the same cookie.
func nodePair(t *testing.T, extra ...string) (*psNode, *erlNode) {
	t.Helper()
	cookie := randomCookie()
	ps := startPsNode(t, cookie, extra...)
	return ps, startErl(t, cookie, ps.name)
}

func TestNodeEchoThroughCat(t *testing.T) {
	_, e := nodePair(t)
	e.expect(`{ok, P} = open(<<"cat">>, []), is_pid(P) andalso node(P) =:= ps_node()`, "true")
	osPid := e.evalInt(`os_pid(P)`)
	if !procAlive(osPid) {
		t.Fatalf("cat (%d) is not running", osPid)
	}
	e.expect(`P ! {self(), {command, <<"hello\n">>}}, receive {P, {data, D1}} -> D1 after 10000 -> timeout end`, `<<"hello\n">>`)
	// iodata: nested lists, charlists, an improper tail.
	e.expect(`P ! {self(), {command, [$a, "bc", [<<"de">> | <<"f">>], 10]}}, receive {P, {data, D2}} -> D2 after 10000 -> timeout end`, `<<"abcdef\n">>`)
	e.expect(`P ! {self(), eof}, collect(P)`, `{<<>>,<<>>,[],normal}`)
	waitProcGone(t, osPid, 5*time.Second)
}

func TestNodeStdoutAndStderr(t *testing.T) {
	_, e := nodePair(t)
	e.expect(`{ok, P1} = open(<<"sh">>, [<<"-c">>, <<"echo out; echo err >&2; echo out2">>]), collect(P1)`,
		`{<<"out\nout2\n">>,<<"err\n">>,[],normal}`)
	e.expect(`{ok, P2} = open("sh", ["-c", "echo out; echo err >&2"], [{stderr_to_stdout, true}]), collect(P2)`,
		`{<<"out\nerr\n">>,<<>>,[],normal}`)
	e.expect(`{ok, P3} = open(<<"sh">>, [<<"-c">>, <<"echo out; echo err >&2">>], #{capture_stderr_only => true}), collect(P3)`,
		`{<<>>,<<"err\n">>,[],normal}`)
	e.expect(`{ok, P4} = open(<<"sh">>, [<<"-c">>, <<"echo $FOO-$HOME-$0; pwd">>], [{env, [{"FOO", "bar"}, {<<"HOME">>, false}]}, {cd, <<"/tmp">>}, {arg0, <<"myname">>}]), collect(P4)`,
		`{<<"bar--myname\n/tmp\n">>,<<>>,[],normal}`)
}

func TestNodeExitReasons(t *testing.T) {
	_, e := nodePair(t)
	e.expect(`{ok, A} = open(<<"true">>, []), collect(A)`, `{<<>>,<<>>,[],normal}`)
	e.expect(`{ok, B} = open(<<"false">>, []), collect(B)`, `{<<>>,<<>>,[],{exit_status,1}}`)
	e.expect(`{ok, C} = open(<<"sh">>, [<<"-c">>, <<"exit 42">>]), collect(C)`, `{<<>>,<<>>,[],{exit_status,42}}`)
	e.expect(`{ok, D} = open(<<"sh">>, [<<"-c">>, <<"kill -TERM $$">>]), collect(D)`, `{<<>>,<<>>,[],{signal,15}}`)
	e.expect(`{ok, S} = open(<<"sleep">>, [<<"100">>]), S ! {self(), {signal, 9}}, collect(S)`, `{<<>>,<<>>,[],{signal,9}}`)
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
}

func TestNodeRefusesToStartWithoutAllowOrCookie(t *testing.T) {
	out, err := exec.Command(psPortBinary(t), "node", "--name", uniqueName("ps"), "--cookie-file", writeCookie(t, "x")).CombinedOutput()
	if code := nodeExitCode(err); code != 2 || !strings.Contains(string(out), "--allow-any") {
		t.Fatalf("without --allow: exit %d, %s", code, out)
	}
	cmd := exec.Command(psPortBinary(t), "node", "--name", uniqueName("ps"), "--allow-any")
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=/usr/bin:/bin"}
	out, err = cmd.CombinedOutput()
	if code := nodeExitCode(err); code != 2 || !strings.Contains(string(out), "no cookie") {
		t.Fatalf("without a cookie: exit %d, %s", code, out)
	}
}

func nodeExitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestNodeWrongCookieRefused(t *testing.T) {
	ps := startPsNode(t, randomCookie())
	e := startErl(t, randomCookie(), ps.name)
	e.expect(`net_adm:ping(ps_node())`, `pang`)
	e.expect(`{'EXIT', {{nodedown, _}, _}} = (catch gen_server:call({proton_stream, ps_node()}, {open, <<"cat">>, [], [], self()}, 5000)), ok`, `ok`)
	if n := strings.Count(ps.stderr.String(), "Can't handshake"); n == 0 {
		t.Errorf("ps_port logged no refused handshake:\n%s", ps.stderr.String())
	}
}

// treeCmd starts a shell that ignores SIGTERM (so only SIGKILL after
// delay_to_sigkill ends it) with two sleeps below it, one in a new session.
const treeCmd = `<<"sh">>, [<<"-c">>, <<"trap '' TERM; setsid sleep 1000 & sleep 1000 & wait">>]`

// treePids waits until the tree of osPid has its three processes.
func treePids(t *testing.T, osPid int) []int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids := descendantsOf(osPid)
		if len(pids) >= 3 {
			t.Cleanup(func() { killAll(pids) })
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("tree of %d: %v", osPid, pids)
		}
		time.Sleep(5 * time.Millisecond)
	}
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
			if limit := time.Duration(delay+100) * time.Millisecond; took > limit+200*time.Millisecond {
				t.Errorf("took %v, more than delay_to_sigkill + 100 ms (+200 ms slack for the race detector)", took)
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
	waitProcGone(t, osPid, 2*time.Second)

	// connect hands the child to another process; the old owner is ignored.
	e.expect(`{ok, C} = open(<<"cat">>, []), Self = self(), New = spawn(fun() -> receive go -> ok end, C ! {self(), {command, <<"from new\n">>}}, C ! {self(), eof}, Self ! {new, collect(C)} end), C ! {self(), {connect, New}}, receive {C, connected} -> connected after 5000 -> timeout end`, `connected`)
	e.expect(`C ! {self(), {command, <<"from old\n">>}}, C ! {self(), close}, New ! go, receive {new, R} -> R after 10000 -> timeout end`, `{<<"from new\n">>,<<>>,[],normal}`)
	e.expect(`flush()`, `[]`)
}
