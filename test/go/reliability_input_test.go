package blackbox

// Hostile and malformed input: random and truncated frames, bytes that
// are not UTF-8, huge environments, unknown users, privileges a ps_port
// does not have, the cookie, and requests a ps_port node must refuse.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/protonstream/ps_port/etf"
)

// relFrameSeed fixes the random frames: a failure names the case, and the
// same seed makes the same frames again.
const relFrameSeed = 20261123

// relFrameCase is one hostile input for a ps_port running cat: bytes to
// write to its stdin, after which the stdin is closed.
type relFrameCase struct {
	name string
	in   []byte
}

// relFrameCases makes n cases from the seed: random bytes, valid frames
// with bytes flipped or cut short, random length prefixes, and valid terms
// the protocol does not know.
func relFrameCases(n int) []relFrameCase {
	r := rand.New(rand.NewSource(relFrameSeed))
	valid := [][]byte{}
	for _, t := range []etf.Term{
		etf.Tuple{atom("command"), []byte("hello\n")},
		etf.Tuple{atom("command"), bytes.Repeat([]byte{0xff, 0, 'x'}, 100)},
		atom("eof"),
		etf.Tuple{atom("ack"), int64(1000)},
		etf.Tuple{atom("ack"), int64(1) << 40},
		etf.Tuple{atom("signal"), int64(18)},
		atom("stop"),
	} {
		b, err := etf.Encode(t)
		if err != nil {
			panic(err)
		}
		valid = append(valid, b)
	}
	unknown := []etf.Term{
		etf.Tuple{atom("command"), int64(5)},
		etf.Tuple{atom("command"), []byte("x"), []byte("y")},
		etf.Tuple{atom("signal"), int64(0)},
		etf.Tuple{atom("signal"), int64(65)},
		etf.List{atom("eof")},
		[]byte("eof"),
		int64(-1),
	}
	// A map #{command => <<"x">>} (the encoder has no maps).
	// And {ack, -5.0} (nor floats).
	unknownRaw := [][]byte{
		{131, 116, 0, 0, 0, 1, 119, 7, 'c', 'o', 'm', 'm', 'a', 'n', 'd', 109, 0, 0, 0, 1, 'x'},
		{131, 104, 2, 119, 3, 'a', 'c', 'k', 70, 0xc0, 0x14, 0, 0, 0, 0, 0, 0},
	}
	var cases []relFrameCase
	for i := 0; len(cases) < n; i++ {
		var c relFrameCase
		switch k := i % 7; k {
		case 0: // random bytes in a well-formed frame
			b := make([]byte, r.Intn(200))
			r.Read(b)
			if len(b) > 0 && r.Intn(2) == 0 {
				b[0] = 131
			}
			c = relFrameCase{"random payload", packet(b)}
		case 1: // a valid frame with 1-4 bytes changed
			b := append([]byte(nil), valid[r.Intn(len(valid))]...)
			for j := r.Intn(4) + 1; j > 0; j-- {
				b[r.Intn(len(b))] = byte(r.Intn(256))
			}
			c = relFrameCase{"flipped bytes", packet(b)}
		case 2: // a valid frame cut short, then EOF
			f := packet(valid[r.Intn(len(valid))])
			c = relFrameCase{"truncated frame", f[:r.Intn(len(f)-1)+1]}
		case 3: // a random length prefix and too few bytes, then EOF
			var hdr [4]byte
			r.Read(hdr[:])
			b := make([]byte, r.Intn(64))
			r.Read(b)
			c = relFrameCase{"random length prefix", append(hdr[:], b...)}
		case 4: // a frame whose term is cut or padded
			b := valid[r.Intn(len(valid))]
			if r.Intn(2) == 0 {
				b = b[:r.Intn(len(b))]
			} else {
				b = append(append([]byte(nil), b...), byte(r.Intn(256)))
			}
			c = relFrameCase{"term cut or padded", packet(b)}
		case 5: // a valid term the protocol does not know
			j := r.Intn(len(unknown) + len(unknownRaw))
			if j >= len(unknown) {
				c = relFrameCase{"unknown term", packet(unknownRaw[j-len(unknown)])}
				break
			}
			b, err := etf.Encode(unknown[j])
			if err != nil {
				panic(err)
			}
			c = relFrameCase{"unknown term", packet(b)}
		case 6: // several valid frames, then a random one
			var in []byte
			for j := r.Intn(5); j > 0; j-- {
				in = append(in, packet(valid[r.Intn(2)])...)
			}
			b := make([]byte, r.Intn(40)+1)
			r.Read(b)
			c = relFrameCase{"valid frames then garbage", append(in, packet(append([]byte{131}, b...))...)}
		}
		c.name = fmt.Sprintf("%03d %s", len(cases), c.name)
		cases = append(cases, c)
	}
	return cases
}

