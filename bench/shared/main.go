// Command shared measures ps_port --shared against one ps_port --packet per
// child, and against the program run directly (fork/exec from Go, pipes
// read directly): spawn of `true` (in a row and 50 at a time), the RSS
// ps_port adds per running `sleep` (200 and 1 000 of them), and the
// throughput of `head -c 256MiB /dev/zero` (one child, and 8 at once).
//
//	make build && go run ./bench/shared -bin bin/ps_port
//
// It prints a table in Markdown; docs/benchmarks.md quotes its last run.
package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/protonstream/ps_port/etf"
)

var (
	bin    = flag.String("bin", "bin/ps_port", "the ps_port binary")
	spawnN = flag.Int("spawn", 300, "children per spawn measurement")
	size   = flag.Int("bytes", 256<<20, "bytes per throughput child")
	rounds = flag.Int("rounds", 3, "rounds of each measurement (the median is shown)")
	only   = flag.String("only", "", "comma-separated subset: spawn,rss,throughput")
	modes  = flag.String("modes", "direct,packet,shared", "comma-separated subset of the columns to measure")
)

func main() {
	flag.Parse()
	want := func(s string) bool { return *only == "" || strings.Contains(*only, s) }
	fmt.Printf("ps_port %s, %d round(s), median shown (min–max)\n\n", *bin, *rounds)
	fmt.Println("| measurement | direct | --packet (one ps_port per child) | --shared (one ps_port) |")
	fmt.Println("|---|---|---|---|")
	if want("spawn") {
		for _, par := range []int{1, 50} {
			row(fmt.Sprintf("spawn `true` and wait for its exit, %d at a time (µs per child)", par),
				func() float64 { return spawnDirect(*spawnN, par) },
				func() float64 { return spawnPacket(*spawnN, par) },
				func() float64 { return spawnShared(*spawnN, par) })
		}
	}
	if want("rss") {
		for _, n := range []int{200, 1000} {
			row(fmt.Sprintf("RSS added per running `sleep`, %d of them (KiB)", n),
				nil,
				func() float64 { return rssPacket(min(n, 200)) },
				func() float64 { return rssShared(n) })
		}
	}
	if want("throughput") {
		for _, par := range []int{1, 8} {
			row(fmt.Sprintf("`head -c %d /dev/zero`, %d at once (MB/s, all children)", *size, par),
				func() float64 { return throughputDirect(par) },
				func() float64 { return throughputPacket(par) },
				func() float64 { return throughputShared(par) })
		}
	}
}

// row runs each measurement *rounds times, interleaved, and prints medians.
func row(name string, fs ...func() float64) {
	res := make([][]float64, len(fs))
	for range *rounds {
		for i, f := range fs {
			if f != nil && strings.Contains(*modes, []string{"direct", "packet", "shared"}[i]) {
				res[i] = append(res[i], f())
			}
		}
	}
	cells := []string{name}
	for i, r := range res {
		if !strings.Contains(*modes, []string{"direct", "packet", "shared"}[i]) {
			res[i] = nil
			r = nil
		}
		if len(r) == 0 {
			cells = append(cells, "–")
			continue
		}
		sort.Float64s(r)
		cells = append(cells, fmt.Sprintf("%.0f (%.0f–%.0f)", r[len(r)/2], r[0], r[len(r)-1]))
	}
	fmt.Println("| " + strings.Join(cells, " | ") + " |")
}

// parallel runs n jobs, par at a time, and returns µs of wall time per job.
func parallel(n, par int, job func()) float64 {
	start := time.Now()
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			job()
			<-sem
		}()
	}
	wg.Wait()
	return float64(time.Since(start).Microseconds()) / float64(n)
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func spawnDirect(n, par int) float64 {
	return parallel(n, par, func() { must(exec.Command("true").Run()) })
}

// port is a ps_port driven as a BEAM drives it.
type port struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
	wmu sync.Mutex
}

func startPort(args ...string) *port {
	cmd := exec.Command(*bin, args...)
	in, err := cmd.StdinPipe()
	must(err)
	out, err := cmd.StdoutPipe()
	must(err)
	cmd.Stderr = os.Stderr
	must(cmd.Start())
	return &port{cmd: cmd, in: in, out: bufio.NewReaderSize(out, 1<<20)}
}

func (p *port) send(t etf.Term) {
	b, err := etf.Encode(t)
	must(err)
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_, err = p.in.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...))
	must(err)
}

// read returns the next frame's term; binaries alias buf.
func (p *port) read(buf *[]byte) (etf.Tuple, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(p.out, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:]))
	if cap(*buf) < n {
		*buf = make([]byte, n)
	}
	b := (*buf)[:n]
	if _, err := io.ReadFull(p.out, b); err != nil {
		return nil, err
	}
	t, err := etf.Decode(b)
	if err != nil {
		return nil, err
	}
	tu, _ := t.(etf.Tuple)
	return tu, nil
}

func (p *port) close() {
	p.in.Close()
	io.Copy(io.Discard, p.out)
	p.cmd.Wait()
}

