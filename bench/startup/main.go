// Command startup measures what a ps_port start costs before main and in
// all, beside an empty Go program (bench/startup.sh runs it):
//
//	go run ./bench/startup -n 200 -empty /tmp/empty ps_port=bin/ps_port
//
// For each binary: the packages with init work and the time and memory
// they take (GODEBUG=inittrace=1 BINARY --help, the median over runs), and
// interleaved runs of `BINARY --help` and `BINARY --packet -- /bin/true`
// (stdin /dev/null), with the median wall time and mean CPU time of each;
// then close -> gone: `BINARY --packet -- sleep 600` is started, and once
// it has said {started, Pid}, its port (stdin) is closed and the time until
// the child has exited is taken (through a pidfd), median over the runs.
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/protonstream/ps_port/etf"
	"golang.org/x/sys/unix"
)

func main() {
	n := flag.Int("n", 200, "runs of each command")
	empty := flag.String("empty", "", "an empty Go program (func main() {}), built like ps_port, to compare with")
	flag.Parse()
	var bins []bin
	if *empty != "" {
		bins = append(bins, bin{"empty Go program", *empty})
	}
	for _, a := range flag.Args() {
		label, path, ok := strings.Cut(a, "=")
		if !ok {
			label, path = a, a
		}
		bins = append(bins, bin{label, path})
	}
	if len(bins) == 0 {
		fmt.Fprintln(os.Stderr, "usage: startup [-n N] [-empty PATH] LABEL=PATH...")
		os.Exit(2)
	}
	fmt.Printf("init work before main (GODEBUG=inittrace=1 ... --help, median of %d):\n", *n)
	for _, b := range bins {
		pkgs, ms, kb := initTrace(b.path, *n)
		fmt.Printf("  %-22s %3d packages  %6.2f ms  %7.1f KiB\n", b.label, pkgs, ms, kb)
	}
	printRuns(bins, *empty, *n)
	printCloseToGone(bins, *empty, *n)
}

type bin struct{ label, path string }

// printRuns times /bin/true and each binary's --help and --packet --
// /bin/true, interleaved, n times each.
func printRuns(bins []bin, empty string, n int) {
	type cmd struct {
		label string
		argv  []string
	}
	cmds := []cmd{{"/bin/true", []string{"/bin/true"}}}
	for _, b := range bins {
		cmds = append(cmds, cmd{b.label + " --help", []string{b.path, "--help"}})
		if b.path != empty {
			cmds = append(cmds, cmd{b.label + " --packet -- /bin/true", []string{b.path, "--packet", "--", "/bin/true"}})
		}
	}
	wall := make([][]float64, len(cmds))
	cpu := make([]float64, len(cmds))
	for range n {
		for i, c := range cmds {
			w, u := run(c.argv)
			wall[i] = append(wall[i], w)
			cpu[i] += u
		}
	}
	fmt.Printf("wall (median, p10-p90) and CPU (mean) of %d interleaved runs:\n", n)
	for i, c := range cmds {
		slices.Sort(wall[i])
		w := wall[i]
		fmt.Printf("  %-44s %6.2f ms (%.2f-%.2f)  CPU %5.2f ms\n", c.label, w[len(w)/2], w[len(w)/10], w[len(w)*9/10], cpu[i]/float64(n))
	}
}

// printCloseToGone times, n times per binary, how long a child outlives
// the close of its port.
func printCloseToGone(bins []bin, empty string, n int) {
	fmt.Printf("close -> child gone, `--packet -- sleep 600` (median, p10-p90 of %d):\n", n)
	for _, b := range bins {
		if b.path == empty {
			continue
		}
		var gone []float64
		for range n {
			gone = append(gone, closeToGone(b.path))
		}
		slices.Sort(gone)
		fmt.Printf("  %-22s %6.2f ms (%.2f-%.2f)\n", b.label, gone[len(gone)/2], gone[len(gone)/10], gone[len(gone)*9/10])
	}
}

// closeToGone starts path --packet -- sleep 600, waits for {started, Pid},
// closes the port and returns the ms until the child has exited.
func closeToGone(path string) float64 {
	c := exec.Command(path, "--packet", "--", "sleep", "600")
	stdin, _ := c.StdinPipe()
	stdout, _ := c.StdoutPipe()
	if err := c.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Wait()
	defer c.Process.Kill()
	var hdr [4]byte
	if _, err := io.ReadFull(stdout, hdr[:]); err != nil {
		fmt.Fprintln(os.Stderr, "no {started, Pid} frame:", err)
		os.Exit(1)
	}
	frame := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	io.ReadFull(stdout, frame)
	t, err := etf.Decode(frame)
	tu, ok := etf.MatchTuple(t, "started", 2)
	if err != nil || !ok {
		fmt.Fprintf(os.Stderr, "want {started, Pid}, got %v (%v)\n", t, err)
		os.Exit(1)
	}
	fd, err := unix.PidfdOpen(int(tu[1].(int64)), 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pidfd_open:", err)
		os.Exit(1)
	}
	defer unix.Close(fd)
	go io.Copy(io.Discard, stdout)
	t0 := time.Now()
	stdin.Close()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		if n, err := unix.Poll(fds, -1); n == 1 || (err != nil && err != unix.EINTR) {
			break
		}
	}
	return float64(time.Since(t0).Microseconds()) / 1000
}

// run runs argv with stdin, stdout and stderr on /dev/null and returns its
// wall and CPU time in ms.
func run(argv []string) (wall, cpu float64) {
	c := exec.Command(argv[0], argv[1:]...)
	t0 := time.Now()
	if err := c.Run(); err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	wall = float64(time.Since(t0).Microseconds()) / 1000
	cpu = float64((c.ProcessState.UserTime() + c.ProcessState.SystemTime()).Microseconds()) / 1000
	return wall, cpu
}

// initTrace runs path --help with GODEBUG=inittrace=1 n times and returns
// the packages with init work and the median of their total clock time and
// allocated KiB.
func initTrace(path string, n int) (pkgs int, ms, kb float64) {
	var mss, kbs []float64
	for range n {
		c := exec.Command(path, "--help")
		c.Env = append(os.Environ(), "GODEBUG=inittrace=1")
		var stderr bytes.Buffer
		c.Stderr = &stderr
		c.Run()
		p, m, k := 0, 0.0, 0.0
		sc := bufio.NewScanner(&stderr)
		for sc.Scan() {
			// init PKG @0.27 ms, 4.3 ms clock, 0 bytes, 0 allocs
			f := strings.Fields(sc.Text())
			if len(f) < 8 || f[0] != "init" {
				continue
			}
			p++
			v, _ := strconv.ParseFloat(f[4], 64)
			b, _ := strconv.ParseFloat(f[7], 64)
			m, k = m+v, k+b/1024
		}
		pkgs = p
		mss, kbs = append(mss, m), append(kbs, k)
	}
	slices.Sort(mss)
	slices.Sort(kbs)
	return pkgs, mss[n/2], kbs[n/2]
}