// TestReliabilityRandomFrames feeds 280 hostile inputs (fixed seed) to
// ps_port --packet running cat. Each ends with an {exit, _} frame, no
// panic, the child gone, and ps_port's exit code 5 exactly when it
// reported {error, badframe, _} (0 otherwise: the input was valid).
func TestReliabilityRandomFrames(t *testing.T) {
	cases := relFrameCases(280)
	kinds := map[string]int{}
	badframes := 0
	for _, c := range cases {
		p := startPort(t, "--packet", "--delay-to-sigkill", "50", "--", "cat")
		pid := p.started()
		p.stdin.Write(c.in)
		p.stdin.Close()
		o := p.collect(true, 10*time.Second)
		var after []etf.Term
		for f := range p.frames {
			after = append(after, f)
		}
		code := p.exitCode(5 * time.Second)
		if len(after) > 0 {
			t.Errorf("%s (% x): frames after the exit frame: %v", c.name, c.in, after)
		}
		bad := false
		for _, f := range append(o.others, after...) {
			if tu, ok := etf.MatchTuple(f, "error", 3); ok && tu[1] == atom("badframe") {
				bad = true
			}
		}
		if bad {
			badframes++
		}
		if s := p.stderr.String(); strings.Contains(s, "panic") || strings.Contains(s, "goroutine ") {
			t.Errorf("%s (% x): ps_port panicked:\n%s", c.name, c.in, s)
		}
		if (code == 5) != bad || (code != 0 && code != 5) {
			t.Errorf("%s (% x): exit code %d, badframe reported %v; frames %v", c.name, c.in, code, bad, o.others)
		}
		if alive(pid) {
			t.Errorf("%s: child %d left running", c.name, pid)
		}
		kinds[strings.SplitN(c.name, " ", 2)[1]]++
	}
	t.Logf("%d inputs (seed %d; %v): %d reported as bad frames, the rest taken as valid; every child gone, no panic",
		len(cases), relFrameSeed, kinds, badframes)
}

