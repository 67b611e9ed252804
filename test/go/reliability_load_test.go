package blackbox

// Load: many opens in a row and at once, and 1 GiB of stdin, with the
// counters of what a run could leave behind (zombies, file descriptors,
// cgroup directories, memory). Port mode's opens go through the Elixir
// shim in test/elixir/reliability_load_test.exs, where the BEAM is the node
// whose descriptors and memory are counted.

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/protonstream/ps_port/etf"
	"github.com/protonstream/ps_port/host"
)

// relLeaks is what a load run left behind in a ps_port node.
type relLeaks struct {
	fds0, fds     int
	rss0, rss     int // KiB, settled
	threads       int
	zombies       []int
	survivors     []int
	groups        []string
	rssGrowthPct  float64
	fdsAfterBurst int
	rssParts      string // RssAnon and RssFile at the end
}

func (l relLeaks) String() string {
	return fmt.Sprintf("fds %d -> %d, RSS %d -> %d KiB (%+.1f%%), %d threads, %d zombies, %d surviving processes, %d cgroup directories",
		l.fds0, l.fds, l.rss0, l.rss, l.rssGrowthPct, l.threads, len(l.zombies), len(l.survivors), len(l.groups))
}

// relNodeLeaks waits for the node to settle and counts what is left.
func relNodeLeaks(t *testing.T, ps *psNode, tag, base string, fds0, rss0 int) relLeaks {
	t.Helper()
	l := relLeaks{fds0: fds0, rss0: rss0}
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.fds = fdCount(t, ps.pid())
		l.zombies = relZombiesOf(ps.pid())
		l.survivors = relTaggedExcept(tag, ps.pid())
		if base != "" {
			l.groups = relGroupsLeft(base)
		}
		if (l.fds <= fds0 && len(l.zombies) == 0 && len(l.survivors) == 0 && len(l.groups) == 0) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	l.rss = settledRSS(ps.pid(), 6*time.Second)
	l.rssParts = rssParts(ps.pid())
	l.rssGrowthPct = 100 * float64(l.rss-rss0) / float64(rss0)
	l.threads = threadCount(ps.pid())
	return l
}

// check fails the test for anything left behind, and for RSS more than
// rssPct percent and more than slackKiB above what it was.
func (l relLeaks) check(t *testing.T, rssPct float64, slackKiB int) {
	t.Helper()
	if l.fds > l.fds0 {
		t.Errorf("file descriptors leaked: %d before, %d after", l.fds0, l.fds)
	}
	if len(l.zombies) > 0 {
		t.Errorf("zombies: %s", describe(l.zombies))
	}
	if len(l.survivors) > 0 {
		t.Errorf("processes left running: %s", describe(l.survivors))
	}
	if len(l.groups) > 0 {
		t.Errorf("cgroup directories left: %v", l.groups)
	}
	if l.rssGrowthPct > rssPct && l.rss-l.rss0 > slackKiB {
		t.Errorf("RSS %d KiB after the load, %.1f%% above the %d KiB before (want within %.0f%% or %d KiB)", l.rss, l.rssGrowthPct, l.rss0, rssPct, slackKiB)
	}
}

