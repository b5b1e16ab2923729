package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/bridge/bridgetest"
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

// testRecord is a decoded record: bridgetest.Record under this package's
// name, a defined type rather than an alias so that it can have the key
// method.
type testRecord bridgetest.Record

// key returns the key bytes a consumer recovers from a record ("" for a
// gap), failing the test on a record with both key and key_base64 or with
// bad base64.
func (r testRecord) key(t *testing.T) string {
	t.Helper()
	return bridgetest.Record(r).KeyString(t)
}

// parseRecords decodes newline-delimited records with
// bridgetest.ParseRecords, failing on a bad line.
func parseRecords(t *testing.T, r io.Reader) []testRecord {
	t.Helper()
	recs := bridgetest.ParseRecords(t, r)
	out := make([]testRecord, len(recs))
	for i, rec := range recs {
		out[i] = testRecord(rec)
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

// metricSample is one sample of the Prometheus text format.
type metricSample = bridgetest.Sample

// parseMetrics parses a Prometheus text exposition with
// bridgetest.ParseMetrics (the Prometheus text parser).
func parseMetrics(t *testing.T, body string) []metricSample {
	t.Helper()
	return bridgetest.ParseMetrics(t, strings.NewReader(body))
}

// scrapeMetrics fetches and parses http://addr/metrics.
func scrapeMetrics(t *testing.T, addr string) []metricSample {
	t.Helper()
	return bridgetest.ScrapeMetrics(t, addr)
}

// metricValue sums the samples named name whose labels include every
// "key=value" in labels; ok is false when there is none.
func metricValue(samples []metricSample, name string, labels ...string) (sum float64, ok bool) {
	return bridgetest.MetricValue(samples, name, labels...)
}
