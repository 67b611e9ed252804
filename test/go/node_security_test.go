package blackbox

// Node mode's security boundary (issue 16, docs/node.md "Security model"):
// a peer that holds the cookie runs only what --allow allows, with only the
// environment --allow-env allows, as only the users --allow-uid/--allow-gid
// allow, and never learns the cookie from inside a child. Each test here is
// one bypass found by probing as such a peer.

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// realPath is the absolute path of the program name with every symlink
// resolved.
func realPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatal(err)
	}
	if p, err = filepath.EvalSymlinks(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeEvil writes an executable script that prints EVIL at path.
func writeEvil(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!/bin/sh\necho EVIL\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// A program under /proc/self/... names ps_port's own cwd (or fds) when the
// node resolves it and the child's when the child does: such paths, as the
// program or in PATH, are refused, and nothing runs.
func TestNodeSecProcSelfCwdRefused(t *testing.T) {
	echo := realPath(t, "echo")
	dir := t.TempDir()
	writeEvil(t, dir+echo) // DIR/usr/bin/echo
	cookie := randomCookie()
	ps := startNode(t, nodeOpts{cookie: cookie, flags: []string{"--allow", echo}, setup: func(cmd *exec.Cmd) { cmd.Dir = "/" }})
	e := startErl(t, cookie, ps.name)
	for i, c := range []struct{ cmd, opts, flag string }{
		{"/proc/self/cwd" + echo, fmt.Sprintf(`[{cd, %s}]`, erlBin(dir)), "command"},
		{"/proc/" + "thread-self/cwd" + echo, fmt.Sprintf(`[{cd, %s}]`, erlBin(dir)), "command"},
		{"echo", fmt.Sprintf(`[{cd, %s}, {env, [{"PATH", "/proc/self/cwd%s"}]}]`, erlBin(dir), filepath.Dir(echo)), "env"},
		{"echo", fmt.Sprintf(`[{cd, %s}, {env, [{"PATH", "/tmp:/proc/1/root%s"}]}]`, erlBin(dir), filepath.Dir(echo)), "env"},
	} {
		got := e.eval(fmt.Sprintf(`case open(%s, [<<"good">>], %s) of {ok, P%d} -> collect(P%d); Err%d -> Err%d end`, erlBin(c.cmd), c.opts, i, i, i, i))
		if strings.Contains(got, "EVIL") {
			t.Fatalf("open(%q, %s) ran the program in the child's cwd: %s", c.cmd, c.opts, got)
		}
		want := fmt.Sprintf("{error,{badarg,%s,<<", c.flag)
		if !strings.HasPrefix(got, want) || !strings.Contains(got, "/proc") {
			t.Fatalf("open(%q, %s) = %s; want %s\"... /proc ...\">>}}", c.cmd, c.opts, got, want)
		}
	}
	// The real path still runs, with or without cd.
	e.expect(fmt.Sprintf(`{ok, P} = open(%s, [<<"good">>], [{cd, %s}]), collect(P)`, erlBin(echo), erlBin(dir)),
		`{<<"good\n">>,<<>>,[],normal}`)
}

// A symlink that a swapper exchanges, in a loop, between an allowed program
// and a forbidden one: every open either runs the allowed one or is
// refused, never runs the other (the node execs the very file it checked).
func TestNodeSecSwapRaceRunsOnlyWhatWasChecked(t *testing.T) {
	echo := realPath(t, "echo")
	dir := t.TempDir()
	evil := filepath.Join(dir, "evil")
	writeEvil(t, evil)
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	if err := os.Symlink(echo, a); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(evil, b); err != nil {
		t.Fatal(err)
	}
	_, e := nodePair(t, "--allow", echo)
	var swaps atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
				t.Errorf("renameat2(RENAME_EXCHANGE): %v", err)
				return
			}
			swaps.Add(1)
		}
	}()
	const opens = 400
	got := e.evalTimeout(fmt.Sprintf(`
		Loop = fun L(0, Acc) -> Acc;
		           L(N, {Ok, Evil, Refused, Other}) ->
		               case open(%s, [<<"good">>]) of
		                   {ok, P} ->
		                       case collect(P) of
		                           {<<"good\n">>, _, _, normal} -> L(N - 1, {Ok + 1, Evil, Refused, Other});
		                           {<<"EVIL\n">>, _, _, _} -> L(N - 1, {Ok, Evil + 1, Refused, Other});
		                           R -> L(N - 1, {Ok, Evil, Refused, [R | Other]})
		                       end;
		                   {error, {not_allowed, _}} -> L(N - 1, {Ok, Evil, Refused + 1, Other});
		                   R -> L(N - 1, {Ok, Evil, Refused, [R | Other]})
		               end
		       end,
		{Ok, Evil, Refused, Other} = Loop(%d, {0, 0, 0, []}),
		{Ok, Evil, Refused, lists:sublist(Other, 3)}`, erlBin(a), opens), 5*time.Minute)
	close(stop)
	wg.Wait()
	var ok, evilRuns, refused int
	var other string
	if _, err := fmt.Sscanf(strings.SplitN(got, "[", 2)[0], "{%d,%d,%d,", &ok, &evilRuns, &refused); err != nil {
		t.Fatalf("result %s: %v", got, err)
	}
	other = "[" + strings.SplitN(got, "[", 2)[1]
	t.Logf("%d opens during %d swaps: %d ran %s, %d refused, %d ran %s; other results: %s",
		opens, swaps.Load(), ok, echo, refused, evilRuns, evil, other)
	if evilRuns != 0 {
		t.Fatalf("%d of %d opens ran the swapped-in program %s", evilRuns, opens, evil)
	}
	if ok+refused != opens {
		t.Fatalf("only %d of %d opens ran echo or were refused: %s", ok+refused, opens, got)
	}
	if ok == 0 || refused == 0 {
		t.Fatalf("the swapper did not race the opens (%d ran, %d refused): the test proves nothing", ok, refused)
	}
}

