package blackbox

// Node mode at scale (issue 13): 1 000 children in one ps_port node, one
// owner process each, and every owner gone at once: killed, or their VM
// killed. The goals (all gone within 1 s, RSS peak within 64 MiB of idle)
// are measured by bench/node_scale.exs; these tests assert the outcome with
// generous deadlines: every child gone, the node's memory back, the node
// still serving.

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

const scaleChildren = 1000

func TestNodeThousandOwnersKilled(t *testing.T) { testNodeThousand(t, false) }

func TestNodeThousandOwnersVMKilled(t *testing.T) { testNodeThousand(t, true) }

func testNodeThousand(t *testing.T, killVM bool) {
	cookie := randomCookie()
	ps := startPsNode(t, cookie)
	e := startErl(t, cookie, ps.name)
	time.Sleep(time.Second) // the node's first connection settles
	rss0 := ps.rssKiB(t)

	start := time.Now()
	got := e.evalTimeout(`{ok, Ws} = open_many(`+strconv.Itoa(scaleChildren)+`), [OsPid || {_, _, OsPid} <- Ws]`, 5*time.Minute)
	pids := parseInts(t, got)
	t.Cleanup(func() { killAll(pids) })
	if len(pids) != scaleChildren {
		t.Fatalf("%d children, want %d", len(pids), scaleChildren)
	}
	opened := time.Since(start)
	for _, p := range pids {
		if !alive(p) {
			t.Fatalf("cat %d is not running", p)
		}
	}
	rssFull := ps.rssKiB(t)

	start = time.Now()
	if killVM {
		e.kill()
	} else {
		e.expect(`[exit(W, kill) || {W, _, _} <- Ws], ok`, `ok`)
	}
	took := waitAllGone(t, pids, 3*time.Minute)

	// The memory of 1 000 children comes back: the node gives it to the
	// OS a second, and again five seconds, after the last child ended.
	var rss int
	deadline := time.Now().Add(60 * time.Second)
	for {
		rss = ps.rssKiB(t)
		if rss <= rss0+16<<10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ps_port RSS %d KiB 60 s after its %d children ended; %d KiB before they started",
				rss, scaleChildren, rss0)
		}
		time.Sleep(200 * time.Millisecond)
	}
	what := "owners killed"
	if killVM {
		what = "owners' VM killed"
	}
	t.Logf("%d children opened in %v; %s: all gone after %v; ps_port RSS %d KiB idle, %d KiB with them (%.1f KiB each), %d KiB after",
		scaleChildren, opened.Round(time.Millisecond), what, took.Round(time.Millisecond), rss0, rssFull,
		float64(rssFull-rss0)/scaleChildren, rss)

	// Every termination was logged once, and the node still serves.
	if n := strings.Count(ps.stderr.String(), "; terminating it"); n != scaleChildren {
		t.Errorf("%d terminations logged, want %d", n, scaleChildren)
	}
	e2 := startErl(t, cookie, ps.name)
	e2.expect(`{ok, P} = open(<<"echo">>, [<<"still">>]), collect(P)`, `{<<"still\n">>,<<>>,[],normal}`)
}