// TestReliabilityNonUTF8Bytes: arguments, environment values, stdin and
// output that are not UTF-8 (every byte value but NUL where the OS forbids
// it) pass through as they are, in both modes.
func TestReliabilityNonUTF8Bytes(t *testing.T) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	arg := string([]byte{0xff, 0xfe, 'a', 0xc3, 0x28, 0x80, 0xed, 0xa0, 0x80, '\n', 1, 0x7f})
	file := filepath.Join(t.TempDir(), "bytes")
	if err := os.WriteFile(file, all, 0o644); err != nil {
		t.Fatal(err)
	}
	want := append(append(append([]byte(arg), arg...), all...), all...)
	script := `printf '%s' "$1"; printf '%s' "$V"; cat "$2"; cat`

	t.Run("port", func(t *testing.T) {
		p := startPort(t, "--packet", "--env", "V="+arg, "--", "sh", "-c", script, "sh", arg, file)
		p.started()
		p.send(etf.Tuple{atom("command"), all})
		p.send(atom("eof"))
		o := p.collect(true, 5*time.Second)
		if !bytes.Equal(o.stdout, want) || !equal(o.exit, status(0)) {
			t.Errorf("got % x (exit %v)\nwant % x", o.stdout, o.exit, want)
		}
	})
	t.Run("node", func(t *testing.T) {
		_, e := nodePair(t)
		bin := func(b []byte) string {
			var parts []string
			for _, c := range b {
				parts = append(parts, strconv.Itoa(int(c)))
			}
			return "<<" + strings.Join(parts, ",") + ">>"
		}
		got := e.eval(fmt.Sprintf(`{ok, U} = open(<<"sh">>, [<<"-c">>, %s, <<"sh">>, %s, %s], [{env, [{<<"V">>, %s}]}]), U ! {self(), {command, %s}}, U ! {self(), eof}, {Out, _, [], normal} = collect(U), Out =:= %s`,
			erlBin(script), bin([]byte(arg)), erlBin(file), bin([]byte(arg)), bin(all), bin(want)))
		if got != "true" {
			t.Errorf("node mode changed the bytes: %s", got)
		}
	})
}

// TestReliabilityHugeEnv: a 100 KiB environment value reaches the child
// whole; one past the kernel's 128 KiB limit for a single string, or
// 3 MiB in all, is refused with e2big and a message, nothing started. (In
// port mode the environment travels in ps_port's own arguments, so the
// kernel refuses it when the BEAM starts ps_port: see
// test/elixir/reliability_input_test.exs.)
func TestReliabilityHugeEnv(t *testing.T) {
	cookie := randomCookie()
	ps := startNode(t, nodeOpts{tag: relTag(), cookie: cookie})
	e := startErlNode(t, cookie, ps.name, erlOpts{reliability: true})
	e.expect(`{ok, H} = open(<<"sh">>, [<<"-c">>, <<"printf %s \"$BIG\" | wc -c">>], [{env, [{<<"BIG">>, binary:copy(<<"b">>, 102400)}]}]), reliability_driver:bytes_of(H, 30000)`,
		`{<<"102400\n">>,normal}`)
	e.expect(`{error, {e2big, M1}} = open(<<"true">>, [], [{env, [{<<"BIG">>, binary:copy(<<"b">>, 200000)}]}]), is_binary(M1) andalso byte_size(M1) > 10`, `true`)
	e.expect(`{error, {e2big, _}} = open(<<"true">>, [], [{env, [{integer_to_binary(I), binary:copy(<<"v">>, 100000)} || I <- lists:seq(1, 30)]}]), ok`, `ok`)
	if kids := descendantsOf(ps.cmd.Process.Pid)[1:]; len(kids) > 0 {
		t.Errorf("processes started by the refused opens: %s", describe(kids))
	}
	// Port mode: within the limits the whole value arrives.
	p := startPort(t, "--packet", "--env", "BIG="+strings.Repeat("b", 102400), "--", "sh", "-c", `printf %s "$BIG" | wc -c`)
	p.started()
	if o := p.collect(true, 5*time.Second); string(o.stdout) != "102400\n" {
		t.Errorf("port mode: child saw %q", o.stdout)
	}
}

// TestReliabilityUnknownUsersAndGroups: node mode refuses unknown users and
// groups with baduser and badgroup, and starts nothing. (Port mode:
// TestModesSpawnErrors.)
func TestReliabilityUnknownUsersAndGroups(t *testing.T) {
	ps, e := nodePair(t)
	e.expect(`{error, {baduser, _}} = open(<<"true">>, [], [{uid, <<"no_such_user_xyz">>}]), ok`, `ok`)
	e.expect(`{error, {badgroup, _}} = open(<<"true">>, [], [{gid, <<"no_such_group_xyz">>}]), ok`, `ok`)
	e.expect(`{error, {baduser, _}} = open(<<"true">>, [], [{uid, "no_such_user_xyz"}]), ok`, `ok`)
	if kids := descendantsOf(ps.cmd.Process.Pid)[1:]; len(kids) > 0 {
		t.Errorf("processes started by the refused opens: %s", describe(kids))
	}
}

