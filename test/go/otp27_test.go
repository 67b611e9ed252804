//go:build otp27

package blackbox

// Node mode with Erlang/OTP 27 (Debian 13's, in the chroot that
// scripts/otp27.sh makes) on the owner's side: the node tests of
// node_test.go run again with erl from the chroot, plus what only matters
// across versions (unlink from the owner's side, a cluster with OTP 25 and
// OTP 27 owners at once). "make test-otp27" runs these (build tag otp27).

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	otp27Once sync.Once
	otp27Cmd  []string
	otp27Err  error
)

// otp27Erl makes the chroot when it is missing and returns the command
// that runs its erl.
func otp27Erl(t *testing.T) []string {
	t.Helper()
	otp27Once.Do(func() {
		script, err := filepath.Abs("../../scripts/otp27.sh")
		if err != nil {
			otp27Err = err
			return
		}
		start := time.Now()
		out, err := exec.Command(script, "create").CombinedOutput()
		if err != nil {
			otp27Err = fmt.Errorf("%s create: %v\n%s", script, err, out)
			return
		}
		if len(out) > 0 {
			fmt.Fprintf(os.Stderr, "%s(%v)\n", out, time.Since(start).Round(time.Second))
		}
		otp27Cmd = []string{script, "run", "--", "erl"}
	})
	if otp27Err != nil {
		t.Fatal(otp27Err)
	}
	return otp27Cmd
}

// otp27Release is the OTP release of erl node e.
func otp27Release(e *erlNode) string {
	return e.eval(`erlang:system_info(otp_release)`)
}

// TestOTP27NodeTests runs the node tests of node_test.go with OTP 27
// owners.
func TestOTP27NodeTests(t *testing.T) {
	erl := otp27Erl(t)
	saved := erlCommand
	erlCommand = erl
	t.Cleanup(func() { erlCommand = saved })

	// The owner really is OTP 27.
	_, e := nodePair(t)
	if rel := otp27Release(e); rel != `"27"` {
		t.Fatalf("erl from the chroot runs OTP %s", rel)
	}

	for _, c := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"EchoThroughCat", TestNodeEchoThroughCat},
		{"StdoutAndStderr", TestNodeStdoutAndStderr},
		{"ExitReasons", TestNodeExitReasons},
		{"FiftyThousandLines", TestNodeFiftyThousandLines},
		{"BadOpens", TestNodeBadOpens},
		{"DisallowedCommand", TestNodeDisallowedCommand},
		{"WrongCookieRefused", TestNodeWrongCookieRefused},
		{"OwnerKilledTakesTreeDown", TestNodeOwnerKilledTakesTreeDown},
		{"ErlKilledTakesChildrenDown", TestNodeErlKilledTakesChildrenDown},
		{"CloseAndConnect", TestNodeCloseAndConnect},
		{"TwoHundredChildren", TestNodeTwoHundredChildren},
		{"StdinOverflowIsReported", TestNodeStdinOverflowIsReported},
		{"SIGTERMTerminatesChildren", TestNodeSIGTERMTerminatesChildren},
		{"MaxChildren", TestNodeMaxChildren},
		{"FlowControlBoundsMemory", TestNodeFlowControlBoundsMemory},
		{"DownNotLostBehindAFlood", TestNodeDownNotLostBehindAFlood},
		{"SelectiveReceiveAcrossChildren", TestNodeSelectiveReceiveAcrossChildren},
	} {
		t.Run(c.name, c.f)
	}
}

// testLinks: the owner links to a child and unlinks; the link exit that
// ergo sends when the child ends arrives only while linked. Both ways of
// the UNLINK_ID protocol are crossed: unlink/1 sends UNLINK_ID, ps_port
// answers it.
func testLinks(t *testing.T, erl []string) {
	cookie := randomCookie()
	ps := startPsNode(t, cookie)
	e := startErlWith(t, erl, cookie, ps.name)
	t.Logf("owner on OTP %s", otp27Release(e))
	e.expect(`process_flag(trap_exit, true), ok`, `ok`)
	const exit3 = `<<"sh">>, [<<"-c">>, <<"read x; exit 3">>]`
	// Linked: the exit message from ps_port and the link's exit signal.
	got := e.eval(`{ok, L} = open(` + exit3 + `), link(L), {links, Ls} = process_info(self(), links), true = lists:member(L, Ls), L ! {self(), {command, <<"x\n">>}}, {_, _, [], R1} = collect(L), timer:sleep(300), lists:sort([R1 | [R || {'EXIT', P, R} <- flush(), P =:= L]])`)
	if got != `[normal,{exit_status,3}]` {
		t.Fatalf("linked: exits %s, want the message ({exit_status,3}) and the link's (normal)", got)
	}
	// Linked and unlinked: the message only, and no link left on either side.
	e.expect(`{ok, U} = open(`+exit3+`), link(U), unlink(U), {links, Us} = process_info(self(), links), false = lists:member(U, Us), U ! {self(), {command, <<"x\n">>}}, R2 = collect(U), timer:sleep(300), {R2, flush()}`,
		`{{<<>>,<<>>,[],{exit_status,3}},[]}`)
	// Many times over, interleaved with data: the connection stays up and
	// in order.
	e.expect(`{ok, C} = open(<<"cat">>, []), [begin link(C), C ! {self(), {command, integer_to_binary(I)}}, unlink(C) end || I <- lists:seq(1, 500)], C ! {self(), eof}, {Out, <<>>, [], normal} = collect(C), Out =:= iolist_to_binary([integer_to_binary(I) || I <- lists:seq(1, 500)])`, `true`)
	e.expect(`timer:sleep(300), flush()`, `[]`)
	// A process that links to a child, unlinks and dies does not take the
	// child with it; the child still answers its owner.
	e.expect(`{ok, K} = open(<<"cat">>, []), Me = self(), H = spawn(fun() -> link(K), unlink(K), Me ! unlinked, exit(boom) end), receive unlinked -> ok end, timer:sleep(200), K ! {self(), {command, <<"still\n">>}}, receive {K, {data, D}} -> D after 5000 -> timeout end`, `<<"still\n">>`)
	e.expect(`K ! {self(), close}, collect(K)`, `{<<>>,<<>>,[closed],normal}`)
}

