package port

import (
	"math/rand"
	"testing"
)

// TestIDSet checks the range set against a plain map, with ids ended in
// random order, as children end.
func TestIDSet(t *testing.T) {
	var s idSet
	ref := map[int32]bool{}
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 20000; i++ {
		id := int32(rng.Intn(3000) + 1)
		if i%7 == 0 {
			id = MaxID - int32(rng.Intn(3))
		}
		s.add(id)
		ref[id] = true
	}
	for id := int32(1); id <= 3100; id++ {
		if s.has(id) != ref[id] {
			t.Fatalf("has(%d) = %v, want %v", id, s.has(id), ref[id])
		}
	}
	for i := 1; i < len(s.r); i++ {
		if s.r[i-1].hi+1 >= s.r[i].lo {
			t.Fatalf("ranges %v and %v overlap or touch", s.r[i-1], s.r[i])
		}
	}
	// Counting up, all ended: one range.
	var up idSet
	for id := int32(1); id <= 1000; id++ {
		up.add(id)
	}
	if len(up.r) != 1 || !up.has(500) || up.has(1001) || up.has(0) {
		t.Errorf("1..1000 ended: %v", up.r)
	}
}