// The dynamic loader's variables are refused unless --allow-env allows them.
func TestNodeSecLoaderEnvRefused(t *testing.T) {
	dir := t.TempDir()
	_, e := nodePair(t, "--allow", realPath(t, "echo"), "--allow", "/usr/bin/*", "--allow", "/bin/*")
	for i, kv := range [][2]string{
		{"LD_PRELOAD", "/nonexistent/evil.so"},
		{"LD_AUDIT", "/nonexistent/evil.so"},
		{"LD_LIBRARY_PATH", dir},
		{"LD_DEBUG_OUTPUT", dir + "/out"},
		{"LD_whatever", "x"},
		{"GCONV_PATH", dir},
		{"LOCPATH", dir},
		{"MALLOC_TRACE", dir + "/trace"},
		{"MALLOC_ARENA_MAX", "1"},
		{"HOSTALIASES", dir + "/hosts"},
		{"RES_OPTIONS", "debug"},
		{"LOCALDOMAIN", "evil"},
		{"NLSPATH", dir},
		{"TZDIR", dir},
		{"GLIBC_TUNABLES", "glibc.malloc.check=3"},
		{"LC_ALL", dir + "/locale"},
		{"LANGUAGE", "../../../" + dir},
	} {
		got := e.eval(fmt.Sprintf(`case open(<<"echo">>, [<<"hi">>], [{env, [{%q, %q}]}]) of {ok, P%d} -> collect(P%d); Err%d -> Err%d end`, kv[0], kv[1], i, i, i, i))
		if !strings.HasPrefix(got, "{error,{badarg,env,<<") || !strings.Contains(got, kv[0]) || !strings.Contains(got, "--allow-env") {
			t.Errorf("env %s=%s: %s; want {error,{badarg,env,<<\"... %s ... --allow-env ...\">>}}", kv[0], kv[1], got, kv[0])
		}
	}
	// Ordinary variables, and removing a loader variable, are fine.
	e.expect(`{ok, P} = open(<<"sh">>, [<<"-c">>, <<"echo $FOO$LANG">>], [{env, [{"FOO", "foo"}, {"LANG", "C"}, {"LD_PRELOAD", false}]}]), collect(P)`,
		`{<<"fooC\n">>,<<>>,[],normal}`)
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("the loader wrote into %s: %v", dir, ents)
	}
}

