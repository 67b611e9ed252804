package node

import (
	"testing"

	"github.com/ergo-services/ergo/etf"
)

// TestInlineDeliverKeepsOrder: an inline loopProc's message is handled on
// the deliverer's goroutine only when nothing waits in the inbox and no
// handle runs; otherwise it is queued behind what waits, so it never
// overtakes an earlier message.
func TestInlineDeliverKeepsOrder(t *testing.T) {
	var handled []etf.Term
	l := newLoopProc(func(m interface{}) { handled = append(handled, m) }, nil)
	l.inline = true

	l.deliver(etf.Atom("a")) // idle: handled at once
	if len(handled) != 1 || len(l.inbox.take(nil)) != 0 {
		t.Fatalf("idle: handled %v, want a handled inline", handled)
	}

	l.run.Lock() // the loop is handling something
	l.deliver(etf.Atom("b"))
	l.run.Unlock()
	l.deliver(etf.Atom("c")) // b waits: c must queue behind it
	if len(handled) != 1 {
		t.Fatalf("handled %v while b waited in the inbox", handled)
	}
	if got := l.inbox.take(nil); len(got) != 2 || got[0] != etf.Atom("b") || got[1] != etf.Atom("c") {
		t.Fatalf("inbox %v, want [b c]", got)
	}

	l.inbox.close()
	if l.deliver(etf.Atom("d")) || len(handled) != 1 {
		t.Fatalf("a closed loopProc took d (handled %v)", handled)
	}
}
