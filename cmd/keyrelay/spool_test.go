//go:build integration

package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/bridge/bridgetest"
	"github.com/keyrelay/keyrelay/bridge/spool"
)

// The tests in this file check the durable spool (KEYRELAY_SPOOL_DIR):
// records survive kill -9, and its bound drops by policy with an exact gap.

func spoolEnv(addr, dir string, extra ...string) map[string]string {
	return resilienceEnv(addr, append([]string{"KEYRELAY_EVENTS", "set", "KEYRELAY_SPOOL_DIR", dir,
		"KEYRELAY_LOG_LEVEL", "info", "KEYRELAY_HTTP_ADDR", ""}, extra...)...)
}

// TestSpoolSurvivesKill: keyrelay runs as a process whose standard output
// nobody reads, so a backlog of 20 000 records builds in the spool; `keyrelay
// spool` names the cursor and its lag; keyrelay is killed with SIGKILL and
// started again: every written key is delivered (by the first process into
// the pipe, or by the second), and a record delivered twice has the same id.
func TestSpoolSurvivesKill(t *testing.T) {
	const n = 20000
	r := bridgetest.StartRedis(t)
	dir := t.TempDir()
	env := spoolEnv(r.Addr, dir)
	firstRun := startUnread(t, env)
	t0 := time.Now()
	keys := writeKeys(t, newWriter(t, r.Addr), "spool:", n)
	t.Logf("written after %s", time.Since(t0))
	waitUntil(t, 20*time.Second, "the spool to hold every record", func() bool {
		st, err := spool.Inspect(dir)
		return err == nil && st.Last >= n
	})

	// `keyrelay spool` names the cursor and its lag.
	out, err := command(t, env, "spool").CombinedOutput()
	if err != nil {
		t.Fatalf("keyrelay spool: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`cursor stdout: acked \d+, lag (\d+) records, \S+`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("keyrelay spool does not name the stdout cursor and its lag:\n%s", out)
	}
	if lag, _ := strconv.Atoi(string(m[1])); lag < n/2 {
		t.Errorf("lag %d records, want most of the %d written (stdout is not read):\n%s", lag, n, out)
	}
	if !strings.Contains(string(out), "files: ") {
		t.Errorf("no files line:\n%s", out)
	}

	t.Logf("spool inspected after %s", time.Since(t0))
	before := firstRun.kill()

	d := startDaemon(t, env)
	t.Logf("restarted after %s", time.Since(t0))
	ids := map[string]string{}
	check := func(recs []testRecord) {
		for _, rec := range recs {
			if rec.Type != "keyevent" || rec.Key == nil {
				continue
			}
			if id, ok := ids[*rec.Key]; ok && id != rec.ID {
				t.Errorf("key %s delivered twice with different ids %s and %s", *rec.Key, id, rec.ID)
			}
			ids[*rec.Key] = rec.ID
		}
	}
	check(before)
	after := d.waitRecords(30*time.Second, func(recs []testRecord) bool {
		got := keysOf(recs, "set")
		for k := range keysOf(before, "set") {
			got[k]++
		}
		for _, k := range keys {
			if got[k] == 0 {
				return false
			}
		}
		return true
	})
	check(after)
	t.Logf("delivered after %s", time.Since(t0))
	t.Logf("%d records delivered before the kill, %d after the restart", len(before), len(after))
	if len(before) >= n {
		t.Errorf("every record went out before the kill: the backlog did not build")
	}
	if err := d.Stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	t.Logf("stopped after %s", time.Since(t0))
	if strings.Contains(d.Stderr.String(), "records not delivered") {
		t.Errorf("records reported lost:\n%s", d.Stderr.String())
	}
}

// unread is keyrelay run as a process whose standard output nobody reads
// until it is killed: records pile up behind a stuck sink.
type unread struct {
	t      *testing.T
	cmd    *exec.Cmd
	out    *os.File // the pipe's read end
	stderr *syncBuffer
	killed bool
}

// startUnread starts keyrelay with env, its standard output a pipe nobody
// reads, and waits until it has subscribed. The test's end kills it.
func startUnread(t *testing.T, env map[string]string) *unread {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	u := &unread{t: t, cmd: command(t, env, "run"), out: pr, stderr: &syncBuffer{}}
	u.cmd.Stdout, u.cmd.Stderr = pw, u.stderr
	if err := u.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close() // the child holds the write end
	t.Cleanup(func() {
		if !u.killed {
			_ = u.cmd.Process.Kill()
			_ = u.cmd.Wait()
		}
		pr.Close()
		if t.Failed() {
			t.Logf("killed keyrelay's stderr:\n%s", u.stderr.String())
		}
	})
	waitUntil(t, 10*time.Second, "subscribed", func() bool { return strings.Contains(u.stderr.String(), `"msg":"subscribed"`) })
	return u
}

// kill sends SIGKILL and returns the records keyrelay wrote into the pipe
// before it died: whole lines only (a batch cut by the kill was not
// acknowledged: it comes again).
func (u *unread) kill() []testRecord {
	u.t.Helper()
	_ = u.cmd.Process.Signal(syscall.SIGKILL)
	_ = u.cmd.Wait()
	u.killed = true
	out, err := io.ReadAll(u.out)
	if err != nil {
		u.t.Fatal(err)
	}
	if i := bytes.LastIndexByte(out, '\n'); i >= 0 {
		out = out[:i+1]
	} else {
		out = nil
	}
	return parseRecords(u.t, bytes.NewReader(out))
}

// gate is a standard output that blocks until opened: a sink stuck on a
// terminal nobody reads.
type gate struct {
	buf  *syncBuffer
	once sync.Once
	open chan struct{}
}

func (g *gate) Write(p []byte) (int, error) {
	<-g.open
	return g.buf.Write(p)
}

func (g *gate) Open() { g.once.Do(func() { close(g.open) }) }

// TestSpoolBound: the sink is stuck and the spool holds two small segments.
// The reader keeps reading (every write completes), the spool drops what does
// not fit (drop-newest), and once the sink moves again a gap record reports
// exactly the dropped count: every written key is delivered or counted.
func TestSpoolBound(t *testing.T) {
	const n = 5000
	r := bridgetest.StartRedis(t)
	dir := t.TempDir()
	g := &gate{open: make(chan struct{})}
	defer g.Open()
	d := startDaemonTo(t, spoolEnv(r.Addr, dir, "KEYRELAY_SPOOL_SEGMENT_BYTES", "65536", "KEYRELAY_SPOOL_MAX_BYTES", "131072",
		"KEYRELAY_BUFFER_RECORDS", "1000"),
		func(buf *syncBuffer) io.Writer { g.buf = buf; return g })
	c := newWriter(t, r.Addr)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	keys := writeKeys(t, c, "bound:", n)
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d writes in %s", n, time.Since(start).Round(time.Millisecond))
	d.waitLog("spool overflow dropped records", 10*time.Second)
	g.Open()
	var delivered map[string]int
	var dropped int64
	d.waitRecords(20*time.Second, func(recs []testRecord) bool {
		delivered = keysOf(recs, "set")
		dropped = 0
		for _, gr := range ofType(recs, "gap") {
			if gr.Reason == "overflow" {
				dropped += gr.Dropped
			}
		}
		return int64(len(delivered))+dropped >= n
	})
	if dropped == 0 {
		t.Fatalf("no overflow gap")
	}
	for k, c := range delivered {
		if c > 1 {
			t.Errorf("key %s delivered %d times", k, c)
		}
	}
	if got := int64(len(delivered)) + dropped; got != n {
		t.Errorf("%d delivered + %d dropped = %d, want exactly %d written", len(delivered), dropped, got, n)
	}
	for _, k := range keys[:10] {
		if delivered[k] == 0 {
			t.Errorf("key %s, written first, not delivered (drop-newest keeps the oldest)", k)
		}
	}
	for _, gr := range ofType(d.records(), "gap") {
		if gr.Reason != "overflow" {
			t.Errorf("unexpected gap (the reader must not block): %+v", gr)
		}
	}
}

// TestSpoolCommandWithoutSpool: `keyrelay spool` without KEYRELAY_SPOOL_DIR
// says so and exits 0.
func TestSpoolCommandWithoutSpool(t *testing.T) {
	out, err := command(t, nil, "spool").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "KEYRELAY_SPOOL_DIR is not set") {
		t.Errorf("keyrelay spool: %v\n%s", err, out)
	}
}

