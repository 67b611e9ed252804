package node

import (
	"bytes"
	"log"
	"regexp"
	"strings"
	"sync"
)

// ergo logs through the standard library's default logger ("WARNING! ..."
// with a timestamp of its own), and some of what it says is noise: every
// connection from OTP 25 logs that a map with a tuple key was ignored (the
// global_name_server's sync message, which ps_port does not use), and a
// refused handshake reads "malformed handshake ('r' invalid reply)". So
// the default logger goes through ergoLog, which drops the noise, leaves
// handshake failures to otpdist's handshake (which says who and why, once), and
// passes the rest on to the node's logger with "ergo: " in front.
type ergoLog struct{ to *log.Logger }

var ergoLogOnce sync.Mutex

// routeErgoLog sends the default logger's lines (ergo's) to l.
func routeErgoLog(l *log.Logger) {
	ergoLogOnce.Lock()
	defer ergoLogOnce.Unlock()
	log.SetFlags(0)
	log.SetPrefix("")
	log.SetOutput(ergoLog{to: l})
}

// ergoNoise is what ergo logs that says nothing useful here.
var ergoNoise = []string{
	"Erlang sent a etf.Tuple as a map key", // OTP 25's global sync, on every connection
	"Can't handshake with",                 // otpdist's handshake said why
	"Handshake error:",                     // same
	"Could not connect to",                 // the caller's error says it
}

// ergoLinkClosed is ergo's line for a connection that ended, printed
// without format verbs: "link was closed%!(EXTRA string=NODE, string=error:, T=ERR)".
var ergoLinkClosed = regexp.MustCompile(`^link was closed%!\(EXTRA string=(.*?), string=error:, [^=]*=(.*)\)$`)

// Write implements io.Writer; log.Logger calls it once per line.
func (w ergoLog) Write(p []byte) (int, error) {
	line := strings.TrimPrefix(string(bytes.TrimRight(p, "\n")), "WARNING! ")
	for _, n := range ergoNoise {
		if strings.Contains(line, n) {
			return len(p), nil
		}
	}
	if m := ergoLinkClosed.FindStringSubmatch(line); m != nil {
		w.to.Printf("the connection to %s is gone (%s)", m[1], m[2])
		return len(p), nil
	}
	w.to.Printf("ergo: %s", line)
	return len(p), nil
}
