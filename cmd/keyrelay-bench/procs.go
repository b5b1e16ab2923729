package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keyrelay/keyrelay/bridge/bridgetest/servers"
)

// command returns a child process that is killed if the harness dies.
func command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// keyrelay is the daemon under test, run as a subprocess.
type keyrelay struct {
	cmd     *exec.Cmd
	http    string // host:port of /metrics
	logFile string
	exited  chan struct{}
	lines   lineCounter // its stdout, when the stdout sink is used
}

// cpuProfileDir, from -cpuprofile, is where every keyrelay started writes
// its CPU profile (a binary built with -tags pprof; see docs/performance.md); profiles
// counts them.
var (
	cpuProfileDir string
	profiles      int
)

// startKeyrelay runs bin with the KEYRELAY_ and AWS_ variables in env (the
// harness's own are not passed on), stdout read by a lineCounter when
// countStdout is set (tallying the lines per "source" when sources is set),
// and waits until /readyz answers.
func startKeyrelay(ctx context.Context, bin, dir string, env []string, countStdout, latency, sources bool) (*keyrelay, error) {
	port, err := servers.FreePort()
	if err != nil {
		return nil, err
	}
	k := &keyrelay{http: "127.0.0.1:" + strconv.Itoa(port), logFile: filepath.Join(dir, "keyrelay.log"),
		exited: make(chan struct{})}
	k.cmd = command(context.WithoutCancel(ctx), bin, "run")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEYRELAY_") && !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "GO") {
			k.cmd.Env = append(k.cmd.Env, kv)
		}
	}
	k.cmd.Env = append(k.cmd.Env, "KEYRELAY_HTTP_ADDR="+k.http, "KEYRELAY_LOG_LEVEL=info", "KEYRELAY_LOG_FORMAT=json")
	k.cmd.Env = append(k.cmd.Env, env...)
	if cpuProfileDir != "" {
		profiles++
		k.cmd.Env = append(k.cmd.Env, fmt.Sprintf("KEYRELAY_CPUPROFILE=%s/keyrelay-%d.prof", cpuProfileDir, profiles))
	}
	logf, err := os.Create(k.logFile)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	k.cmd.Stderr = logf
	var out io.ReadCloser
	if countStdout {
		if out, err = k.cmd.StdoutPipe(); err != nil {
			return nil, err
		}
	}
	if err := k.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	if countStdout {
		k.lines.latency = latency
		if sources {
			k.lines.sources = newSourceTally()
		}
		go k.lines.read(out)
	}
	go func() { _ = k.cmd.Wait(); close(k.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + k.http + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return k, nil
			}
		}
		select {
		case <-k.exited:
			return nil, fmt.Errorf("keyrelay exited at start:\n%s", k.logTail())
		case <-ctx.Done():
			k.kill()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			k.kill()
			return nil, fmt.Errorf("keyrelay not ready after 30 s:\n%s", k.logTail())
		}
	}
}

func (k *keyrelay) pid() int { return k.cmd.Process.Pid }

// stop sends SIGTERM and waits (keyrelay delivers what it buffered), then
// kills after timeout.
func (k *keyrelay) stop(timeout time.Duration) {
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.exited:
	case <-time.After(timeout):
		k.kill()
	}
}

func (k *keyrelay) kill() {
	_ = k.cmd.Process.Kill()
	<-k.exited
}