// TestReliabilityUidZeroFromNonRoot: a ps_port running as nobody asked to
// run a child as uid 0 (or gid 0, or root by name) fails with eperm and a
// message that says why, in both modes; nothing runs. Asked to run it as
// nobody, itself, it does.
func TestReliabilityUidZeroFromNonRoot(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("needs root to become nobody (CI runs as root)")
	}
	bin := publicBinary(t)
	asNobody := func(args ...string) (etf.Term, int) {
		t.Helper()
		cmd := exec.Command("setpriv", append([]string{"--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "--", bin, "--packet"}, args...)...)
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.Output()
		code := exitCode(err)
		if len(out) < 4 || len(out) < 4+int(binary.BigEndian.Uint32(out)) {
			t.Fatalf("%v: no frame (exit %d)", args, code)
		}
		f, derr := etf.Decode(out[4 : 4+binary.BigEndian.Uint32(out)])
		if derr != nil {
			t.Fatalf("%v: %v", args, derr)
		}
		return f, code
	}
	t.Run("port", func(t *testing.T) {
		for _, args := range [][]string{{"--uid", "0"}, {"--uid", "root"}, {"--gid", "0"}} {
			f, code := asNobody(append(args, "--", "id")...)
			tu, ok := etf.MatchTuple(f, "spawn_error", 3)
			if !ok || tu[1] != atom("eperm") || code != 3 || !strings.Contains(string(tu[2].([]byte)), "only root can") {
				t.Errorf("%v as nobody: want {spawn_error, eperm, \"...only root can...\"} and exit 3, got %v, exit %d", args, f, code)
				continue
			}
			t.Logf("%v as nobody: %s", args, tu[2])
		}
		for _, args := range [][]string{{"--uid", "nobody"}, {"--uid", "65534", "--gid", "nogroup"}} {
			if f, _ := asNobody(append(args, "--", "id", "-u")...); !isStarted(f) {
				t.Errorf("%v as nobody: %v", args, f)
			}
		}
	})
	t.Run("node", func(t *testing.T) {
		tag := relTag()
		t.Cleanup(func() { relKillTagged(tag) })
		cookie := randomCookie()
		ps := startNode(t, nodeOpts{tag: tag, cookie: cookie, asUser: "nobody"})
		e := startErlNode(t, cookie, ps.name, erlOpts{reliability: true})
		e.expect(`{ok, Me} = open(<<"id">>, [<<"-u">>]), reliability_driver:bytes_of(Me, 30000)`, `{<<"65534\n">>,normal}`)
		e.expect(`{ok, Me2} = open(<<"id">>, [<<"-u">>], [{uid, <<"nobody">>}]), reliability_driver:bytes_of(Me2, 30000)`, `{<<"65534\n">>,normal}`)
		for _, opt := range []string{`{uid, 0}`, `{uid, <<"root">>}`, `{gid, 0}`} {
			got := e.eval(fmt.Sprintf(`open(<<"id">>, [], [%s])`, opt))
			if !strings.HasPrefix(got, "{error,{eperm,<<") || !strings.Contains(got, "only root can") {
				t.Errorf("%s from a node running as nobody: %s", opt, got)
			}
		}
		if live := relTaggedExcept(tag, ps.pid()); len(live) > 0 {
			t.Errorf("processes left: %s", describe(live))
		}
	})
}

// TestReliabilityCookieNeverShown: the cookie, from a file or from
// PS_PORT_COOKIE, appears in no process's command line, in no log line of
// ps_port (also not when a peer with another cookie is refused), and not
// in the environment of the children.
func TestReliabilityCookieNeverShown(t *testing.T) {
	for _, from := range []string{"file", "env"} {
		t.Run(from, func(t *testing.T) {
			tag := relTag()
			t.Cleanup(func() { relKillTagged(tag) })
			cookie := randomCookie()
			ps := startNode(t, nodeOpts{tag: tag, cookie: cookie, cookieInEnv: from == "env"})
			home := t.TempDir()
			os.WriteFile(filepath.Join(home, ".erlang.cookie"), []byte(cookie), 0o400)
			e := startErlNode(t, "", ps.name, erlOpts{reliability: true, env: []string{"HOME=" + home}})
			e.expect(`{ok, P} = open(<<"sh">>, [<<"-c">>, <<"env; exec cat">>]), receive {P, {data, Env}} -> is_binary(Env) after 30000 -> timeout end`, `true`)
			env := e.eval(`Env`)
			wrong := startErlNode(t, randomCookie(), ps.name, erlOpts{reliability: true})
			wrong.expect(`catch gen_server:call({proton_stream, ps_node()}, what, 3000), ok`, `ok`)
			psOut, err := exec.Command("ps", "-eo", "pid,args").Output()
			if err != nil {
				t.Fatal(err)
			}
			for _, leak := range []struct{ where, text string }{
				{"ps -eo pid,args", string(psOut)},
				{"ps_port's log", ps.stderr.String()},
				{"the child's environment", env},
				{"/proc/PID/cmdline of ps_port", relCmdline(ps.pid())},
			} {
				if strings.Contains(leak.text, cookie) {
					t.Errorf("the cookie shows in %s", leak.where)
				}
			}
			if !strings.Contains(env, relTagEnv+"="+tag) || strings.Contains(env, "PS_PORT_COOKIE") {
				t.Errorf("child environment: want the tag and no PS_PORT_COOKIE:\n%s", env)
			}
			e.expect(`P ! {self(), close}, reliability_driver:bytes_of(P, 30000)`, `{<<>>,normal}`)
		})
	}
}

func isStarted(f etf.Term) bool {
	_, ok := etf.MatchTuple(f, "started", 2)
	return ok
}

func relCmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
}

// TestReliabilityNodeMalformedRequests: requests a ps_port node must
// refuse, each with a clear error and nothing started; plain messages and
// casts to its registered process are ignored, and the node keeps serving.
func TestReliabilityNodeMalformedRequests(t *testing.T) {
	r := startRelNode(t, true)
	tag, base, ps, e := r.tag, r.base, r.ps, r.e
	call := func(req string) string {
		return e.eval(fmt.Sprintf(`gen_server:call({proton_stream, ps_node()}, %s, 10000)`, req))
	}
	cases := []struct{ req, want string }{
		{`{open, <<"cat">>}`, `{error,{badcall,{open,<<"cat">>}}}`},
		{`{open, <<"cat">>, [], [], self(), extra}`, `{error,{badcall,`},
		{`{open, 42, [], [], self()}`, `{error,{badarg,command,<<`},
		{`{open, <<>>, [], [], self()}`, `{error,{badarg,command,<<`},
		{`{open, <<"ca", 0, "t">>, [], [], self()}`, `{error,{badarg,command,<<`},
		{`{open, <<"cat">>, [<<"a", 0>>], [], self()}`, `{error,{badarg,args,<<`},
		{`{open, <<"cat">>, [], not_opts, self()}`, `{error,{badarg,opts,<<`},
		{`{open, <<"cat">>, [], [{cd, <<"/tm", 0, "p">>}], self()}`, `{error,{badarg,cd,<<`},
		{`{open, <<"cat">>, [], [{cd, <<"/tmp">>}, {cd, <<"/tmp">>}], self()}`, `{error,{badarg,cd,<<`},
		{`{open, <<"cat">>, [], [{env, [{<<"A=B">>, <<"1">>}]}], self()}`, `{error,{badarg,env,<<`},
		{`{open, <<"cat">>, [], [{env, [{<<"A">>, <<"x", 0, "y">>}]}], self()}`, `{error,{badarg,env,<<`},
		{`{open, <<"cat">>, [], [{env, lists:foldl(fun(_, A) -> [A] end, [], lists:seq(1, 100000))}], self()}`, `{error,{badarg,env,<<`},
		{`{open, <<"cat">>, [], [{arg0, <<"a", 0>>}], self()}`, `{error,{badarg,arg0,<<`},
		{`{open, <<"cat">>, [], [{delay_to_sigkill, -1}], self()}`, `{error,{badarg,delay_to_sigkill,<<`},
		{`{open, <<"cat">>, [], [{delay_to_sigkill, 600001}], self()}`, `{error,{badarg,delay_to_sigkill,<<`},
		{`{open, <<"cat">>, [], [{stdin_limit, 0}], self()}`, `{error,{badarg,stdin_limit,<<`},
		{`{open, <<"cat">>, [], [{stdio_window, 67108865}], self()}`, `{error,{badarg,stdio_window,<<`},
		{`{open, <<"cat">>, [], [{uid, -1}], self()}`, `{error,{badarg,uid,<<`},
		{`{open, <<"cat">>, [], [{flow, bogus}], self()}`, `{error,{badarg,flow,<<`},
		{`{open, <<"cat">>, [], [{cgroup_controllers, [<<"memory">>]}, {cgroup_path, <<"../x">>}], self()}`, `{error,{badarg,cgroup_path,<<`},
		{`{open, <<"cat">>, [], [{cgroup_controllers, [<<"memory">>]}, {cgroup_path, <<"/abs">>}], self()}`, `{error,{badarg,cgroup_path,<<`},
		{`{open, <<"cat">>, [], [{cgroup_controllers, [<<"memory">>]}, {cgroup_path, <<"a">>}, {cgroup_base, <<"b">>}], self()}`, `{error,{badarg,`},
		{`{open, <<"cat">>, [], [{cgroup_controllers, [<<"memory">>]}, {cgroup_sets, [{<<"cpu">>, <<"cpu.shares">>, 1}]}], self()}`, `{error,{badarg,cgroup_sets,<<`},
		{`{open, <<"cat">>, [], [{cgroup_controllers, [<<"no_such_controller">>]}], self()}`, `{error,{badcgroup,<<`},
		{`{open, <<"cat">>, [], [], not_a_pid}`, `{error,{badarg,owner,<<`},
		{`{open, binary:copy(<<"x">>, 10000000), [], [], self()}`, `{error,{`},
	}
	for _, c := range cases {
		got := call(c.req)
		short := c.req
		if len(short) > 90 {
			short = short[:90] + "..."
		}
		if !strings.HasPrefix(got, c.want) {
			t.Errorf("%s:\n got %.300s\nwant %s...", short, got, c.want)
		}
	}
	// Not calls: ignored, and the node goes on.
	e.eval(`{proton_stream, ps_node()} ! hello, {proton_stream, ps_node()} ! {'$gen_call', not_a_from, x}, gen_server:cast({proton_stream, ps_node()}, {open, <<"cat">>, [], [], self()}), timer:sleep(200)`)
	if kids := relTaggedExcept(tag, ps.pid()); len(kids) > 0 {
		t.Errorf("refused requests started processes: %s", describe(kids))
	}
	if left := relGroupsLeft(base); len(left) > 0 {
		t.Errorf("refused requests left cgroups: %v", left)
	}
	e.expect(`{ok, Ok} = open(<<"echo">>, [<<"fine">>]), reliability_driver:bytes_of(Ok, 30000)`, `{<<"fine\n">>,normal}`)
	// A leniency, not a refusal: ergo decodes an improper list with its
	// tail as the last element, so [<<"a">> | <<"b">>] arrives as the
	// arguments a and b (docs/reliability.md, "Known limits").
	e.expect(`{ok, Imp} = open(<<"echo">>, [<<"a">> | <<"b">>]), reliability_driver:bytes_of(Imp, 30000)`, `{<<"a b\n">>,normal}`)
	t.Logf("%d malformed requests refused, nothing started; the node still serves", len(cases))
}

// TestReliabilityNodeNonOwnerIgnored: another process (on the owner's node
// and on a third node) sends commands, close, eof, signals and connect to
// a child it does not own: all are ignored; the child and its owner go on.
func TestReliabilityNodeNonOwnerIgnored(t *testing.T) {
	r := startRelNode(t, false)
	ps, e := r.ps, r.e
	osPid := e.evalInt(`{ok, P} = open(<<"cat">>, []), persistent_term:put(rel_child, P), os_pid(P)`)
	intrude := `fun() -> [P ! {self(), M} || M <- [{command, <<"intruder\n">>}, close, eof, {signal, 9}, {connect, self()}, {ack, 100}]], timer:sleep(300), flush() end`
	e.expect(fmt.Sprintf(`Self = self(), spawn(fun() -> Self ! {intruder, (%s)()} end), receive {intruder, Got} -> Got after 30000 -> timeout end`, intrude), `[]`)
	// A process on a third node, with its own connection to ps_port.
	other := startErlNode(t, ps.cookie, ps.name, erlOpts{reliability: true})
	other.expect(fmt.Sprintf(`P = rpc:call('%s', persistent_term, get, [rel_child]), node(P) =:= ps_node()`, e.name), `true`)
	other.expect(fmt.Sprintf(`(%s)()`, intrude), `[]`)
	if !alive(osPid) {
		t.Fatal("a non-owner's close or signal reached the child")
	}
	e.expect(`P ! {self(), {command, <<"owner\n">>}}, receive {P, {data, D}} -> D after 30000 -> timeout end`, `<<"owner\n">>`)
	e.expect(`P ! {self(), close}, collect(P)`, `{<<>>,<<>>,[closed],normal}`)
	if n := strings.Count(ps.stderr.String(), "ignor"); n == 0 {
		t.Logf("ps_port logged nothing about the ignored messages:\n%s", ps.stderr.String())
	}
}

// TestReliabilityNodeMaxChildrenUnderLoad: 60 opens at once against
// --max-children 10: exactly 10 start, 50 are refused with
// {too_many_children, 10} and start nothing; once those 10 are closed,
// opens succeed again.
func TestReliabilityNodeMaxChildrenUnderLoad(t *testing.T) {
	r := startRelNode(t, false, "--allow-any", "--max-children", "10")
	tag, ps, e := r.tag, r.ps, r.e
	e.expect(`Self = self(), Os = [spawn(fun() -> Self ! {res, open(<<"sleep">>, [<<"100">>])}, receive stop -> ok end end) || _ <- lists:seq(1, 60)], Rs = [receive {res, R} -> R after 30000 -> timeout end || _ <- lists:seq(1, 60)], Oks = [C || {ok, C} <- Rs], {length(Oks), length([x || {error, {too_many_children, 10}} <- Rs])}`,
		`{10,50}`)
	// The 10 are seen running (polled: a loaded machine may be slow to show
	// them); a refused open that started something would keep it above 10.
	var kids []int
	waitFor(t, 5*time.Second, func() string {
		return fmt.Sprintf("%d children running, want 10: %s", len(kids), describe(kids))
	}, func() bool {
		kids = relTaggedExcept(tag, ps.pid())
		return len(kids) == 10
	})
	e.expect(`open(<<"true">>, [])`, `{error,{too_many_children,10}}`)
	// The owners stop: the node takes their children down.
	e.eval(`[O ! stop || O <- Os]`)
	relWaitUntagged(t, tag, 5*time.Second, ps.pid())
	e.expect(`{ok, Again} = open(<<"echo">>, [<<"again">>]), reliability_driver:bytes_of(Again, 30000)`, `{<<"again\n">>,normal}`)
}
