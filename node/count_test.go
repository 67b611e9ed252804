package node

import (
	"sync"
	"testing"
	"time"

	"github.com/ergo-services/ergo/etf"
)

// countCalls records the counts sent and answers them when told.
type countCalls struct {
	mu    sync.Mutex
	sent  []countCall
	ready chan struct{}
}

type countCall struct {
	at     time.Time
	direct bool
	done   func(etf.Term, error)
}

func newCountClient() (*rpcClient, *countCalls) {
	cc := &countCalls{ready: make(chan struct{}, 100)}
	c := newRPCClient()
	c.counts.call = func(_ string, direct, _ bool, m, f string, _ etf.List, _ time.Duration, done func(etf.Term, error)) {
		cc.mu.Lock()
		cc.sent = append(cc.sent, countCall{at: time.Now(), direct: direct, done: done})
		cc.mu.Unlock()
		cc.ready <- struct{}{}
	}
	return c, cc
}

// next waits for the next count sent and returns it.
func (cc *countCalls) next(t *testing.T, i int) countCall {
	t.Helper()
	select {
	case <-cc.ready:
	case <-time.After(10 * time.Second):
		t.Fatalf("count %d was not sent", i)
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.sent[i]
}

func (cc *countCalls) count() int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return len(cc.sent)
}

// TestCountsOfOneOwnerAreShared: while an owner's count is out, its
// children's requests wait for the next one, which answers all of them;
// the answer is split by sender; the next count follows at once after one
// that freed something and waits after one that freed nothing.
func TestCountsOfOneOwnerAreShared(t *testing.T) {
	c, cc := newCountClient()
	owner := etf.Pid{Node: "erl@127.0.0.1", ID: 1, Creation: 1}
	kid := func(id uint64) etf.Pid { return etf.Pid{Node: "ps@127.0.0.1", ID: id, Creation: 1} }
	type answer struct{ q, mine int }
	got := make(chan answer, 10)
	ask := func(child etf.Pid, direct bool, freed int) {
		c.count(owner, countReq{child: child, direct: direct, done: func(q, mine int, err error) int {
			if err != nil {
				t.Errorf("count: %v", err)
			}
			got <- answer{q, mine}
			return freed
		}})
	}

	c.setMember(owner, &flowCtl{}, true) // keeps the owner's pacing
	pauseNow := func() time.Duration {
		c.counts.mu.Lock()
		defer c.counts.mu.Unlock()
		return c.counts.owners[owner].pause
	}

	ask(kid(1), true, 0)
	first := cc.next(t, 0)
	ask(kid(2), true, 1) // wait for the next count
	ask(kid(3), false, 0)
	if n := cc.count(); n != 1 {
		t.Fatalf("%d counts out for one owner, want 1", n)
	}
	// {Q, [senders of data messages]}: two of kid 1's, one of kid 3's.
	first.done(etf.Tuple{5, etf.List{kid(1), kid(3), kid(1)}}, nil)
	if a := <-got; a != (answer{5, 2}) {
		t.Errorf("kid 1 got %+v, want q 5 and 2 of its own", a)
	}
	second := cc.next(t, 1)
	if p := pauseNow(); p != time.Millisecond {
		t.Errorf("pause %v after a count that freed nothing, want 1ms", p)
	}
	if second.direct {
		t.Error("a count for a child whose data went through ergo was written directly")
	}
	if !second.at.After(first.at) {
		t.Error("the second count was not sent after the first's answer")
	}
	second.done(etf.Tuple{1, etf.List{kid(3)}}, nil)
	for _, want := range []answer{{1, 0}, {1, 1}} {
		if a := <-got; a != want {
			t.Errorf("got %+v, want %+v", a, want)
		}
	}
	// kid 2 reported progress: no pause before the next count.
	if p := pauseNow(); p != 0 {
		t.Errorf("a pause of %v after a count that freed bytes", p)
	}
}

// TestCountsPauseWhileNothingIsFreed: counts that free nothing are spaced
// out, doubling up to maxCountPause, however often children ask, while the
// owner has counting children (members; one that has sent nothing here).
func TestCountsPauseWhileNothingIsFreed(t *testing.T) {
	c, cc := newCountClient()
	owner := etf.Pid{Node: "erl@127.0.0.1", ID: 1, Creation: 1}
	child := etf.Pid{Node: "ps@127.0.0.1", ID: 7, Creation: 1}
	member := &flowCtl{}
	c.setMember(owner, member, true)
	var gaps []time.Duration
	var last countCall
	for i := 0; i < 6; i++ {
		c.count(owner, countReq{child: child, direct: true, done: func(int, int, error) int { return 0 }})
		call := cc.next(t, i)
		if i > 0 {
			gaps = append(gaps, call.at.Sub(last.at))
		}
		last = call
		call.done(etf.Tuple{3, etf.List{child}}, nil)
	}
	// Pauses of 1, 2, 4, 8, 16 ms after each answer: each gap at least that.
	for i, g := range gaps {
		if want := time.Millisecond << i; g < want {
			t.Errorf("count %d came %v after the one before, want at least %v", i+1, g, want)
		}
	}
	c.counts.mu.Lock()
	pause := c.counts.owners[owner].pause
	c.counts.mu.Unlock()
	if pause != 32*time.Millisecond {
		t.Errorf("pause %v after six counts that freed nothing, want 32ms", pause)
	}
	// Without members or counts out, the owner is forgotten.
	c.setMember(owner, member, false)
	c.counts.mu.Lock()
	left := len(c.counts.owners)
	c.counts.mu.Unlock()
	if left != 0 {
		t.Errorf("%d owners kept with nothing left of them", left)
	}
}
