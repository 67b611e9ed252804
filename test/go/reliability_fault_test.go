package blackbox

// Faults: the BEAM, ps_port node or the distribution connection disappear
// while children run; children that ignore SIGTERM, fork bombs and memory
// hogs in cgroups. The promise (DESIGN.md, "Contracts"): every process a
// child started is gone shortly after, no cgroup directory is left, and
// the owner can tell what happened.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// erlArgLists renders [[arg, ...], ...] as an Erlang list of strings lists.
func erlArgLists(lists [][]string) string {
	var outer []string
	for _, l := range lists {
		var inner []string
		for _, a := range l {
			inner = append(inner, erlStr(a))
		}
		outer = append(outer, "["+strings.Join(inner, ",")+"]")
	}
	return "[" + strings.Join(outer, ",") + "]"
}

// The kinds of children the fault tests mix: each ignores SIGTERM or not,
// forks grandchildren or not, and lets one escape its session or not.
var relChildScripts = []string{
	`trap '' TERM; sleep 1000`,                                              // ignores SIGTERM
	`trap '' TERM; setsid sleep 1000 & sleep 1000 & wait`,                   // grandchildren, one in its own session
	`sleep 1000 & sleep 1000 & wait`,                                        // obedient, with grandchildren
	`trap '' TERM; (setsid sh -c 'trap "" TERM; sleep 1000' &); sleep 1000`, // a double-forked daemon that ignores SIGTERM
	`exec cat`, // a plain child
}