// TestReliabilityNodeLoad: 2 000 opens in a row (a tenth in cgroups) and
// 200 at once against one ps_port node; afterwards no zombie, no leaked file
// descriptor, no process or cgroup directory left, and the node's RSS back
// within 10 % of what it was after a warm-up.
func TestReliabilityNodeLoad(t *testing.T) {
	r := startRelNode(t, true)
	tag, base, ps, e := r.tag, r.base, r.ps, r.e
	// Cold: the connection is up, nothing was opened yet.
	cold := settledRSS(ps.pid(), 2*time.Second)
	// Warm up: every kind of open the load runs (so the code, threads and
	// ergo's tables they need are resident before the baseline), and a
	// burst of 300 at once: the Go runtime keeps a few MiB of metadata for
	// the largest heap it has had (each child's ergo mailboxes are ~6 MiB
	// of it), so a burst larger than the load's sets that floor first.
	e.expect(`element(1, reliability_driver:open_seq(200, []))`, `ok`)
	e.expect(`element(1, reliability_driver:open_seq(50, [{cgroup_controllers, [<<"pids">>, <<"memory">>]}]))`, `ok`)
	e.expect(`element(1, reliability_driver:open_par(300, []))`, `ok`)
	l0 := relNodeLeaks(t, ps, tag, base, 1<<30, 0)
	fds0, rss0 := l0.fds, l0.rss

	got := e.evalTimeout(`reliability_driver:open_seq(1800, [])`, 5*time.Minute)
	if !strings.HasPrefix(got, "{ok,") {
		t.Fatalf("1 800 opens in a row: %s", got)
	}
	us, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(got, "{ok,"), "}"))
	got = e.evalTimeout(`reliability_driver:open_seq(200, [{cgroup_controllers, [<<"pids">>, <<"memory">>]}])`, 5*time.Minute)
	if !strings.HasPrefix(got, "{ok,") {
		t.Fatalf("200 opens in cgroups in a row: %s", got)
	}
	usCg, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(got, "{ok,"), "}"))
	peakFDs := fdCount(t, ps.pid())
	got = e.evalTimeout(`{ok, ParPids, ParUs} = reliability_driver:open_par(200, []), ParUs`, 5*time.Minute)
	usPar, err := strconv.Atoi(got)
	if err != nil {
		t.Fatalf("200 at once: %s", got)
	}
	l := relNodeLeaks(t, ps, tag, base, fds0, rss0)
	// Monitors: the owner (the evaluating process) is monitored by nothing
	// on the ps_port node once its children are gone.
	if got := e.eval(`{monitored_by, MB} = process_info(self(), monitored_by), length([M || M <- MB, node(M) =:= ps_node()])`); got != "0" {
		t.Errorf("the owner is still monitored by %s processes of the ps_port node", got)
	}
	t.Logf("node RSS: %d KiB cold, %d KiB after the warm-up (%s); after the load: %s", cold, rss0, l0.rssParts, l.rssParts)
	t.Logf("node mode: 1 800 opens in a row %.1f s (%.1f ms each), 200 in cgroups %.1f s (%.1f ms each), 200 at once %.2f s; peak fds %d; after: %s",
		float64(us)/1e6, float64(us)/1800/1000, float64(usCg)/1e6, float64(usCg)/200/1000, float64(usPar)/1e6, peakFDs, l)
	// RSS: up 10 %, or 3 MiB on this ~19 MiB process. After a burst of
	// children the anonymous RSS lands 0-2.2 MiB above its level before
	// from run to run (RssAnon 7.7 -> 7.8, 9.9 and 10.5 MiB in three runs;
	// the binary's pages, RssFile, stay within 0.1 MiB): the Go heap's
	// fragmentation after a burst, not growth per child (5 rounds of 2 000
	// opens stay within 0.3 MiB). A leak of one page per open is 8 MiB here.
	l.check(t, 10, 3<<10)
}

// relStdinFrame is the {command, Data} frame for data of n bytes, built
// once: the 1 GiB tests send the same frame 16 384 times.
func relStdinFrame(n int) []byte {
	hdr, err := etf.Encode(etf.Tuple{atom("command"), make([]byte, n)})
	if err != nil {
		panic(err)
	}
	for i := len(hdr) - n; i < len(hdr); i++ {
		hdr[i] = 'z'
	}
	return packet(hdr)
}

// relMaxRSS samples pid's RSS every 20 ms until stop is closed and returns
// the highest value (KiB).
func relMaxRSS(pid int, stop <-chan struct{}) <-chan int {
	out := make(chan int, 1)
	go func() {
		max := 0
		for {
			if r := rssKiB(pid); r > max {
				max = r
			}
			select {
			case <-stop:
				out <- max
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return out
}

// TestReliabilityPortGiBStdin: 1 GiB of stdin, in 64 KiB commands sent as
// fast as the pipe takes them, into wc -c and into a child that never
// reads. Every command is either written to the child or refused with
// {error, stdin_overflow, _} (never dropped silently): wc counts exactly
// the bytes not refused. ps_port's memory stays bounded by --stdin-limit.
func TestReliabilityPortGiBStdin(t *testing.T) {
	const chunk, total = 64 << 10, 1 << 30
	frame := relStdinFrame(chunk)
	for _, c := range []struct{ name, script string }{
		{"wc", "exec wc -c"},
		{"never reads", "exec sleep 1000"},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			p := startPort(t, "--packet", "--stdin-limit", strconv.Itoa(4<<20), "--", "sh", "-c", c.script)
			p.started()
			var refused, refusedBytes atomic.Int64
			var out []byte
			var exit etf.Term
			var others []etf.Term
			var wg sync.WaitGroup
			done := make(chan struct{})
			wg.Add(1)
			go func() { // read frames while the test writes
				defer wg.Done()
				for f := range p.frames {
					if tu, ok := etf.MatchTuple(f, "error", 3); ok && tu[1] == atom("stdin_overflow") {
						refused.Add(1)
						n, _ := strconv.Atoi(strings.Fields(string(tu[2].([]byte)))[0])
						refusedBytes.Add(int64(n))
						continue
					}
					if tu, ok := etf.MatchTuple(f, "stdout", 2); ok {
						out = append(out, tu[1].([]byte)...)
						p.ack(len(tu[1].([]byte)))
						continue
					}
					if tu, ok := etf.MatchTuple(f, "exit", 2); ok {
						exit = tu[1]
						close(done)
						continue
					}
					others = append(others, f)
				}
			}()
			stopRSS := make(chan struct{})
			maxRSS := relMaxRSS(p.cmd.Process.Pid, stopRSS)
			start := time.Now()
			for sent := 0; sent < total; sent += chunk {
				if _, err := p.stdin.Write(frame); err != nil {
					t.Fatalf("writing stdin: %v", err)
				}
			}
			elapsed := time.Since(start)
			if c.name == "wc" {
				p.send(atom("eof"))
			} else {
				time.Sleep(200 * time.Millisecond) // let the last refusals out
				p.send(atom("stop"))
			}
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				t.Fatalf("no exit frame; %d refused", refused.Load())
			}
			close(stopRSS)
			rss := <-maxRSS
			p.stdin.Close()
			wg.Wait()
			accepted := int64(total) - refusedBytes.Load()
			t.Logf("%s: 1 GiB offered in %v (%.0f MB/s); %d commands (%d MiB) refused with stdin_overflow, %d MiB accepted; ps_port peak RSS %d KiB; exit %v",
				c.name, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds()/1e6, refused.Load(), refusedBytes.Load()>>20, accepted>>20, rss, exit)
			if len(others) > 0 {
				t.Errorf("unexpected frames: %v", others)
			}
			switch c.name {
			case "wc":
				if got := strings.TrimSpace(string(out)); got != strconv.FormatInt(accepted, 10) {
					t.Errorf("wc counted %s bytes, want the %d accepted", got, accepted)
				}
			default:
				// The pipe (64 KiB) and the queue (--stdin-limit) hold the rest.
				if accepted > 4<<20+64<<10+chunk {
					t.Errorf("%d bytes accepted for a child that never reads, more than the limit allows", accepted)
				}
			}
			if rss > 64<<10 {
				t.Errorf("ps_port peak RSS %d KiB for a 4 MiB stdin limit", rss)
			}
		})
	}
}

