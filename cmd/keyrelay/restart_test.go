//go:build integration

package main

import (
	"context"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/bridge/bridgetest"
)

// The tests in this file check restart gaps: the window in which no instance
// of the group listened (a stop, a crash, a deploy) is reported when
// keyrelay starts again, from keyrelay's alive key in Redis.

const restartMarkerInterval = 200 * time.Millisecond

func restartEnv(addr string, extra ...string) map[string]string {
	return resilienceEnv(addr, append([]string{"KEYRELAY_EVENTS", "set", "KEYRELAY_MARKER_INTERVAL", restartMarkerInterval.String(),
		"KEYRELAY_LOG_LEVEL", "info"}, extra...)...)
}

// checkRestartGap checks that the first record is a restart gap whose since
// lies within a few marker intervals before down, and that every write made
// while keyrelay was down lies inside it.
func checkRestartGap(t *testing.T, recs []testRecord, down time.Time, writes []timedWrite) {
	t.Helper()
	if len(recs) == 0 || recs[0].Type != "gap" {
		t.Fatalf("first record is not a gap: %+v", recs)
	}
	since, until := checkGap(t, recs[0], "restart")
	if since.After(down) || down.Sub(since) > 3*restartMarkerInterval+100*time.Millisecond {
		t.Errorf("since %s: want within three marker intervals before keyrelay went down (%s)", since, down)
	}
	lost, _ := checkLossInGaps(t, writes, recs)
	if lost != len(writes) {
		t.Errorf("%d of %d writes made while keyrelay was down were delivered?", len(writes)-lost, len(writes))
	}
	for _, w := range writes {
		if w.sent.Before(since) || w.reply.After(until) {
			t.Errorf("write %s (%s) outside the restart gap [%s, %s]", w.key, w.sent, since, until)
		}
	}
}

