package node

import (
	"runtime/debug"
	"time"
)

// quietAfter is how long no child must have started or ended before the
// node gives memory back.
const quietAfter = time.Second

// returnMemory gives the memory of a burst of children back to the OS once
// the node is quiet: a burst's goroutine stacks, pipe buffers and queues
// are freed pages the heap keeps, and with nothing allocating any more they
// stay resident. A forced GC, a second after the last child started or
// ended, returns them; a second one a few seconds later returns what the
// ergo processes' teardown still held at the first. (Before mailboxes were
// small, route.go, this mattered most: 6 MiB of mailbox per child, and RSS
// 325 MiB for minutes after 2 000 opens, 16 MiB before.)
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