// TestReliabilityNodeGiBStdin: node mode's rule (docs/node.md, "stdin
// overflow"): a command that would take the queue past stdin_limit is
// dropped whole and reported with {pid, {error, stdin_overflow, Msg}}. An
// owner flooding 1 GiB into wc -c finds every byte either counted by wc or
// reported; an owner that paces itself with :"$stdin_queued" gets all of
// it through with no refusal; a child that never reads takes no more than
// the limit. ps_port's memory stays bounded throughout.
func TestReliabilityNodeGiBStdin(t *testing.T) {
	r := startRelNode(t, false)
	ps, e := r.ps, r.e
	const total = 1 << 30
	for i, c := range []struct{ name, cmd, fun, finish string }{
		{"flood into wc", "wc -c", "stdin_flood", "eof"},
		{"paced into wc", "wc -c", "stdin_paced", "eof"},
		{"flood, never read", "sleep 1000", "stdin_flood", "close"},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			e.t = t
			stop := make(chan struct{})
			maxRSS := relMaxRSS(ps.pid(), stop)
			start := time.Now()
			got := e.evalTimeout(fmt.Sprintf(`{ok, G%d} = open(<<"sh">>, [<<"-c">>, <<"exec %s">>]), reliability_driver:%s(G%d, %d, 65536, %s)`,
				i, c.cmd, c.fun, i, total, c.finish), 5*time.Minute)
			elapsed := time.Since(start)
			close(stop)
			rss := <-maxRSS
			// {Sent, Refused, RefusedBytes, Stdout, Exit}
			m := regexp.MustCompile(`^\{(\d+),(\d+),(\d+),<<(?:"(\d+)\\n")?>>,(\w+)\}$`).FindStringSubmatch(got)
			if m == nil {
				t.Fatalf("%s: %s", c.fun, got)
			}
			sent, _ := strconv.ParseInt(m[1], 10, 64)
			refused, _ := strconv.ParseInt(m[2], 10, 64)
			refusedBytes, _ := strconv.ParseInt(m[3], 10, 64)
			accepted := sent - refusedBytes
			t.Logf("%s: 1 GiB in %v (%.0f MB/s); %d commands (%d MiB) refused with stdin_overflow, %d MiB accepted; ps_port node peak RSS %d KiB",
				c.name, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds()/1e6, refused, refusedBytes>>20, accepted>>20, rss)
			if sent != total || m[5] != "normal" {
				t.Errorf("sent %d, exit %s", sent, m[5])
			}
			switch {
			case c.finish == "eof" && m[4] != strconv.FormatInt(accepted, 10):
				t.Errorf("wc counted %s bytes, want the %d accepted", m[4], accepted)
			case c.fun == "stdin_paced" && refused != 0:
				t.Errorf("a paced owner had %d commands refused", refused)
			case c.finish == "close" && accepted > int64(host.DefaultStdinLimit)+64<<10+65536:
				t.Errorf("%d bytes accepted for a child that never reads", accepted)
			}
			// Measured 74-122 MiB on an idle machine and 229 MiB once at load 20
			// (the GC's headroom at 500 MB/s of 64 KiB binaries, which grows when
			// the collector is starved of CPU), never the data: a node that held
			// the GiB would be far past this bound.
			if rss > 384<<10 {
				t.Errorf("ps_port node peak RSS %d KiB", rss)
			}
		})
	}
}