// writeTimed writes n keys one by one and returns them with their times.
func writeTimed(t *testing.T, r *bridgetest.Redis, prefix string, n int) []timedWrite {
	t.Helper()
	c := newWriter(t, r.Addr)
	var out []timedWrite
	for i := range n {
		k := prefix + string(rune('a'+i%26)) + time.Now().Format("150405.000000")
		sent := time.Now()
		if err := c.Set(context.Background(), k, "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
		out = append(out, timedWrite{k, sent, time.Now()})
	}
	return out
}

// TestRestartGapAfterStop: keyrelay stopped (a deploy), events written, then
// started again: the first record is a restart gap covering them.
func TestRestartGapAfterStop(t *testing.T) {
	r := bridgetest.StartRedis(t)
	d := startDaemon(t, restartEnv(r.Addr))
	time.Sleep(time.Second) // the alive key is written
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	writes := writeTimed(t, r, "down:", 20)
	time.Sleep(300 * time.Millisecond)

	d2 := startDaemon(t, restartEnv(r.Addr))
	recs := d2.waitRecords(10*time.Second, func(recs []testRecord) bool { return len(recs) > 0 })
	checkRestartGap(t, recs, down, writes)
}

// TestRestartGapAfterCrash: keyrelay killed with SIGKILL; the restart gap
// starts within a marker interval or so of the crash.
func TestRestartGapAfterCrash(t *testing.T) {
	r := bridgetest.StartRedis(t)
	first := startInstance(t, "first", restartEnv(r.Addr, "KEYRELAY_HTTP_ADDR", ""))
	time.Sleep(time.Second)
	first.signal(syscall.SIGKILL)
	down := time.Now()
	first.wait(5 * time.Second)
	writes := writeTimed(t, r, "crash:", 20)

	d := startDaemon(t, restartEnv(r.Addr))
	recs := d.waitRecords(10*time.Second, func(recs []testRecord) bool { return len(recs) > 0 })
	checkRestartGap(t, recs, down, writes)
}

// TestRestartFirstStart: with no alive key (a first start), there is no
// restart gap, and a log line and a metric say why.
func TestRestartFirstStart(t *testing.T) {
	r := bridgetest.StartRedis(t)
	addr := httpAddr(t)
	d := startDaemon(t, restartEnv(r.Addr, "KEYRELAY_HTTP_ADDR", addr))
	if !strings.Contains(d.Stderr.String(), "no record of when keyrelay last listened") {
		t.Errorf("no log line:\n%s", d.Stderr.String())
	}
	if v, _ := metricValue(scrapeMetrics(t, addr), "keyrelay_restart_unknown_total"); v != 1 {
		t.Errorf("keyrelay_restart_unknown_total = %v, want 1", v)
	}
	if gaps := ofType(d.records(), "gap"); len(gaps) > 0 {
		t.Errorf("gap records on a first start: %+v", gaps)
	}
}

// TestNotificationsSwitchedOff: notifications switched off while keyrelay
// runs (CONFIG SET notify-keyspace-events ""): the alive key's notification
// stops coming back, /readyz fails, a log line and the metric say so; on
// again, ready again.
func TestNotificationsSwitchedOff(t *testing.T) {
	r := bridgetest.StartRedis(t)
	addr := httpAddr(t)
	startDaemon(t, restartEnv(r.Addr, "KEYRELAY_HTTP_ADDR", addr))
	ready := func() (int, string) { return getHTTP("http://" + addr + "/readyz") }
	waitUntil(t, 5*time.Second, "ready", func() bool { code, _ := ready(); return code == http.StatusOK })
	c := r.Client(0)
	if err := c.ConfigSet(context.Background(), "notify-keyspace-events", "").Err(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "/readyz failing", func() bool {
		code, body := ready()
		return code == http.StatusServiceUnavailable && strings.Contains(body, "notifications switched off")
	})
	if v, _ := metricValue(scrapeMetrics(t, addr), "keyrelay_notifications_flowing"); v != 0 {
		t.Errorf("keyrelay_notifications_flowing = %v, want 0", v)
	}
	if err := c.ConfigSet(context.Background(), "notify-keyspace-events", "KEA").Err(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "ready again", func() bool { code, _ := ready(); return code == http.StatusOK })
}

// TestAliveKeyNotPermitted: a Redis user that may not write keyrelay's keys:
// warned once, keyrelay goes on relaying.
func TestAliveKeyNotPermitted(t *testing.T) {
	r := bridgetest.StartRedis(t)
	if err := r.Client(0).Do(context.Background(), "ACL", "SETUSER", "relay", "on", ">pw", "~*", "&*", "+@all", "-set").Err(); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, restartEnv(r.Addr, "KEYRELAY_REDIS_URL", "redis://relay:pw@"+r.Addr))
	writes := writeTimed(t, r, "acl:", 5)
	d.waitRecords(10*time.Second, func(recs []testRecord) bool { return len(keysOf(recs, "set")) >= len(writes) })
	time.Sleep(time.Second)
	if n := strings.Count(d.Stderr.String(), "alive key off"); n != 1 {
		t.Errorf("the alive-key warning appears %d times, want once:\n%s", n, d.Stderr.String())
	}
}

// TestRestartGapFromSpool: a Redis user without SET cannot keep the alive
// key, but the spool keeps the markers: a crash (SIGKILL) and a restart on
// the same spool directory are still dated, within a few marker intervals.
func TestRestartGapFromSpool(t *testing.T) {
	r := bridgetest.StartRedis(t)
	if err := r.Client(0).Do(context.Background(), "ACL", "SETUSER", "relay", "on", ">pw", "~*", "&*", "+@all", "-set").Err(); err != nil {
		t.Fatal(err)
	}
	env := restartEnv(r.Addr, "KEYRELAY_REDIS_URL", "redis://relay:pw@"+r.Addr, "KEYRELAY_SPOOL_DIR", t.TempDir(),
		"KEYRELAY_HTTP_ADDR", "")
	first := startInstance(t, "first", env)
	time.Sleep(time.Second)
	first.signal(syscall.SIGKILL)
	down := time.Now()
	first.wait(5 * time.Second)
	if !strings.Contains(first.stderr.String(), "alive key off") {
		t.Fatalf("the alive key was written: the test proves nothing\n%s", first.stderr.String())
	}
	writes := writeTimed(t, r, "spool:", 20)

	d := startDaemon(t, env)
	recs := d.waitRecords(10*time.Second, func(recs []testRecord) bool { return len(recs) > 0 })
	checkRestartGap(t, recs, down, writes)
}