func (k *keyrelay) logTail() string {
	b, _ := os.ReadFile(k.logFile)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// metrics returns keyrelay's /metrics, summed per metric name (over labels)
// and per name{labels}.
func (k *keyrelay) metrics() (map[string]float64, error) {
	// Uncompressed: gzip would be keyrelay CPU that a run counts, and the
	// harness reads far more often than a Prometheus server would.
	c := http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	resp, err := c.Get("http://" + k.http + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		series := line[:i]
		m[series] = v
		if j := strings.IndexByte(series, '{'); j >= 0 {
			m[series[:j]] += v
		}
	}
	return m, sc.Err()
}

// lineCounter counts the lines of a stream and the time the last one was
// read; with latency set it also records, for each line holding a key
// lat:<unix ns>:…, the time from that write to the moment it read the line;
// with sources set it tallies the lines per "source" value (cluster run).
// Without either, holding hold stalls the reader (and so the writer once
// the pipe is full): a sink that stopped taking records.
type lineCounter struct {
	hold    sync.Mutex
	latency bool
	sources *sourceTally
	n       atomic.Int64
	last    atomic.Int64 // unix ns of the last line read
	mu      sync.Mutex
	lat     []time.Duration
}

var latKey = []byte(`"key":"lat:`)

func (c *lineCounter) read(r io.Reader) {
	br := bufio.NewReaderSize(r, 256<<10)
	if !c.latency && c.sources == nil {
		buf := make([]byte, 256<<10)
		for {
			c.hold.Lock()
			c.hold.Unlock() // empty on purpose: waits while the harness holds the reader
			n, err := br.Read(buf)
			if n > 0 {
				c.last.Store(time.Now().UnixNano())
				c.n.Add(int64(bytes.Count(buf[:n], []byte{'\n'})))
			}
			if err != nil {
				return
			}
		}
	}
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			for err == bufio.ErrBufferFull {
				_, err = br.ReadSlice('\n')
			}
		}
		if err != nil {
			return
		}
		now := time.Now()
		if c.sources != nil {
			c.sources.add(line, now.UnixNano())
		}
		if !c.latency {
			c.last.Store(now.UnixNano())
			c.n.Add(1)
			continue
		}
		if i := bytes.Index(line, latKey); i >= 0 {
			digits := line[i+len(latKey):]
			if j := bytes.IndexByte(digits, ':'); j > 0 {
				if ns, err := strconv.ParseInt(string(digits[:j]), 10, 64); err == nil {
					c.mu.Lock()
					c.lat = append(c.lat, now.Sub(time.Unix(0, ns)))
					c.mu.Unlock()
				}
			}
		}
		c.last.Store(now.UnixNano())
		c.n.Add(1)
	}
}

func (c *lineCounter) latencies() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.lat...)
}

// reference is `redis-cli psubscribe '__keyevent@*__:*'`, counting what it
// prints: a confirmation of 3 lines, then 4 lines per message.
type reference struct {
	cmd    *exec.Cmd
	lines  lineCounter
	exited chan struct{}
}

func startReference(ctx context.Context, port int) (*reference, error) {
	r := &reference{exited: make(chan struct{})}
	r.cmd = command(context.WithoutCancel(ctx), "redis-cli", "-h", "127.0.0.1", "-p", strconv.Itoa(port),
		"psubscribe", "__keyevent@*__:*")
	out, err := r.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start redis-cli: %w", err)
	}
	// Wait closes the pipe: read it to the end first, so that a redis-cli
	// the server disconnected is counted with everything it printed.
	go func() {
		r.lines.read(out)
		_ = r.cmd.Wait()
		close(r.exited)
	}()
	return r, nil
}

// received is the messages redis-cli printed; 0 for no reference.
func (r *reference) received() int64 {
	if r == nil {
		return 0
	}
	return max(0, (r.lines.n.Load()-3)/4)
}

// alive reports whether redis-cli still runs (false for no reference): it
// exits when the server closes its connection.
func (r *reference) alive() bool {
	if r == nil {
		return false
	}
	select {
	case <-r.exited:
		return false
	default:
		return true
	}
}

func (r *reference) stop() {
	_ = r.cmd.Process.Kill()
	<-r.exited
}

// procStat returns a process's CPU time (utime+stime) and peak RSS (VmHWM).
func procStat(pid int) (cpu time.Duration, hwmKB int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name, in parentheses, may hold spaces: fields start after ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, 0, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // USER_HZ on Linux
	cpu = time.Duration(ut+st) * time.Second / clkTck
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return cpu, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			hwmKB, _ = strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return cpu, hwmKB, nil
}

// procRSS returns a process's resident set (VmRSS) in KiB, 0 if unknown.
func procRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb
		}
	}
	return 0
}

// fauxqsVersion reads the installed fauxqs package's version.
func fauxqsVersion() (string, error) {
	bin, err := servers.FauxqsBin()
	if err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(bin)
	if err != nil {
		return "", err
	}
	for dir := filepath.Dir(real); dir != filepath.Dir(dir); dir = filepath.Dir(dir) {
		b, err := os.ReadFile(filepath.Join(dir, "package.json"))
		if err != nil {
			continue
		}
		if i := bytes.Index(b, []byte(`"version"`)); i >= 0 {
			v := b[i+len(`"version"`):]
			v = v[bytes.IndexByte(v, '"')+1:]
			return string(v[:bytes.IndexByte(v, '"')]), nil
		}
	}
	return "", errors.New("no package.json")
}
