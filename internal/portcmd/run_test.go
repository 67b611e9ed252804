package portcmd

import (
	"runtime"
	"testing"
)

// TestSharedProcs: the shared host takes one P, unless $GOMAXPROCS was
// given (the runtime has then applied it, and it stays).
func TestSharedProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	runtime.GOMAXPROCS(2)
	t.Setenv("GOMAXPROCS", "2")
	sharedProcs()
	if got := runtime.GOMAXPROCS(0); got != 2 {
		t.Errorf("with GOMAXPROCS=2 in the environment: %d Ps, want 2", got)
	}
	t.Setenv("GOMAXPROCS", "")
	sharedProcs()
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Errorf("without GOMAXPROCS in the environment: %d Ps, want 1", got)
	}
}