// runPacket runs one child through its own ps_port --packet, acking its
// output, and returns the bytes of stdout.
func runPacket(args ...string) int {
	p := startPort(append([]string{"--packet", "--"}, args...)...)
	var buf []byte
	total := 0
	for {
		f, err := p.read(&buf)
		must(err)
		switch f[0] {
		case etf.Atom("stdout"):
			n := len(f[1].([]byte))
			total += n
			p.send(etf.Tuple{etf.Atom("ack"), int64(n)})
		case etf.Atom("exit"):
			p.close()
			return total
		}
	}
}

func spawnPacket(n, par int) float64 {
	return parallel(n, par, func() { runPacket("true") })
}

// shared is one ps_port --shared and a reader that routes frames by id.
type shared struct {
	*port
	mu     sync.Mutex
	nextID int64
	waits  map[int64]chan etf.Tuple // per id: started, exit
	bytes  map[int64]int
}

func startShared() *shared {
	s := &shared{port: startPort("--shared"), waits: map[int64]chan etf.Tuple{}, bytes: map[int64]int{}}
	go s.loop()
	return s
}

func (s *shared) loop() {
	var buf []byte
	for {
		f, err := s.read(&buf)
		if err != nil {
			return
		}
		id := f[1].(int64)
		switch f[0] {
		case etf.Atom("stdout"), etf.Atom("stderr"):
			n := len(f[2].([]byte))
			s.mu.Lock()
			s.bytes[id] += n
			s.mu.Unlock()
			s.send(etf.Tuple{etf.Atom("ack"), id, int64(n)})
		default:
			s.mu.Lock()
			ch := s.waits[id]
			s.mu.Unlock()
			ch <- etf.Tuple{f[0], f[len(f)-1]}
		}
	}
}

// open starts a child and waits for it to have started.
func (s *shared) open(args ...string) (int64, chan etf.Tuple) {
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	ch := make(chan etf.Tuple, 2)
	s.waits[id] = ch
	s.mu.Unlock()
	l := etf.List{}
	for _, a := range args[1:] {
		l = append(l, []byte(a))
	}
	s.send(etf.Tuple{etf.Atom("open"), id, etf.List{
		etf.Tuple{etf.Atom("program"), []byte(args[0])}, etf.Tuple{etf.Atom("args"), l}}})
	if f := <-ch; f[0] != etf.Atom("started") {
		must(fmt.Errorf("open %v: %v", args, f))
	}
	return id, ch
}

func (s *shared) run(args ...string) int {
	id, ch := s.open(args...)
	<-ch // exit
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.waits, id)
	n := s.bytes[id]
	delete(s.bytes, id)
	return n
}

func spawnShared(n, par int) float64 {
	s := startShared()
	defer s.close()
	s.run("true") // warm
	return parallel(n, par, func() { s.run("true") })
}

// rssKiB is the resident set of pid.
func rssKiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	must(err)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

func rssShared(n int) float64 {
	s := startShared()
	defer s.close()
	s.run("true")
	time.Sleep(200 * time.Millisecond)
	before := rssKiB(s.cmd.Process.Pid)
	ids := make([]int64, n)
	for i := range n {
		ids[i], _ = s.open("sleep", "600")
	}
	time.Sleep(500 * time.Millisecond)
	after := rssKiB(s.cmd.Process.Pid)
	// Not the subject here, and slow while tree termination scans /proc per
	// child: SIGKILL, and the children's parent-death signal takes them.
	s.cmd.Process.Signal(syscall.SIGKILL)
	return float64(after-before) / float64(n)
}

// rssPacket is the RSS of a ps_port --packet running one sleep (what each
// child adds), averaged over n of them.
func rssPacket(n int) float64 {
	ports := make([]*port, n)
	var buf []byte
	for i := range ports {
		ports[i] = startPort("--packet", "--", "sleep", "600")
		f, err := ports[i].read(&buf)
		must(err)
		if f[0] != etf.Atom("started") {
			must(fmt.Errorf("sleep: %v", f))
		}
	}
	time.Sleep(500 * time.Millisecond)
	total := 0
	for _, p := range ports {
		total += rssKiB(p.cmd.Process.Pid)
	}
	for _, p := range ports {
		p.in.Close()
	}
	for _, p := range ports {
		p.close()
	}
	return float64(total) / float64(n)
}

// mbps runs par jobs at once, each returning bytes, and gives MB/s.
func mbps(par int, job func() int) float64 {
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := job()
			mu.Lock()
			total += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	if total != par**size {
		must(fmt.Errorf("got %d bytes, want %d", total, par**size))
	}
	return float64(total) / 1e6 / time.Since(start).Seconds()
}

func headArgs() []string { return []string{"head", "-c", strconv.Itoa(*size), "/dev/zero"} }

func throughputDirect(par int) float64 {
	return mbps(par, func() int {
		cmd := exec.Command("head", headArgs()[1:]...)
		out, err := cmd.StdoutPipe()
		must(err)
		must(cmd.Start())
		buf := make([]byte, 1<<20)
		total := 0
		for {
			n, err := out.Read(buf)
			total += n
			if err != nil {
				break
			}
		}
		must(cmd.Wait())
		return total
	})
}

func throughputPacket(par int) float64 {
	return mbps(par, func() int { return runPacket(headArgs()...) })
}

func throughputShared(par int) float64 {
	s := startShared()
	defer s.close()
	return mbps(par, func() int { return s.run(headArgs()...) })
}