// --allow-env (repeatable, globs) lets the named loader variables through.
func TestNodeSecAllowEnvWidens(t *testing.T) {
	dir := t.TempDir()
	_, e := nodePair(t, "--allow", "/usr/bin/*", "--allow", "/bin/*", "--allow-env", "LD_DEBUG*", "--allow-env", "LD_PRELOAD")
	got := e.eval(`{ok, P} = open(<<"echo">>, [<<"hi">>], [{env, [{"LD_PRELOAD", "/nonexistent/x.so"}]}]), collect(P)`)
	if !strings.Contains(got, "ld.so") || !strings.Contains(got, `<<"hi\n">>`) {
		t.Fatalf("LD_PRELOAD with --allow-env LD_PRELOAD: %s; want echo's output and ld.so's complaint", got)
	}
	e.expect(fmt.Sprintf(`{ok, P2} = open(<<"echo">>, [<<"hi">>], [{env, [{"LD_DEBUG", "statistics"}, {"LD_DEBUG_OUTPUT", %q}]}]), element(4, collect(P2))`, dir+"/out"), "normal")
	if ents, _ := os.ReadDir(dir); len(ents) == 0 {
		t.Fatalf("LD_DEBUG_OUTPUT allowed by --allow-env 'LD_DEBUG*' wrote nothing into %s", dir)
	}
	e.expect(`{error, {badarg, env, M}} = open(<<"echo">>, [], [{env, [{"LD_AUDIT", "x"}]}]), binary:match(M, <<"--allow-env LD_AUDIT">>) =/= nomatch`, "true")
	out, err := exec.Command(psPortBinary(t), "node", "--name", uniqueName("ps"), "--cookie-file", writeCookie(t, "x"),
		"--allow-any", "--allow-env", "LD_[").CombinedOutput()
	if code := exitCode(err); code != 2 || !strings.Contains(string(out), "--allow-env") {
		t.Fatalf("a bad --allow-env pattern: exit %d, %s", code, out)
	}
}

// A child running as the node's own user cannot read the cookie from the
// node's environment or memory.
func TestNodeSecCookieNotReadableByChildren(t *testing.T) {
	cookie := randomCookie()
	tag := relTag()
	ps := startNode(t, nodeOpts{tag: tag, cookie: cookie, cookieInEnv: true, asUser: "nobody",
		flags: []string{"--allow", "/usr/bin/*", "--allow", "/bin/*"}})
	e := startErl(t, cookie, ps.name)
	// The child's parent is ps_port; $PPID names it.
	got := e.eval(`{ok, P} = open(<<"sh">>, [<<"-c">>, <<"id -u; tr '\\0' '\\n' < /proc/$PPID/environ; tr '\\0' '\\n' < /proc/$PPID/cmdline | head -1">>]), collect(P)`)
	if strings.Contains(got, cookie) {
		t.Fatalf("a child of the node read the cookie: %s", got)
	}
	u, _ := user.Lookup("nobody")
	if !strings.HasPrefix(got, "{<<\""+u.Uid+"\\n") {
		t.Fatalf("the child did not run as nobody (the node's user): %s", got)
	}
	if !strings.Contains(got, "ps_port") {
		t.Fatalf("the child could not see the node at all (want its cmdline readable, the environ not): %s", got)
	}
	if !strings.Contains(got, "/environ") || !strings.Contains(got, "ermission denied") {
		t.Fatalf("want the node's environ refused (Permission denied): %s", got)
	}
	// The node still works as usual, non-dumpable and as nobody: it reads
	// its own /proc/self/fd to check programs, runs scripts by descriptor,
	// finds children's trees and kills them.
	dir, err := os.MkdirTemp("", "ps_port_sec_script")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	script := filepath.Join(dir, "hello.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho hello $(cat /proc/$$/comm)\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ps2 := startNode(t, nodeOpts{tag: relTag(), cookie: cookie, asUser: "nobody",
		flags: []string{"--allow", "/usr/bin/*", "--allow", "/bin/*", "--allow", dir + "/*"}})
	e2 := startErl(t, cookie, ps2.name)
	e2.expect(fmt.Sprintf(`{ok, S} = open(<<%q>>, []), collect(S)`, script), `{<<"hello hello.sh\n">>,<<>>,[],normal}`)
	e2.expect(`{ok, S2} = open(<<"cat">>, [<<"/proc/self/comm">>]), collect(S2)`, `{<<"cat\n">>,<<>>,[],normal}`)
	e.expect(`{ok, Q} = open(<<"sh">>, [<<"-c">>, <<"sleep 100 & echo started; wait">>]), receive {Q, {data, <<"started\n">>}} -> ok after 10000 -> timeout end`, "ok")
	e.expect(`Q ! {self(), close}, receive {'EXIT', Q, R} -> R after 10000 -> timeout end`, "normal")
	if live := relTaggedExcept(tag, ps.pid()); len(live) != 0 {
		t.Fatalf("left behind: %v", live)
	}
}

