//go:build otproot

package blackbox

// Node mode with the Erlang/OTP of another Debian release on the owner's
// side, in a chroot that scripts/otp-root.sh makes; PS_OTP_ROOT names the
// release (trixie: OTP 27, sid: the newest). Built with the tag otproot and
// PS_OTP_ROOT set, every test that starts its owners with startErl or
// startErlNode (erlCommand) — all the TestNode* tests and the node case of
// the TestModes* tables, today's and tomorrow's — runs them on the root's
// OTP; the TestOTPRoot* tests below check that, and add what only matters
// across versions (unlink from the owner's side, a cluster with owners of
// the host's OTP and of the root's at once). "make test-otp REL=sid" runs
// them all (-run '^Test(OTPRoot|Node|Modes)').

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
	rootOnce sync.Once
	rootErl  []string
	rootRel  string
	rootErr  error
)

// The owners of every startErl are the root's; TestOTPRootOwners checks it.
func init() {
	if rel := os.Getenv("PS_OTP_ROOT"); rel != "" {
		erlCommand = []string{rootScript(), rel, "run", "--", "erl"}
	}
}

// rootScript is scripts/otp-root.sh, absolute (go test runs a package's
// tests in its directory).
func rootScript() string {
	script, err := filepath.Abs("../../scripts/otp-root.sh")
	if err != nil {
		panic(err)
	}
	return script
}

// otpRoot makes the chroot of the release PS_OTP_ROOT names when it is
// missing and returns the command that runs its erl and its OTP release as
// erl prints it ("29"). A root that runs the host's own release fails: the
// tests here are about another one.
func otpRoot(t *testing.T) (erl []string, release string) {
	t.Helper()
	rootOnce.Do(func() {
		rel := os.Getenv("PS_OTP_ROOT")
		if rel == "" {
			rootErr = fmt.Errorf("PS_OTP_ROOT is not set: name the Debian release whose Erlang/OTP to test, e.g. PS_OTP_ROOT=sid (or run make test-otp REL=sid)")
			return
		}
		script := rootScript()
		start := time.Now()
		out, err := exec.Command(script, rel, "create").CombinedOutput()
		if err != nil {
			rootErr = fmt.Errorf("%s %s create: %v\n%s", script, rel, err, out)
			return
		}
		if len(out) > 0 {
			fmt.Fprintf(os.Stderr, "%s(%v)\n", out, time.Since(start).Round(time.Second))
		}
		rootErl = []string{script, rel, "run", "--", "erl"}
		if rootRel, rootErr = otpReleaseOf(rootErl); rootErr != nil {
			return
		}
		host, err := otpReleaseOf([]string{"erl"})
		if err != nil {
			rootErr = err
		} else if host == rootRel {
			rootErr = fmt.Errorf("the root %s runs OTP %s, as the host does: PS_OTP_ROOT must name a release with another Erlang/OTP", rel, rootRel)
		}
	})
	if rootErr != nil {
		t.Fatal(rootErr)
	}
	return rootErl, rootRel
}

