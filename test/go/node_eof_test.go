package blackbox

// ps_port node --exit-on-eof: the end of stdin (the BEAM that runs ps_port
// as a port closed it or died) shuts the node down as SIGTERM does.

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestNodeExitOnEOFTerminatesChildren(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cookie := randomCookie()
	ps := startNode(t, nodeOpts{cookie: cookie, flags: []string{"--allow-any", "--exit-on-eof"}, setup: func(cmd *exec.Cmd) { cmd.Stdin = r }})
	r.Close()
	e := startErl(t, cookie, ps.name)
	osPid := e.evalInt(`{_, _, OsPid} = spawn_owner(` + treeCmd + `, [{delay_to_sigkill, 200}]), OsPid`)
	pids := treePids(t, osPid)
	// Bytes on stdin are not a command: they are read and ignored.
	if _, err := w.Write([]byte("ignored\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	select {
	case <-ps.waited:
		t.Fatalf("ps_port node exited on input that was not EOF: %v\n%s", ps.err, ps.stderr.String())
	default:
	}
	start := time.Now()
	w.Close()
	select {
	case <-ps.waited:
		if ps.err != nil {
			t.Fatalf("ps_port node exited with %v after EOF on stdin", ps.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("ps_port node still running 10 s after EOF on stdin\n%s", ps.stderr.String())
	}
	took := time.Since(start)
	waitAllGone(t, pids, time.Second)
	t.Logf("EOF on stdin: ps_port node exited after %v, its child's tree of %d processes is gone", took, len(pids))
	if !strings.Contains(ps.stderr.String(), "end of stdin (--exit-on-eof): terminating 1 children") {
		t.Errorf("no log line for the shutdown on EOF:\n%s", ps.stderr.String())
	}
}

// Without --exit-on-eof stdin is not read: a node started with stdin at
// /dev/null (every other test) or a closed pipe keeps running.
func TestNodeWithoutExitOnEOFIgnoresStdin(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cookie := randomCookie()
	ps := startNode(t, nodeOpts{cookie: cookie, setup: func(cmd *exec.Cmd) { cmd.Stdin = r }})
	r.Close()
	w.Close()
	time.Sleep(500 * time.Millisecond)
	select {
	case <-ps.waited:
		t.Fatalf("ps_port node without --exit-on-eof exited on EOF: %v\n%s", ps.err, ps.stderr.String())
	default:
	}
	e := startErl(t, cookie, ps.name)
	e.expect(`{ok, P} = open(<<"echo">>, [<<"up">>]), collect(P)`, `{<<"up\n">>,<<>>,[],normal}`)
}