// A uid and gid are checked against --allow-uid/--allow-gid (default: the
// node's own), and a numeric uid without a passwd entry needs a gid.
func TestNodeSecCredentials(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("needs root (CI runs as root)")
	}
	const free = 54321 // no passwd entry, no group entry
	if _, err := user.LookupId(strconv.Itoa(free)); err == nil {
		t.Fatalf("uid %d has a passwd entry here; pick another", free)
	}
	t.Run("default: only the node's own user", func(t *testing.T) {
		_, e := nodePair(t, "--allow", "/usr/bin/*", "--allow", "/bin/*")
		e.expect(`{ok, P} = open(<<"id">>, [<<"-u">>]), collect(P)`, `{<<"0\n">>,<<>>,[],normal}`)
		e.expect(`{ok, P0} = open(<<"id">>, [<<"-u">>], [{uid, 0}, {gid, <<"root">>}]), collect(P0)`, `{<<"0\n">>,<<>>,[],normal}`)
		for _, opt := range []string{`{uid, <<"nobody">>}`, fmt.Sprintf(`{uid, %d}`, free)} {
			got := e.eval(fmt.Sprintf(`open(<<"id">>, [], [%s])`, opt))
			if !strings.HasPrefix(got, "{error,{badarg,uid,<<") || !strings.Contains(got, "--allow-uid") {
				t.Errorf("%s: %s; want {error,{badarg,uid,<<\"... --allow-uid ...\">>}}", opt, got)
			}
		}
		got := e.eval(`open(<<"id">>, [], [{gid, <<"nogroup">>}])`)
		if !strings.HasPrefix(got, "{error,{badarg,gid,<<") || !strings.Contains(got, "--allow-gid") {
			t.Errorf("gid nogroup: %s; want {error,{badarg,gid,<<\"... --allow-gid ...\">>}}", got)
		}
	})
	t.Run("allowed uid without passwd entry", func(t *testing.T) {
		_, e := nodePair(t, "--allow", "/usr/bin/*", "--allow", "/bin/*",
			"--allow-uid", strconv.Itoa(free), "--allow-uid", "nobody", "--allow-gid", strconv.Itoa(free))
		got := e.eval(fmt.Sprintf(`case open(<<"id">>, [<<"-g">>], [{uid, %d}]) of {ok, P} -> collect(P); E -> E end`, free))
		if !strings.HasPrefix(got, "{error,{baduser,<<") || !strings.Contains(got, "gid") {
			t.Fatalf("uid %d (no passwd entry) without gid: %s; want {error,{baduser,<<\"... gid ...\">>}}", free, got)
		}
		e.expect(fmt.Sprintf(`{ok, P} = open(<<"sh">>, [<<"-c">>, <<"id -u; id -g">>], [{uid, %d}, {gid, %d}]), collect(P)`, free, free),
			fmt.Sprintf(`{<<"%d\n%d\n">>,<<>>,[],normal}`, free, free))
		// An allowed user runs with its own primary group.
		nobody, err := user.Lookup("nobody")
		if err != nil {
			t.Fatal(err)
		}
		e.expect(`{ok, P2} = open(<<"sh">>, [<<"-c">>, <<"id -u; id -g">>], [{uid, <<"nobody">>}]), collect(P2)`,
			fmt.Sprintf(`{<<"%s\n%s\n">>,<<>>,[],normal}`, nobody.Uid, nobody.Gid))
	})
}

// An owner cannot put its child's cgroup inside another owner's live group,
// nor around it.
func TestNodeSecCgroupNotInsideAnothersGroup(t *testing.T) {
	base := relCgroupBase(t)
	_, e := nodePair(t, "--allow", "/usr/bin/*", "--allow", "/bin/*", "--cgroup-base", base)
	e.eval(`Other = spawn(fun() -> receive stop -> ok end end), put(other, Other), ok`)
	e.expect(`{ok, A} = open_as(<<"sleep">>, [<<"100">>], [{cgroup_controllers, [<<"pids">>]}, {cgroup_path, <<"owner1/job">>}], get(other)), put(a, A), ok`, "ok")
	for _, p := range []string{"owner1/job", "owner1/job/inner", "owner1"} {
		got := e.eval(fmt.Sprintf(`open(<<"true">>, [], [{cgroup_controllers, [<<"pids">>]}, {cgroup_path, <<%q>>}])`, p))
		if !strings.HasPrefix(got, "{error,{badcgroup,<<") || !strings.Contains(got, "another owner") {
			t.Errorf("cgroup_path %s next to another owner's live owner1/job: %s; want {error,{badcgroup,<<\"... another owner ...\">>}}", p, got)
		}
	}
	// Beside it is fine; so is inside it for the same owner.
	e.expect(`{ok, B} = open(<<"true">>, [], [{cgroup_controllers, [<<"pids">>]}, {cgroup_path, <<"owner1/other">>}]), element(4, collect(B))`, "normal")
	e.expect(`{ok, C} = open_as(<<"true">>, [], [{cgroup_controllers, [<<"pids">>]}, {cgroup_path, <<"owner1/job/inner">>}], get(other)), ok`, "ok")
	// Once the group is gone, its path is free.
	// (The group goes once its child's tree is gone: poll, a loaded machine
	// may take more than a second.)
	e.expect(`A = get(a), exit(get(other), kill), receive {'EXIT', A, _} -> ok after 0 -> ok end, `+
		`Free = fun F(N) -> case open(<<"true">>, [], [{cgroup_controllers, [<<"pids">>]}, {cgroup_path, <<"owner1/job">>}]) of `+
		`{ok, D} -> element(4, collect(D)); _ when N > 0 -> timer:sleep(100), F(N - 1); Err -> Err end end, Free(150)`, "normal")
}