func TestOTP27Links(t *testing.T) {
	erl := otp27Erl(t)
	t.Run("OTP27", func(t *testing.T) { testLinks(t, erl) })
	t.Run("OTP25", func(t *testing.T) { testLinks(t, []string{"erl"}) })
}

// TestOTP27MixedCluster: an OTP 25 and an OTP 27 owner use one ps_port
// node at the same time; each one's children stream, and when one owner's
// node dies only its children go.
func TestOTP27MixedCluster(t *testing.T) {
	erl27 := otp27Erl(t)
	cookie := randomCookie()
	ps := startPsNode(t, cookie)
	e25 := startErlWith(t, []string{"erl"}, cookie, ps.name)
	e27 := startErlWith(t, erl27, cookie, ps.name)
	if r25, r27 := otp27Release(e25), otp27Release(e27); r25 != `"25"` || r27 != `"27"` {
		t.Fatalf("releases %s and %s", r25, r27)
	}
	// Trees on both, and cat on both.
	var trees [2][]int
	for i, e := range []*erlNode{e25, e27} {
		osPid := e.evalInt(fmt.Sprintf(`{ok, T} = open(%s, [{delay_to_sigkill, 200}]), os_pid(T)`, treeCmd))
		trees[i] = treePids(t, osPid)
		e.expect(`{ok, C} = open(<<"cat">>, []), C ! {self(), {command, <<"hi\n">>}}, receive {C, {data, D}} -> D after 5000 -> timeout end`, `<<"hi\n">>`)
	}
	t.Logf("nodes seen from OTP 25: %s, from OTP 27: %s", e25.eval(`nodes()`), e27.eval(`nodes()`))
	// 50 000 lines to each, at the same time.
	for _, e := range []*erlNode{e25, e27} {
		e.expect(`Self = self(), spawn(fun() -> {ok, Q} = node_driver:open(<<"seq">>, [<<"1">>, <<"50000">>]), Self ! {seq, node_driver:seq_check(Q, 50000, 30000)} end), ok`, `ok`)
	}
	for _, e := range []*erlNode{e25, e27} {
		got := e.eval(`receive {seq, R} -> R after 40000 -> timeout end`)
		if !strings.HasPrefix(got, "{ok,") {
			t.Fatalf("seq 1 50000 with two owners' nodes: %s", got)
		}
		f := strings.Split(strings.Trim(got, "{}"), ",")
		us, _ := strconv.Atoi(f[2])
		t.Logf("50 000 lines in %s messages, %.1f ms", f[1], float64(us)/1000)
	}
	// The OTP 27 node goes: its children go, the OTP 25 node's stay.
	e27.kill()
	took := waitAllGone(t, trees[1], 3*time.Second)
	t.Logf("OTP 27 erl SIGKILLed: its tree gone after %v", took)
	for _, p := range trees[0] {
		if !procAlive(p) {
			t.Fatalf("the OTP 25 owner's tree lost %d when the OTP 27 node died", p)
		}
	}
	e25.expect(`C ! {self(), {command, <<"still\n">>}}, receive {C, {data, D2}} -> D2 after 5000 -> timeout end`, `<<"still\n">>`)
	// And an OTP 27 node that comes back later works beside it.
	e27b := startErlWith(t, erl27, cookie, ps.name)
	e27b.expect(`{ok, C} = open(<<"cat">>, []), C ! {self(), {command, <<"back\n">>}}, receive {C, {data, D}} -> D after 5000 -> timeout end`, `<<"back\n">>`)
	e25.kill()
	took = waitAllGone(t, trees[0], 3*time.Second)
	t.Logf("OTP 25 erl SIGKILLed: its tree gone after %v", took)
	e27b.expect(`C ! {self(), {command, <<"last\n">>}}, receive {C, {data, D2}} -> D2 after 5000 -> timeout end`, `<<"last\n">>`)
}