// TestSpoolStopLeavesRecords: SIGTERM while the sink is stuck: what is not
// delivered by the deadline stays in the spool (logged as left, not as
// lost; exit status 0), and the next start delivers it.
func TestSpoolStopLeavesRecords(t *testing.T) {
	r := bridgetest.StartRedis(t)
	dir := t.TempDir()
	env := spoolEnv(r.Addr, dir, "KEYRELAY_SHUTDOWN_TIMEOUT", "1s")
	g := &gate{open: make(chan struct{})}
	defer g.Open()
	d := startDaemonTo(t, env, func(buf *syncBuffer) io.Writer { g.buf = buf; return g })
	keys := writeKeys(t, newWriter(t, r.Addr), "left:", 100)
	waitUntil(t, 10*time.Second, "the spool to hold the records", func() bool {
		st, err := spool.Inspect(dir)
		return err == nil && st.Last >= uint64(len(keys))
	})
	// The stuck standard output makes the stop fail (its close reports the
	// blocked write), but no record is reported as not delivered.
	if err := d.Stop(); err != nil && strings.Contains(err.Error(), "not delivered") {
		t.Fatalf("stop with records left in the spool: %v", err)
	}
	if !strings.Contains(d.Stderr.String(), "records left in the spool for the next start") ||
		strings.Contains(d.Stderr.String(), "records not delivered") {
		t.Fatalf("the stop does not say the records are left in the spool:\n%s", d.Stderr.String())
	}
	d2 := startDaemon(t, env)
	d2.waitRecords(10*time.Second, func(recs []testRecord) bool {
		return hasKeys(recs, keys)
	})
}
