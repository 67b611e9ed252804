package blackbox

// Two hosts on one machine: ps_port node runs in its own network namespace,
// joined to the host by a veth pair with addresses of this suite's own
// (10.231.7.0/30: .1 on the host side, .2 in the namespace), and the erl
// node that owns the children runs outside it. Traffic stays between the
// two namespaces.

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	relHostAddr = "10.231.7.1"
	relNsAddr   = "10.231.7.2"
)

// relNetns makes a network namespace joined to the host by a veth pair and
// returns the namespace and the host side's interface. Runs that need the
// /30 take turns through a lock file.
func relNetns(t *testing.T) (ns, hostIf string) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Fatal("the two-host tests need root (ip netns)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("ip not found: apt-get install iproute2")
	}
	lock, err := os.OpenFile("/run/ps_port_rel_netns.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	id := relTag()[3:9]
	ns, hostIf = "psrel"+id, "prh"+id
	nsIf := "prn" + id
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		// epmd (started by ps_port node) and anything else left in there.
		out, _ := exec.Command("ip", "netns", "pids", ns).Output()
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		exec.Command("ip", "link", "del", hostIf).Run()
		exec.Command("ip", "netns", "del", ns).Run()
		syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
		lock.Close()
	})
	run("ip", "netns", "add", ns)
	run("ip", "link", "add", hostIf, "type", "veth", "peer", "name", nsIf, "netns", ns)
	run("ip", "addr", "add", relHostAddr+"/30", "dev", hostIf)
	run("ip", "link", "set", hostIf, "up")
	run("ip", "netns", "exec", ns, "ip", "addr", "add", relNsAddr+"/30", "dev", nsIf)
	run("ip", "netns", "exec", ns, "ip", "link", "set", nsIf, "up")
	run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
	return ns, hostIf
}

// TestReliabilityTwoHostsLinkDown: children driven across a veth link;
// the connection stays up while idle for several tick times; then the link
// goes down. With net_ticktime T on both nodes (erl's -kernel net_ticktime,
// ps_port's --net-ticktime), each side declares the other down after T to
// 1.25 T without traffic: ps_port terminates the children, and each owner's
// monitor reports noconnection. When the link comes back, the owner opens
// new children.
func TestReliabilityTwoHostsLinkDown(t *testing.T) {
	const tick = 4 // seconds
	ns, hostIf := relNetns(t)
	tag := relTag()
	t.Cleanup(func() { relKillTagged(tag) })
	cookie := randomCookie()
	ps := startNode(t, nodeOpts{tag: tag, host: relNsAddr, netns: ns, cookie: cookie,
		flags: []string{"--allow-any", "--net-ticktime", strconv.Itoa(tick)}})
	e := startErlNode(t, cookie, ps.name, erlOpts{reliability: true, host: relHostAddr, ticktime: tick})
	for i := 0; i < 3; i++ {
		e.eval(fmt.Sprintf(`{ok, K%d} = open(<<"sh">>, [<<"-c">>, %s], [{delay_to_sigkill, 200}]), W%d = reliability_driver:watch(K%d)`, i, erlBin(nodeTree), i, i))
	}
	e.expect(`{ok, C} = open(<<"cat">>, []), WC = reliability_driver:watch(C), C ! {self(), {command, <<"across\n">>}}, receive {C, {data, D1}} -> D1 after 30000 -> timeout end`, `<<"across\n">>`)
	tagged := relSnapshot(t, tag, 11)
	children := relTaggedExcept(tag, ps.pid())
	if len(children) != len(tagged)-1 {
		t.Fatalf("children %v, tagged %v, node %d", children, tagged, ps.pid())
	}

	// Idle for three tick times: ticks keep the connection up.
	time.Sleep(3 * tick * time.Second)
	for _, p := range children {
		if !alive(p) {
			t.Fatalf("child %d died while the link was up and idle; ps_port node said:\n%s", p, ps.stderr.String())
		}
	}
	e.expect(`C ! {self(), {command, <<"still\n">>}}, receive {C, {data, D2}} -> D2 after 30000 -> timeout end`, `<<"still\n">>`)

	t0 := e.evalInt(`erlang:monotonic_time(millisecond)`)
	if out, err := exec.Command("ip", "link", "set", hostIf, "down").CombinedOutput(); err != nil {
		t.Fatalf("ip link set down: %v %s", err, out)
	}
	took := waitAllGone(t, children, 3*tick*time.Second)
	var erlDown []int
	for _, w := range []string{"W0", "W1", "W2", "WC"} {
		got := e.eval(fmt.Sprintf(`reliability_driver:down_reason(%s, %d)`, w, 3*tick*1000))
		f := strings.Split(strings.Trim(got, "{}"), ",")
		if len(f) != 2 || f[0] != "noconnection" {
			t.Fatalf("%s: want {noconnection, T}, got %s", w, got)
		}
		ms, _ := strconv.Atoi(f[1])
		erlDown = append(erlDown, ms-t0)
	}
	t.Logf("link down with net_ticktime %d s: ps_port node killed the children (delay_to_sigkill 200 ms) %v later; the owners' monitors said noconnection after %v ms",
		tick, took.Round(time.Millisecond), erlDown)
	// Not before the tick time could have passed; after it, as soon as a
	// loaded machine allows (testSlack).
	lo, hi := time.Duration(tick)*time.Second*3/4, time.Duration(tick)*time.Second*5/4+200*time.Millisecond+time.Second+testSlack()
	if took < lo || took > hi {
		t.Errorf("ps_port took %v to notice, want %v..%v (net_ticktime %d s)", took, lo, hi, tick)
	}
	for _, ms := range erlDown {
		if ms < tick*1000*3/4 || ms > tick*1000*5/4+1000+int(testSlack().Milliseconds()) {
			t.Errorf("erl noticed after %d ms, want about %d ms", ms, tick*1000)
		}
	}
	select {
	case <-ps.waited:
		t.Fatalf("ps_port node exited: %v", ps.err)
	default:
	}

	// The link comes back; the owner reconnects and opens a new child.
	if out, err := exec.Command("ip", "link", "set", hostIf, "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link set up: %v %s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := e.eval(`case catch open(<<"cat">>, []) of {ok, X} -> X ! {self(), close}, ok; Err -> Err end`)
		if got == "ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no open after the link came back: %s", got)
		}
		time.Sleep(500 * time.Millisecond)
	}
	e.expect(`{ok, C2} = open(<<"cat">>, []), C2 ! {self(), {command, <<"back\n">>}}, receive {C2, {data, D3}} -> D3 after 30000 -> timeout end`, `<<"back\n">>`)
	e.expect(`C2 ! {self(), close}, reliability_driver:bytes_of(C2, 30000)`, `{<<>>,normal}`)
}
