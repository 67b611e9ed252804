package node

import (
	"strings"
	"testing"

	"github.com/ergo-services/ergo/etf"
	"github.com/protonstream/ps_port/otpdist"
)

// What the receivers make of the translation's replacement of a request
// too large.
func TestTooLargeReads(t *testing.T) {
	why, ok := tooLarge(etf.Tuple{etf.Atom(otpdist.TooLargeAtom), 200, 100})
	if !ok || !strings.Contains(why, "--max-request 100") || !strings.Contains(why, "200 bytes") {
		t.Fatalf("%q %v", why, ok)
	}
	if _, ok := tooLarge(etf.Tuple{etf.Atom("open"), 1, 2}); ok {
		t.Fatal("took another message")
	}
}
