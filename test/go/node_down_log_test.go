package blackbox

// What ps_port node logs when an owner goes: the true reason, and nothing
// for a child that had already ended.

import (
	"strings"
	"testing"
	"time"
)

func TestNodeDownReasonsLogged(t *testing.T) {
	ps, e := nodePair(t)
	e.eval(`Self = self(), Owners = fun(N, F) -> [spawn(fun() -> F(), Self ! done end) || _ <- lists:seq(1, N)], [receive done -> ok after 30000 -> timeout end || _ <- lists:seq(1, N)], ok end`)
	// Children that end before their owners exit normally: nothing to log.
	e.expect(`Owners(50, fun() -> {ok, P} = open(<<"true">>, []), {<<>>, <<>>, [], normal} = collect(P) end)`, `ok`)
	e.expect(`Owners(50, fun() -> {ok, P} = open(<<"false">>, []), {<<>>, <<>>, [], {exit_status, 1}} = collect(P) end)`, `ok`)
	e.expect(`Owners(50, fun() -> {ok, P} = open(<<"cat">>, []), P ! {self(), close}, {<<>>, <<>>, [closed], normal} = collect(P) end)`, `ok`)
	time.Sleep(500 * time.Millisecond)
	if log := ps.stderr.String(); strings.Contains(log, "terminating it") {
		t.Fatalf("owners that exited normally after their children ended were logged:\n%s", log)
	}
	// Owners that exit while their children run: their exit reason.
	e.expect(`Owners(20, fun() -> {ok, _} = open(<<"cat">>, []) end)`, `ok`)
	e.expect(`{O, _, _} = spawn_owner(<<"cat">>, [], []), exit(O, boom)`, `true`)
	// An owner whose node goes away: the connection.
	e.eval(`{ok, _} = open(<<"cat">>, [])`)
	time.Sleep(300 * time.Millisecond)
	e.stdin.Close()
	<-e.waited
	deadline := time.Now().Add(5*time.Second + testSlack())
	for strings.Count(ps.stderr.String(), "terminating it") < 22 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	log := ps.stderr.String()
	var normal, unknown int
	for _, l := range strings.Split(log, "\n") {
		switch {
		case !strings.Contains(l, "terminating it"):
		case strings.Contains(l, "exited with reason normal;"):
			normal++
		case strings.Contains(l, "its exit reason is unknown"):
			unknown++ // rex saw it dead before its DOWN came
		case strings.Contains(l, "exited with reason boom;"):
		case strings.Contains(l, "'s node "+e.name+" is gone (noconnection);"):
		default:
			t.Errorf("unexpected line: %s", l)
		}
	}
	if normal+unknown != 20 || normal < 10 {
		t.Errorf("%d owners' normal exits logged as such and %d as unknown, want 20 in all, most of them normal:\n%s", normal, unknown, log)
	}
	for _, want := range []string{"exited with reason boom;", "is gone (noconnection);"} {
		if strings.Count(log, want) != 1 {
			t.Errorf("want one line with %q:\n%s", want, log)
		}
	}
	t.Logf("normal exits: %d logged as normal, %d as unknown", normal, unknown)
}
