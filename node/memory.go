package node

import (
	"runtime/debug"
	"time"
)

// quietAfter is how long no child must have started or ended before the
// node gives memory back.
const quietAfter = time.Second

// returnMemory gives the memory of a burst of children back to the OS once
// the node is quiet. Every child's ergo process allocates two mailboxes of
// mailboxSize entries (about 6 MiB together); after a few thousand
// children the heap holds hundreds of MiB of dead mailboxes and freed
// pages, and with nothing allocating any more they stay (measured: RSS
// 325 MiB for minutes after 2 000 opens, 16 MiB before). A forced GC, a
// second after the last child started or ended, returns them; a second one
// a few seconds later returns what the ergo processes' teardown still held
// at the first (on a loaded machine, RSS stayed 2-4 MiB above its level
// before the burst without it).
func (n *Node) returnMemory() {
	t := time.NewTicker(quietAfter)
	defer t.Stop()
	var last time.Time // n.changed when memory was last given back
	passes := 0        // how often since n.changed last moved
	for {
		select {
		case <-n.done:
			return
		case <-t.C:
		}
		n.mu.Lock()
		changed := n.changed
		n.mu.Unlock()
		if changed.IsZero() {
			continue
		}
		if !changed.Equal(last) {
			last, passes = changed, 0
		}
		quiet := time.Since(changed)
		switch {
		case passes == 0 && quiet >= quietAfter, passes == 1 && quiet >= secondPassAfter:
			debug.FreeOSMemory()
			passes++
		}
	}
}

// secondPassAfter is when, after the last change, memory is given back a
// second time.
const secondPassAfter = 5 * quietAfter
