package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a goroutine-safe bytes.Buffer for a daemon's stdout/stderr.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// daemon is keyrelay's run() executing in-process for a test.
type daemon struct {
	t      *testing.T
	Stdout *syncBuffer
	Stderr *syncBuffer
	stop   context.CancelFunc
	abort  context.CancelFunc
	done   chan struct{}
	err    error
}

// startDaemon sets env (KEYRELAY_* and others, restored after the test),
// runs `keyrelay run` in-process and waits until it has subscribed.
// KEYRELAY_HTTP_ADDR defaults to empty (off) unless env sets it.
func startDaemon(t *testing.T, env map[string]string) *daemon {
	t.Helper()
	return startDaemonTo(t, env, nil)
}

// startDaemonTo is startDaemon with the daemon's stdout going to the writer
// stdout returns; that writer must pass what it gets on to buf (the
// daemon's Stdout, which records parses), perhaps late or slowly: a stand-in
// for a slow or stuck terminal. A nil stdout writes to buf directly.
func startDaemonTo(t *testing.T, env map[string]string, stdout func(buf *syncBuffer) io.Writer) *daemon {
	t.Helper()
	if _, ok := env["KEYRELAY_HTTP_ADDR"]; !ok {
		t.Setenv("KEYRELAY_HTTP_ADDR", "")
	}
	if _, ok := env["KEYRELAY_LOG_LEVEL"]; !ok {
		t.Setenv("KEYRELAY_LOG_LEVEL", "debug")
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	ctx, stop := context.WithCancel(context.Background())
	abort, abortFn := context.WithCancel(context.Background())
	d := &daemon{t: t, Stdout: &syncBuffer{}, Stderr: &syncBuffer{}, stop: stop, abort: abortFn, done: make(chan struct{})}
	var out io.Writer = d.Stdout
	if stdout != nil {
		out = stdout(d.Stdout)
	}
	go func() {
		defer close(d.done)
		d.err = run(ctx, abort, []string{"run"}, out, d.Stderr)
	}()
	t.Cleanup(func() {
		d.abort()
		d.stop()
		<-d.done
		if t.Failed() {
			t.Logf("keyrelay stderr:\n%s", d.Stderr.String())
		}
	})
	d.waitLog(`"msg":"subscribed"`, 10*time.Second)
	return d
}

// waitLog waits until stderr contains s.
func (d *daemon) waitLog(s string, timeout time.Duration) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(d.Stderr.String(), s) {
		select {
		case <-d.done:
			d.t.Fatalf("keyrelay exited (%v) before logging %s:\n%s", d.err, s, d.Stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("keyrelay did not log %s within %s:\n%s", s, timeout, d.Stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop sends the equivalent of SIGTERM and waits for run to return.
func (d *daemon) Stop() error {
	d.stop()
	<-d.done
	return d.err
}

// testRecord is a decoded record line.
type testRecord struct {
	Type      string  `json:"type"`
	ID        string  `json:"id"`
	Time      string  `json:"time"`
	Source    string  `json:"source"`
	DB        int     `json:"db"`
	Event     string  `json:"event"`
	Key       *string `json:"key"`
	KeyBase64 *string `json:"key_base64"`
	Since     string  `json:"since"`
	Until     string  `json:"until"`
	Reason    string  `json:"reason"`
	Dropped   int64   `json:"dropped"`
}

// parseRecords decodes newline-delimited records, failing on a bad line.
func parseRecords(t *testing.T, r io.Reader) []testRecord {
	t.Helper()
	var out []testRecord
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var rec testRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("bad record line %q: %v", sc.Text(), err)
		}
		out = append(out, rec)
	}
	return out
}

// records returns the records on the daemon's stdout so far.
func (d *daemon) records() []testRecord {
	return parseRecords(d.t, strings.NewReader(d.Stdout.String()))
}

// waitRecords waits until pred holds for the records so far.
func (d *daemon) waitRecords(timeout time.Duration, pred func([]testRecord) bool) []testRecord {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		recs := d.records()
		if pred(recs) {
			return recs
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("records did not reach the expected state within %s; have %d:\n%s", timeout, len(recs), d.Stdout.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitUntil polls cond every 20 ms until it holds, failing the test with what
// after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// getHTTP fetches url and returns the status code and body (0 and the error
// text when the request fails).
func getHTTP(url string) (int, string) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, string(b)
}

// metricSample is one sample line of the Prometheus text format.
type metricSample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

var metricLabelRE = regexp.MustCompile(`(\w+)="((?:[^"\\]|\\.)*)"`)

// parseMetrics parses the sample lines of a Prometheus text exposition.
func parseMetrics(t *testing.T, body string) []metricSample {
	t.Helper()
	var out []metricSample
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			t.Fatalf("bad metrics line %q", line)
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			t.Fatalf("bad metrics value in %q: %v", line, err)
		}
		s := metricSample{Name: line[:sp], Labels: map[string]string{}, Value: v}
		if i := strings.IndexByte(s.Name, '{'); i >= 0 {
			for _, m := range metricLabelRE.FindAllStringSubmatch(s.Name[i:], -1) {
				s.Labels[m[1]] = m[2]
			}
			s.Name = s.Name[:i]
		}
		out = append(out, s)
	}
	return out
}

// scrapeMetrics fetches http://addr/metrics.
func scrapeMetrics(t *testing.T, addr string) []metricSample {
	t.Helper()
	code, body := getHTTP("http://" + addr + "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	return parseMetrics(t, body)
}

// metricValue sums the samples named name whose labels include every
// "key=value" in labels; ok is false when there is none.
func metricValue(samples []metricSample, name string, labels ...string) (sum float64, ok bool) {
next:
	for _, s := range samples {
		if s.Name != name {
			continue
		}
		for _, kv := range labels {
			k, v, _ := strings.Cut(kv, "=")
			if s.Labels[k] != v {
				continue next
			}
		}
		sum, ok = sum+s.Value, true
	}
	return sum, ok
}