// otpReleaseOf is the OTP release that the command erl runs, as
// erlang:system_info(otp_release) prints with ~p ("29").
func otpReleaseOf(erl []string) (string, error) {
	args := append(append([]string(nil), erl[1:]...), "-noshell", "-eval", `io:format("~p", [erlang:system_info(otp_release)]), halt().`)
	out, err := exec.Command(erl[0], args...).Output()
	if err != nil {
		return "", fmt.Errorf("%s: %v", strings.Join(erl, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

// erlRelease is the OTP release of erl node e, as otpReleaseOf prints it.
func erlRelease(e *erlNode) string {
	return e.eval(`erlang:system_info(otp_release)`)
}

// otpName is "OTP 29" for the release "\"29\"".
func otpName(release string) string {
	return "OTP " + strings.Trim(release, `"`)
}

// TestOTPRootOwners: an owner that a test starts with startErl runs the
// root's OTP and uses ps_port (so the TestNode* tests run in this build
// test the root's release).
func TestOTPRootOwners(t *testing.T) {
	erl, rel := otpRoot(t)
	if strings.Join(erlCommand, " ") != strings.Join(erl, " ") {
		t.Fatalf("startErl runs %v, want the root's erl %v", erlCommand, erl)
	}
	cookie := randomCookie()
	ps := startPsNode(t, cookie)
	e := startErl(t, cookie, ps.name)
	if got := erlRelease(e); got != rel {
		t.Fatalf("an owner started with startErl runs %s, want %s", otpName(got), otpName(rel))
	}
	e.expect(`{ok, C} = open(<<"cat">>, []), C ! {self(), {command, <<"hi\n">>}}, receive {C, {data, D}} -> D after 30000 -> timeout end`, `<<"hi\n">>`)
	t.Logf("owners on %s", otpName(rel))
}

// testLinks: the owner links to a child and unlinks; the link exit that
// ergo sends when the child ends arrives only while linked. Both ways of
// the UNLINK_ID protocol are crossed: unlink/1 sends UNLINK_ID, ps_port
// answers it.
func testLinks(t *testing.T, erl []string) {
	cookie := randomCookie()
	ps := startPsNode(t, cookie)
	e := startErlWith(t, erl, cookie, ps.name)
	t.Logf("owner on %s", otpName(erlRelease(e)))
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
	e.expect(`{ok, K} = open(<<"cat">>, []), Me = self(), H = spawn(fun() -> link(K), unlink(K), Me ! unlinked, exit(boom) end), receive unlinked -> ok end, timer:sleep(200), K ! {self(), {command, <<"still\n">>}}, receive {K, {data, D}} -> D after 30000 -> timeout end`, `<<"still\n">>`)
	e.expect(`K ! {self(), close}, collect(K)`, `{<<>>,<<>>,[closed],normal}`)
}

// TestOTPRootLinks: links and unlinks from an owner on the root's OTP and
// from one on the host's.
func TestOTPRootLinks(t *testing.T) {
	erl, _ := otpRoot(t)
	t.Run("Root", func(t *testing.T) { testLinks(t, erl) })
	t.Run("Host", func(t *testing.T) { testLinks(t, []string{"erl"}) })
}

// TestOTPRootMixedCluster: an owner on the host's OTP (25 on Debian 12) and
// one on the root's use one ps_port node at the same time; each one's
// children stream, and when one owner's node dies only its children go.
func TestOTPRootMixedCluster(t *testing.T) {
	erlRoot, relRoot := otpRoot(t)
	relHost, err := otpReleaseOf([]string{"erl"})
	if err != nil {
		t.Fatal(err)
	}
	cookie := randomCookie()
	ps := startPsNode(t, cookie)
	eHost := startErlWith(t, []string{"erl"}, cookie, ps.name)
	eRoot := startErlWith(t, erlRoot, cookie, ps.name)
	if rh, rr := erlRelease(eHost), erlRelease(eRoot); rh != relHost || rr != relRoot {
		t.Fatalf("owners on %s and %s, want %s and %s", otpName(rh), otpName(rr), otpName(relHost), otpName(relRoot))
	}
	host, root := otpName(relHost), otpName(relRoot)
	// Trees on both, and cat on both.
	var trees [2][]int
	for i, e := range []*erlNode{eHost, eRoot} {
		osPid := e.evalInt(fmt.Sprintf(`{ok, T} = open(%s, [{delay_to_sigkill, 200}]), os_pid(T)`, treeCmd))
		trees[i] = treePids(t, osPid)
		e.expect(`{ok, C} = open(<<"cat">>, []), C ! {self(), {command, <<"hi\n">>}}, receive {C, {data, D}} -> D after 30000 -> timeout end`, `<<"hi\n">>`)
	}
	t.Logf("nodes seen from %s: %s, from %s: %s", host, eHost.eval(`nodes()`), root, eRoot.eval(`nodes()`))
	// 50 000 lines to each, at the same time.
	for _, e := range []*erlNode{eHost, eRoot} {
		e.expect(`Self = self(), spawn(fun() -> {ok, Q} = node_driver:open(<<"seq">>, [<<"1">>, <<"50000">>]), Self ! {seq, node_driver:seq_check(Q, 50000, 30000)} end), ok`, `ok`)
	}
	for _, e := range []*erlNode{eHost, eRoot} {
		got := e.eval(`receive {seq, R} -> R after 40000 -> timeout end`)
		if !strings.HasPrefix(got, "{ok,") {
			t.Fatalf("seq 1 50000 with two owners' nodes: %s", got)
		}
		f := strings.Split(strings.Trim(got, "{}"), ",")
		us, _ := strconv.Atoi(f[2])
		t.Logf("50 000 lines in %s messages, %.1f ms", f[1], float64(us)/1000)
	}
	// The root's node goes: its children go, the host's node's stay.
	eRoot.kill()
	took := waitAllGone(t, trees[1], 3*time.Second)
	t.Logf("%s erl SIGKILLed: its tree gone after %v", root, took)
	for _, p := range trees[0] {
		if !alive(p) {
			t.Fatalf("the %s owner's tree lost %d when the %s node died", host, p, root)
		}
	}
	eHost.expect(`C ! {self(), {command, <<"still\n">>}}, receive {C, {data, D2}} -> D2 after 30000 -> timeout end`, `<<"still\n">>`)
	// And a node of the root that comes back later works beside it.
	eRootB := startErlWith(t, erlRoot, cookie, ps.name)
	eRootB.expect(`{ok, C} = open(<<"cat">>, []), C ! {self(), {command, <<"back\n">>}}, receive {C, {data, D}} -> D after 30000 -> timeout end`, `<<"back\n">>`)
	eHost.kill()
	took = waitAllGone(t, trees[0], 3*time.Second)
	t.Logf("%s erl SIGKILLed: its tree gone after %v", host, took)
	eRootB.expect(`C ! {self(), {command, <<"last\n">>}}, receive {C, {data, D2}} -> D2 after 30000 -> timeout end`, `<<"last\n">>`)
}
