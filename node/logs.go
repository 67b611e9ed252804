package node

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
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
// handshake failures to distHandshake (which says who and why, once), and
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
	"Can't handshake with",                 // distHandshake said why
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

// handshakeError says why a distribution handshake failed and what to do,
// from what ergo returned and what handshakeConn saw.
func handshakeError(err error, hc *handshakeConn) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "'r' invalid reply"):
		return "wrong cookie: its challenge reply was not made with this node's cookie; " +
			"give both the same cookie (ps_port: --cookie-file or PS_PORT_COOKIE; erl: -setcookie or ~/.erlang.cookie)"
	case strings.Contains(msg, "'a' digest"):
		return "wrong cookie: its challenge acknowledgement was not made with this node's cookie; " +
			"give both the same cookie (ps_port: --cookie-file or PS_PORT_COOKIE; erl: -setcookie or ~/.erlang.cookie)"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed):
		if hc.sentReply {
			return "it closed the connection after this node's challenge reply: the cookies differ " +
				"(give both the same cookie), or it refuses this node"
		}
		return "it closed the connection during the handshake (" + msg + ")"
	case strings.Contains(msg, "handshake negotiation failed"):
		return "it refused the connection (status " + fmt.Sprintf("%q", hc.status) + "): " +
			"a node of this name is connected already, or it does not allow this node"
	case hc.version != 0 && hc.version != 5 && hc.version != 6:
		return fmt.Sprintf("it speaks distribution handshake version %d; this node speaks 5 and 6 (OTP 23 and later)", hc.version)
	}
	return "distribution handshake failed: " + msg
}

// peerName is the peer as a log line names it: its node name when it said
// it, and its address.
func peerName(hc *handshakeConn, remote net.Addr) string {
	if hc.name != "" {
		return fmt.Sprintf("%s (%s)", hc.name, remote)
	}
	return remote.String()
}
