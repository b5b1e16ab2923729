//go:build integration

package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/bridge/bridgetest"
)

// stuckWriter is a standard output nobody reads: every Write blocks until
// the test ends.
type stuckWriter struct{ release chan struct{} }

func (w stuckWriter) Write(p []byte) (int, error) {
	<-w.release
	return 0, io.ErrClosedPipe
}

func newStuckWriter(t *testing.T) stuckWriter {
	w := stuckWriter{release: make(chan struct{})}
	t.Cleanup(func() { close(w.release) })
	return w
}

// TestStuckStdout: standard output is a pipe nobody reads. /readyz fails
// once a write has been blocked for KEYRELAY_SINK_STALL_TIMEOUT; SIGTERM
// ends keyrelay within KEYRELAY_SHUTDOWN_TIMEOUT (plus the bounded last
// steps), with exit status 1 and one summary line of what was not
// delivered; a second signal ends it at once.
func TestStuckStdout(t *testing.T) {
	for _, second := range []bool{false, true} {
		name := "one signal"
		if second {
			name = "second signal"
		}
		t.Run(name, func(t *testing.T) {
			r := bridgetest.StartRedis(t)
			addr := httpAddr(t)
			env := resilienceEnv(r.Addr, "KEYRELAY_EVENTS", "set", "KEYRELAY_HTTP_ADDR", addr,
				"KEYRELAY_SHUTDOWN_TIMEOUT", "2s", "KEYRELAY_SINK_STALL_TIMEOUT", "1s", "KEYRELAY_LOG_LEVEL", "info")
			stuck := newStuckWriter(t)
			d := startDaemonTo(t, env, func(*syncBuffer) io.Writer { return stuck })
			writeKeys(t, newWriter(t, r.Addr), "stuck:", 20000)
			waitUntil(t, 10*time.Second, "/readyz failing", func() bool {
				code, body := getHTTP("http://" + addr + "/readyz")
				return code == http.StatusServiceUnavailable && strings.Contains(body, "blocked")
			})

			start := time.Now()
			d.stop()
			limit := 2*time.Second + 4*time.Second // the timeout, the grace and the last steps
			if second {
				time.Sleep(200 * time.Millisecond)
				d.abort()
				limit = 200*time.Millisecond + 2*time.Second
			}
			select {
			case <-d.done:
			case <-time.After(limit + 5*time.Second):
				t.Fatalf("keyrelay still running %s after the stop", time.Since(start))
			}
			if took := time.Since(start); took > limit {
				t.Errorf("stopped after %s, want within %s", took, limit)
			}
			if code := exitCode(d.err, io.Discard); code != 1 {
				t.Errorf("exit status %d (%v), want 1", code, d.err)
			}
			if n := strings.Count(d.Stderr.String(), `"msg":"records not delivered"`); n != 1 {
				t.Errorf("%d \"records not delivered\" lines, want one summary:\n%s", n, d.Stderr.String())
			}
			if !strings.Contains(d.Stderr.String(), `"count":20000`) {
				t.Errorf("the summary does not count the records:\n%s", d.Stderr.String())
			}
		})
	}
}

// TestClosedStdout: `keyrelay | head -n 3`. The closed pipe is a permanent
// failure of the stdout sink: logged, counted, exit status 1, never a
// silent death by SIGPIPE.
func TestClosedStdout(t *testing.T) {
	r := bridgetest.StartRedis(t)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := command(t, resilienceEnv(r.Addr, "KEYRELAY_EVENTS", "set", "KEYRELAY_HTTP_ADDR", ""), "run")
	var stderr syncBuffer
	cmd.Stdout, cmd.Stderr = pw, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	waitUntil(t, 10*time.Second, "subscribed", func() bool { return strings.Contains(stderr.String(), `"msg":"subscribed"`) })
	buf := make([]byte, 100)
	if err := newWriter(t, r.Addr).Set(context.Background(), "first", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := pr.Read(buf); err != nil { // like head: read a little, then go away
		t.Fatal(err)
	}
	pr.Close()
	writeKeys(t, newWriter(t, r.Addr), "closed:", 100)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("keyrelay did not stop after its stdout closed:\n%s", stderr.String())
	}
	var ws syscall.WaitStatus
	if cmd.ProcessState != nil {
		ws = cmd.ProcessState.Sys().(syscall.WaitStatus)
	}
	if ws.Signaled() {
		t.Fatalf("killed by %v: silent death", ws.Signal())
	}
	if code := exitStatus(err); code != 1 {
		t.Errorf("exit status %d, want 1:\n%s", code, stderr.String())
	}
	for _, want := range []string{"sink closed for good", "records not delivered"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
}

// TestDatabaseRefused: a database index the server does not have is a
// permanent error with a clear message, not retried forever.
func TestDatabaseRefused(t *testing.T) {
	r := bridgetest.StartRedis(t)
	code, stderr := runToExit(t, map[string]string{"KEYRELAY_REDIS_URL": "redis://" + r.Addr + "/99", "KEYRELAY_HTTP_ADDR": ""}, 15*time.Second)
	if code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	if !strings.Contains(stderr, "database") {
		t.Errorf("the error does not say what is wrong:\n%s", stderr)
	}
}

// TestOwnChannelNeverRecords: markers come back every 100 ms while keys are
// written; keyrelay's own channel and keys never become records, and no
// marker is logged as an unexpected message.
func TestOwnChannelNeverRecords(t *testing.T) {
	r := bridgetest.StartRedis(t)
	addr := httpAddr(t)
	// KEYRELAY_CHANNELS=keyspace with every event: the widest net.
	d := startDaemon(t, resilienceEnv(r.Addr, "KEYRELAY_MARKER_INTERVAL", "100ms", "KEYRELAY_HTTP_ADDR", addr,
		"KEYRELAY_CHANNELS", "keyspace"))
	c := newWriter(t, r.Addr)
	if err := c.Set(context.Background(), "keyrelay:keyrelay:alive", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	writeKeys(t, c, "own:", 50)
	d.waitRecords(10*time.Second, func(recs []testRecord) bool { return len(keysOf(recs, "set")) >= 50 })
	time.Sleep(500 * time.Millisecond)
	for _, rec := range d.records() {
		if rec.Key != nil && strings.HasPrefix(*rec.Key, "keyrelay:") {
			t.Errorf("keyrelay's own key became a record: %+v", rec)
		}
	}
	if strings.Contains(d.Stderr.String(), "unexpected channel") {
		t.Errorf("a marker was taken for an unexpected message:\n%s", d.Stderr.String())
	}
	m := scrapeMetrics(t, addr)
	if v, _ := metricValue(m, "keyrelay_markers_returned_total"); v < 3 {
		t.Errorf("keyrelay_markers_returned_total = %v, want markers coming back", v)
	}
	if v, _ := metricValue(m, "keyrelay_markers_enabled"); v != 1 {
		t.Errorf("keyrelay_markers_enabled = %v, want 1", v)
	}
}

// runToExit runs `keyrelay run` as a process with env and returns its exit
// status and stderr, failing the test if it is still running after timeout.
func runToExit(t *testing.T, env map[string]string, timeout time.Duration) (int, string) {
	t.Helper()
	cmd := command(t, env, "run")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return exitStatus(err), stderr.String()
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		t.Fatalf("still running after %s:\n%s", timeout, stderr.String())
		return 0, ""
	}
}
