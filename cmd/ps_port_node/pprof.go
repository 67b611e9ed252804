package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
)

// servePprof serves Go's profiles (net/http/pprof: CPU, heap, allocs,
// goroutine dumps, execution traces) on the address in PS_PORT_PPROF, e.g.
// PS_PORT_PPROF=127.0.0.1:6060, then
//
//	go tool pprof http://127.0.0.1:6060/debug/pprof/profile?seconds=10
//	curl 'http://127.0.0.1:6060/debug/pprof/goroutine?debug=1'
//
// Without the variable nothing listens. The variable is removed from the
// environment children inherit.
func servePprof(who string) {
	addr := os.Getenv("PS_PORT_PPROF")
	if addr == "" {
		return
	}
	os.Unsetenv("PS_PORT_PPROF")
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: PS_PORT_PPROF=%s: %v; no profiles served\n", who, addr, err)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	fmt.Fprintf(os.Stderr, "%s: profiles at http://%s/debug/pprof/\n", who, l.Addr())
	go http.Serve(l, mux)
}
