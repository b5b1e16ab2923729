package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
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
	go func() {
		defer close(d.done)
		d.err = run(ctx, abort, []string{"run"}, d.Stdout, d.Stderr)
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