// relSnapshot waits until at least min processes carry tag and their
// number has stayed the same for 200 ms, and returns them.
func relSnapshot(t *testing.T, tag string, min int) []int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var prev []int
	stable := time.Time{}
	for {
		live, _ := relTagged(tag)
		if len(live) >= min && len(live) == len(prev) {
			if stable.IsZero() {
				stable = time.Now()
			} else if time.Since(stable) > 200*time.Millisecond {
				return live
			}
		} else {
			stable = time.Time{}
		}
		prev = live
		if time.Now().After(deadline) {
			t.Fatalf("only %d processes tagged %s after 20 s, want at least %d", len(live), tag, min)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReliabilityBEAMKilledWithFiftyPortChildren: a real BEAM opens 50
// ps_port ports (a fifth ignoring SIGTERM, some with grandchildren and
// double-forked daemons, half of them in memory+pids cgroups) and is
// SIGKILLed. Every ps_port, child and grandchild is gone within 1 s, and no
// cgroup directory is left. (The same through the Elixir shim:
// test/elixir/reliability_fault_test.exs.)
func TestReliabilityBEAMKilledWithFiftyPortChildren(t *testing.T) {
	tag := relTag()
	t.Cleanup(func() { relKillTagged(tag) })
	base := relCgroupBase(t)
	e := startErlNode(t, randomCookie(), "nonode@nohost", erlOpts{reliability: true})
	var lists [][]string
	for i := 0; i < 50; i++ {
		args := []string{"--packet", "--env", relTagEnv + "=" + tag}
		if i%2 == 0 {
			args = append(args, "-c", "memory", "-c", "pids", "-g", fmt.Sprintf("%s/c%d", base, i),
				"-s", "memory.limit_in_bytes=268435456", "-s", "pids.max=64")
		}
		args = append(args, "--", "sh", "-c", relChildScripts[i%len(relChildScripts)])
		lists = append(lists, args)
	}
	children := parseInts(t, e.eval(fmt.Sprintf(`reliability_driver:open_ports(%s, %s, [])`, erlStr(psPortBinary(t)), erlArgLists(lists))))
	if len(children) != 50 {
		t.Fatalf("%d children started, want 50", len(children))
	}
	tagged := relSnapshot(t, tag, 100)
	psPorts := descendantsOf(e.cmd.Process.Pid)[1:] // erl_child_setup, ps_ports and below
	all := append(append([]int{}, tagged...), psPorts...)
	if groups := relGroupDirsUnder("memory", base); groups != 25 {
		t.Fatalf("%d memory groups under %s, want 25", groups, base)
	}
	t.Logf("BEAM %d runs 50 ps_ports; %d processes in all (%d carrying the tag)", e.cmd.Process.Pid, len(all), len(tagged))

	start := time.Now()
	e.cmd.Process.Kill()
	waitAllGone(t, tagged, 3*time.Second)
	trees := time.Since(start)
	waitAllGone(t, psPorts, 3*time.Second)
	helpers := time.Since(start)
	relWaitGroupsGone(t, base, 3*time.Second)
	groups := time.Since(start)
	if live, _ := relTagged(tag); len(live) > 0 {
		t.Errorf("tagged processes still alive: %s", describe(live))
	}
	t.Logf("BEAM SIGKILLed: the children's %d processes gone after %v, the 50 ps_ports after %v, the cgroups after %v (delay_to_sigkill 500 ms)",
		len(tagged), trees, helpers, groups)
	if trees > time.Second {
		t.Errorf("the children's trees took %v, want at most 1 s", trees)
	}
	// ps_port exits, and removes its group, once the tree is gone; 50 of them
	// on 2 cores measured 0.85-0.9 s. The bound leaves room for a busy CI.
	if groups > 1500*time.Millisecond || helpers > 1500*time.Millisecond {
		t.Errorf("ps_ports gone after %v and cgroups after %v, want at most 1.5 s", helpers, groups)
	}
}

// nodeTree is the child the node-mode fault tests open: it ignores SIGTERM
// and has two grandchildren, one in its own session.
const nodeTree = `trap '' TERM; setsid sleep 1000 & sleep 1000 & wait`

// TestReliabilityNodeKilledChildrenDie: ps_port node is SIGKILLed while it
// runs children with grandchildren, half in cgroups. Its children die at
// once (parent-death signal) and the owners see their pids go down with
// reason noconnection. Grandchildren inside cgroups are killed, and their
// groups removed, when the next ps_port node under the same --cgroup-base
// makes its first group; a reconnecting owner opens children there.
// Grandchildren outside cgroups carry the dead node's marker and are killed
// by the next ps_port to start (procctl.Register).
func TestReliabilityNodeKilledChildrenDie(t *testing.T) {
	r := startRelNode(t, true)
	tag, base, ps, e := r.tag, r.base, r.ps, r.e
	var direct []int
	for i := 0; i < 6; i++ {
		opts := `[{delay_to_sigkill, 200}]`
		if i%2 == 1 {
			opts = `[{delay_to_sigkill, 200}, {cgroup_controllers, [<<"memory">>, <<"pids">>]}]`
		}
		direct = append(direct, e.evalInt(fmt.Sprintf(`{ok, K%d} = open(<<"sh">>, [<<"-c">>, %s], %s), W%d = reliability_driver:watch(K%d), os_pid(K%d)`,
			i, erlBin(nodeTree), opts, i, i, i)))
	}
	tagged := relSnapshot(t, tag, 18)
	var inGroups, outside []int
	for _, pid := range tagged {
		if pid == ps.pid() {
			continue
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if strings.Contains(string(b), ":memory:/"+base+"/") {
			inGroups = append(inGroups, pid)
		} else {
			outside = append(outside, pid)
		}
	}
	start := time.Now()
	ps.cmd.Process.Kill()
	took := waitAllGone(t, direct, time.Second)
	t.Logf("ps_port node SIGKILLed: its %d children gone after %v", len(direct), took)
	for i := 0; i < 6; i++ {
		e.expect(fmt.Sprintf(`element(1, reliability_driver:down_reason(W%d, 30000))`, i), `noconnection`)
	}
	var grandIn, grandOut []int
	for _, p := range inGroups {
		if alive(p) {
			grandIn = append(grandIn, p)
		}
	}
	for _, p := range outside {
		if alive(p) {
			grandOut = append(grandOut, p)
		}
	}
	// Any ps_port that starts and finds a dead one (another test's) reclaims
	// every abandoned group (procctl.Register, cgroup.ReclaimAbandoned), so
	// they may be gone already, or be reclaimed by it and not the next node.
	if len(relGroupsLeft(base)) == 0 {
		t.Logf("the killed node's groups were reclaimed already, by another ps_port")
	}

	// The next node under the same base reclaims the groups with its first one.
	ps2 := startNode(t, nodeOpts{tag: tag, cookie: ps.cookie, flags: []string{"--allow-any", "--cgroup-base", base}})
	e.eval(fmt.Sprintf(`persistent_term:put(ps_node, '%s')`, ps2.name))
	e.expect(`{ok, N1} = open(<<"sh">>, [<<"-c">>, <<"cat /proc/self/cgroup | grep -c memory:/">>], [{cgroup_controllers, [<<"memory">>]}]), reliability_driver:bytes_of(N1, 10000)`,
		`{<<"1\n">>,normal}`)
	reclaimed := time.Since(start)
	waitAllGone(t, grandIn, time.Second)
	// Those outside cgroups carry the dead node's marker: a ps_port that
	// starts after the kill (the next node, or any other) kills them.
	waitAllGone(t, grandOut, time.Second)
	relWaitGroupsGone(t, base, time.Second)
	if !strings.Contains(ps2.stderr.String(), "reclaimed") {
		t.Logf("the new node did not reclaim the groups (another ps_port did):\n%s", ps2.stderr.String())
	}
	e.expect(`{ok, N2} = open(<<"cat">>, []), N2 ! {self(), {command, <<"again\n">>}}, receive {N2, {data, D}} -> D after 30000 -> timeout end`, `<<"again\n">>`)
	e.expect(`N2 ! {self(), close}, reliability_driver:bytes_of(N2, 30000)`, `{<<>>,normal}`)
	t.Logf("%d grandchildren in cgroups and %d outside killed and groups removed by the next ps_port (%v after the kill)",
		len(grandIn), len(grandOut), reclaimed)
}

// psNodeConn finds the local port of ps_port's established distribution
// connection to the erl node (the only established TCP connection of
// ps_port besides epmd's).
func psNodeConns(t *testing.T, pid int) []string {
	t.Helper()
	out, err := exec.Command("ss", "-tnpH", "state", "established").CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v %s", err, out)
	}
	var ports []string
	re := regexp.MustCompile(`^\s*\d+\s+\d+\s+(\S+):(\d+)\s+(\S+):(\d+)\s.*pid=` + strconv.Itoa(pid) + `,`)
	for _, line := range strings.Split(string(out), "\n") {
		m := re.FindStringSubmatch(line)
		if m == nil || m[4] == "4369" {
			continue
		}
		ports = append(ports, m[2])
	}
	return ports
}

// TestReliabilityNodeConnectionCut: the distribution connection between
// the owners' node and ps_port node is cut while children run, by
// erlang:disconnect_node/1 and by destroying the TCP socket (ss -K, as a
// middlebox reset would). Every child tree is gone within delay_to_sigkill
// plus a little, each owner's monitor says noconnection, and the owner,
// reconnecting, opens new children.
func TestReliabilityNodeConnectionCut(t *testing.T) {
	for _, how := range []string{"disconnect_node", "ss -K"} {
		t.Run(strings.ReplaceAll(how, " ", "_"), func(t *testing.T) {
			r := startRelNode(t, false)
			tag, ps, e := r.tag, r.ps, r.e
			for i := 0; i < 4; i++ {
				e.eval(fmt.Sprintf(`{ok, K%d} = open(<<"sh">>, [<<"-c">>, %s], [{delay_to_sigkill, 200}]), W%d = reliability_driver:watch(K%d)`, i, erlBin(nodeTree), i, i))
			}
			e.eval(`[{_, OP, _}] = reliability_driver:owners(1, <<"exec cat">>, []), WO = reliability_driver:watch(OP)`)
			tagged := relSnapshot(t, tag, 13) // 4 x (sh + 2 sleeps), cat
			var children []int
			for _, p := range tagged {
				if p != ps.pid() {
					children = append(children, p)
				}
			}
			switch how {
			case "disconnect_node":
				e.expect(`erlang:disconnect_node(ps_node())`, `true`)
			case "ss -K":
				ports := psNodeConns(t, ps.pid())
				if len(ports) != 1 {
					t.Fatalf("ps_port's distribution connections: %v, want one", ports)
				}
				if out, err := exec.Command("ss", "-K", "-tn", "state", "established", "sport", "=", ":"+ports[0]).CombinedOutput(); err != nil {
					t.Fatalf("ss -K: %v %s", err, out)
				}
			}
			took := waitAllGone(t, children, 3*time.Second)
			t.Logf("%s: %d processes gone after %v (delay_to_sigkill 200 ms)", how, len(children), took)
			if took > 200*time.Millisecond+time.Second+testSlack() {
				t.Errorf("took %v, more than delay_to_sigkill + 1 s (+ slack)", took)
			}
			for _, w := range []string{"W0", "W1", "W2", "W3", "WO"} {
				e.expect(fmt.Sprintf(`element(1, reliability_driver:down_reason(%s, 30000))`, w), `noconnection`)
			}
			if !strings.Contains(ps.stderr.String(), "terminating") && !strings.Contains(ps.stderr.String(), "not connected") {
				t.Logf("ps_port node said:\n%s", ps.stderr.String())
			}
			// Reconnect: the next call sets the connection up again.
			e.expect(`{ok, R} = open(<<"cat">>, []), R ! {self(), {command, <<"back\n">>}}, receive {R, {data, D}} -> D after 30000 -> timeout end`, `<<"back\n">>`)
			e.expect(`R ! {self(), close}, reliability_driver:bytes_of(R, 30000)`, `{<<>>,normal}`)
		})
	}
}

// relForkBomb forks for ever (each child ignores SIGTERM); at pids.max the
// forks fail and bash goes on trying (dash would give up and exit).
const relForkBomb = `trap '' TERM; echo bombing; while :; do (trap '' TERM; exec sleep 1000) & done 2>/dev/null`

// TestReliabilityForkBombUnderPidsMax: in port mode and in node mode, a
// fork bomb in a pids cgroup stays at pids.max, and closing it kills every
// process and removes the group.
func TestReliabilityForkBombUnderPidsMax(t *testing.T) {
	const max = 40
	t.Run("port", func(t *testing.T) {
		tag := relTag()
		t.Cleanup(func() { relKillTagged(tag) })
		base := relCgroupBase(t)
		path := base + "/bomb"
		p := startPort(t, "--packet", "--env", relTagEnv+"="+tag, "-c", "pids", "-g", path, "-s", fmt.Sprintf("pids.max=%d", max),
			"--delay-to-sigkill", "100", "--", "bash", "-c", relForkBomb)
		p.started()
		relExpectBomb(t, tag, groupDir("pids", path), max)
		start := time.Now()
		p.send(atom("stop"))
		o := p.collect(true, 10*time.Second)
		if !equal(o.exit, signal(9)) {
			t.Errorf("exit %v, want {signal, 9} (the bomb ignores SIGTERM)", o.exit)
		}
		relWaitUntagged(t, tag, time.Second)
		relWaitGroupsGone(t, base, time.Second)
		t.Logf("port mode: bomb at pids.max=%d stopped; all gone and the group removed %v after :stop", max, time.Since(start))
		p.exitCode(5 * time.Second)
	})
	t.Run("node", func(t *testing.T) {
		r := startRelNode(t, true)
		tag, base, ps, e := r.tag, r.base, r.ps, r.e
		e.expect(fmt.Sprintf(`{ok, B} = open(<<"bash">>, [<<"-c">>, %s], [{delay_to_sigkill, 100}, {cgroup_controllers, [<<"pids">>]}, {cgroup_path, <<"bomb">>}, {cgroup_sets, [{<<"pids">>, <<"pids.max">>, %d}]}]), receive {B, {data, Bm}} -> Bm after 30000 -> timeout end`, erlBin(relForkBomb), max),
			`<<"bombing\n">>`)
		relExpectBomb(t, tag, groupDir("pids", base+"/bomb"), max)
		e.expect(`B ! {self(), close}, reliability_driver:bytes_of(B, 10000)`, `{<<>>,normal}`)
		// The exit message comes after the whole tree is gone.
		if live := relTaggedExcept(tag, ps.pid()); len(live) > 0 {
			t.Errorf("processes survived the close: %s", describe(live))
		}
		relWaitGroupsGone(t, base, time.Second)
	})
}

// relExpectBomb waits until the bomb's group is full and checks it never
// holds more than max processes.
func relExpectBomb(t *testing.T, tag, dir string, max int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(dir, "pids.current"))
		if err != nil {
			t.Fatalf("pids.current: %v", err)
		}
		cur, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if cur > max {
			t.Fatalf("pids.current %d > pids.max %d", cur, max)
		}
		if cur == max {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bomb reached only %d of pids.max %d", cur, max)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // let it hammer the limit
	b, _ := os.ReadFile(filepath.Join(dir, "pids.current"))
	if cur, _ := strconv.Atoi(strings.TrimSpace(string(b))); cur > max {
		t.Fatalf("pids.current %d > pids.max %d", cur, max)
	}
	if ev, err := os.ReadFile(filepath.Join(dir, "pids.events")); err == nil {
		t.Logf("bomb held at pids.max=%d (%s)", max, strings.TrimSpace(string(ev)))
	}
}

// TestReliabilityNodeMemoryHogReportedAsOOM: in node mode, a child killed
// by the kernel's OOM killer in its memory cgroup is reported with
// {pid, {oom_killed, N}} before {'EXIT', pid, {signal, 9}}, so the owner
// can tell an OOM from a crash. (Port mode: TestCgroupMemoryHogIsOOMKilledAndReported.)
func TestReliabilityNodeMemoryHogReportedAsOOM(t *testing.T) {
	r := startRelNode(t, true)
	base, e := r.base, r.e
	got := e.eval(`{ok, H} = open(<<"sh">>, [<<"-c">>, <<"x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived">>], [{cgroup_controllers, [<<"memory">>]}, {cgroup_sets, [{<<"memory">>, <<"memory.limit_in_bytes">>, 33554432}]}]), {_, _, Other, Why} = collect(H, 30000), {[X || {oom_killed, _} = X <- Other], Why}`)
	if !regexp.MustCompile(`^\{\[\{oom_killed,[1-9]\d*\}\],\{signal,9\}\}$`).MatchString(got) {
		t.Fatalf("want {[{oom_killed, N}], {signal, 9}}, got %s", got)
	}
	relWaitGroupsGone(t, base, time.Second)
	t.Logf("node mode OOM: %s", got)
}