// A request larger than --max-request is refused with a clear error to the
// requester, costs the node little memory, and leaves the connection up.
func TestNodeSecLargeRequestRefused(t *testing.T) {
	ps, e := nodePair(t, "--allow", "/usr/bin/*", "--allow", "/bin/*")
	before := ps.rssKiB(t)
	got := e.evalTimeout(`open(<<"echo">>, [binary:copy(<<"a">>, 130000000)])`, 2*time.Minute)
	if !strings.HasPrefix(got, "{error,{too_large,<<") || !strings.Contains(got, "--max-request") {
		t.Fatalf("a 130 MB open: %s; want {error,{too_large,<<\"... --max-request ...\">>}}", got)
	}
	// A request whose terms decode to far more than its bytes (a list of
	// small integers: 2 bytes each on the wire) is weighed decoded.
	got = e.evalTimeout(`open(<<"echo">>, [lists:duplicate(4000000, $a)])`, 2*time.Minute)
	if !strings.HasPrefix(got, "{error,{too_large,<<") {
		t.Fatalf("an open with a 4M-element charlist: %s; want {error,{too_large,...}}", got)
	}
	// The owner of a child that sends it a command too large for the node
	// hears why.
	e.expect(`{ok, P} = open(<<"cat">>, []), P ! {self(), {command, binary:copy(<<"b">>, 40000000)}}, receive {P, {error, too_large, M}} -> binary:match(M, <<"--max-request">>) =/= nomatch after 60000 -> timeout end`, "true")
	e.expect(`P ! {self(), {command, <<"still here\n">>}}, receive {P, {data, D}} -> D after 10000 -> timeout end`, `<<"still here\n">>`)
	after := ps.rssKiB(t)
	t.Logf("ps_port RSS %d KiB before, %d KiB after the large requests", before, after)
	if after-before > 100<<10 {
		t.Fatalf("ps_port's RSS grew by %d KiB for requests it refused", after-before)
	}
	// Raised by the flag.
	_, e2 := nodePair(t, "--allow", "/usr/bin/*", "--allow", "/bin/*", "--max-request", "50000000")
	e2.expect(`{ok, Q} = open(<<"wc">>, [<<"-c">>], [{stdin_limit, 50000000}]), Q ! {self(), {command, binary:copy(<<"b">>, 40000000)}}, Q ! {self(), eof}, element(1, collect(Q, 60000))`, `<<"40000000\n">>`)
}

// A grandchild that drops the marker and leaves the session is still
// killed when no cgroup is used, and does not let an owner run more than
// --max-children.
func TestNodeSecUnmarkedEscapeeKilled(t *testing.T) {
	_, e := nodePair(t, "--allow", "/usr/bin/*", "--allow", "/bin/*", "--max-children", "1")
	// The child starts the escapee, says its pid, and exits when told.
	pid := e.evalInt(`{ok, P} = open(<<"sh">>, [<<"-c">>, <<"env -u PS_PORT_CHILD setsid sleep 1000 < /dev/null > /dev/null 2>&1 & echo $!; read x">>]), receive {P, {data, Out}} -> binary_to_integer(string:trim(Out)) after 10000 -> timeout end`)
	var b []byte
	var err error
	waitFor(t, 5*time.Second, func() string { return fmt.Sprintf("the escapee %d did not start: %q %v", pid, b, err) }, func() bool {
		b, err = os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		return err == nil && strings.HasPrefix(string(b), "sleep\x00")
	})
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid)); err != nil || strings.Contains(string(b), "PS_PORT_CHILD") {
		t.Fatalf("the escapee still carries the marker (%v): the test proves nothing", err)
	}
	e.expect(`P ! {self(), {command, <<"go\n">>}}, element(4, collect(P))`, "normal")
	waitGone(t, pid, 5*time.Second)
	e.expect(`{ok, Q} = open(<<"true">>, []), element(4, collect(Q))`, "normal")
}
