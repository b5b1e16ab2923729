//go:build integration

package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyrelay/keyrelay/bridge/bridgetest"
)

// The tests in this file check keyrelay's central promise key by key: every
// event it did not deliver was published inside the window of a gap record.
// A write's event is published at some moment between the write's send and
// its reply; a lost write must overlap a gap window.

// timedWrite is one successful write and when it was sent and answered.
type timedWrite struct {
	key         string
	sent, reply time.Time
}

// timedWrites collects writes from several goroutines.
type timedWrites struct {
	mu     sync.Mutex
	writes []timedWrite
}

func (w *timedWrites) add(tw ...timedWrite) {
	w.mu.Lock()
	w.writes = append(w.writes, tw...)
	w.mu.Unlock()
}

func (w *timedWrites) all() []timedWrite {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]timedWrite(nil), w.writes...)
}

// pace writes SET prefix<n> through c (a node or a cluster client) one at a
// time, about every millisecond, until stop is closed.
func pace(c redis.Cmdable, prefix string, out *timedWrites, stop <-chan struct{}) (done <-chan struct{}) {
	d := make(chan struct{})
	go func() {
		defer close(d)
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			key := prefix + strconv.Itoa(n)
			sent := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := c.Set(ctx, key, "v", 0).Err()
			cancel()
			if err == nil {
				out.add(timedWrite{key, sent, time.Now()})
			} else {
				time.Sleep(20 * time.Millisecond) // a node is down or moving: do not spin
			}
			time.Sleep(time.Millisecond)
		}
	}()
	return d
}

// burst writes n keys of keyLen bytes in pipelines of 500 as fast as Redis
// takes them; every key of a pipeline shares its send and reply times.
func burst(t *testing.T, c *redis.Client, prefix string, n, keyLen int, out *timedWrites) {
	t.Helper()
	pad := strings.Repeat("x", max(0, keyLen-len(prefix)-8))
	for i := 0; i < n; {
		pipe := c.Pipeline()
		var keys []string
		for j := 0; j < 500 && i < n; i, j = i+1, j+1 {
			k := fmt.Sprintf("%s%07d%s", prefix, i, pad)
			pipe.Set(context.Background(), k, "v", 0)
			keys = append(keys, k)
		}
		sent := time.Now()
		if _, err := pipe.Exec(context.Background()); err != nil {
			t.Fatalf("burst: %v", err)
		}
		reply := time.Now()
		tws := make([]timedWrite, len(keys))
		for k, key := range keys {
			tws[k] = timedWrite{key, sent, reply}
		}
		out.add(tws...)
	}
}

// gapWindow is a gap record's window.
type gapWindow struct {
	since, until time.Time
	reason       string
}

// checkLossInGaps fails for every write whose event was not delivered and
// whose send-to-reply interval overlaps no gap window. It returns how many
// writes were lost (all inside windows when the test passes).
func checkLossInGaps(t *testing.T, writes []timedWrite, recs []testRecord) (lost int, gaps []gapWindow) {
	t.Helper()
	for _, g := range ofType(recs, "gap") {
		since, until := checkGap(t, g, g.Reason)
		gaps = append(gaps, gapWindow{since, until, g.Reason})
	}
	got := keysOf(recs, "set")
	outside := 0
	for _, w := range writes {
		if got[w.key] > 0 {
			continue
		}
		lost++
		inside := false
		for _, g := range gaps {
			if !w.sent.After(g.until) && !w.reply.Before(g.since) {
				inside = true
				break
			}
		}
		if !inside {
			outside++
			if outside <= 5 {
				t.Errorf("%.40s… (sent %s, answered %s) was lost outside every gap window %v",
					w.key, w.sent.Format(time.RFC3339Nano), w.reply.Format(time.RFC3339Nano), gaps)
			}
		}
	}
	if outside > 0 {
		t.Errorf("%d of %d lost writes lie outside every gap window", outside, lost)
	}
	return lost, gaps
}

// lossCase is one way of making Redis drop keyrelay's subscription while
// it lags behind a burst.
type lossCase struct {
	name      string
	redisArgs []string
	env       []string
	acl       bool // connect as a user without PUBLISH: no markers
	kill      bool // CLIENT KILL the subscription while it lags
}

// TestGapWindowsCoverLagLosses: a burst keyrelay cannot keep up with while
// a paced writer runs. Redis drops the lagging subscription (output-buffer
// limit, or CLIENT KILL in the middle of the burst) with messages still
// queued for it; each lost write must lie inside a gap window, with markers,
// without them, and for a user that may not publish.
func TestGapWindowsCoverLagLosses(t *testing.T) {
	smallBuffer := []string{"--client-output-buffer-limit", "pubsub 64kb 32kb 1"}
	for _, tc := range []lossCase{
		{name: "output buffer limit", redisArgs: smallBuffer},
		{name: "output buffer limit without markers", redisArgs: smallBuffer, env: []string{"KEYRELAY_MARKER_INTERVAL", "0"}},
		{name: "output buffer limit, user without publish", redisArgs: smallBuffer, acl: true},
		{name: "client kill", kill: true, redisArgs: []string{"--client-output-buffer-limit", "pubsub 0 0 0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := bridgetest.StartRedis(t, tc.redisArgs...)
			url := "redis://" + r.Addr
			if tc.acl {
				// Everything a subscriber needs, but no PUBLISH and no
				// access to keyrelay's channel.
				err := r.Client(0).Do(context.Background(), "ACL", "SETUSER", "relay", "on", ">pw", "resetchannels",
					"&__keyevent@*__:set", "+psubscribe", "+subscribe", "+punsubscribe", "+unsubscribe",
					"+ping", "+info", "+role", "+select").Err()
				if err != nil {
					t.Fatal(err)
				}
				url = "redis://relay:pw@" + r.Addr
			}
			// keyrelay reads through a forwarder that stops reading for a
			// second during the burst: keyrelay lags like a slow reader,
			// and Redis queues what it cannot send.
			fwd := bridgetest.StartForwarder(t, r.Addr)
			url = strings.Replace(url, r.Addr, fwd.Addr, 1)
			env := resilienceEnv(r.Addr, append([]string{"KEYRELAY_EVENTS", "set", "KEYRELAY_REDIS_URL", url,
				"KEYRELAY_MARKER_INTERVAL", "200ms", "KEYRELAY_REDIS_HEALTH_INTERVAL", "2s"}, tc.env...)...)
			d := startDaemon(t, env)

			var writes timedWrites
			stop := make(chan struct{})
			paced := pace(newWriter(t, r.Addr), "paced:", &writes, stop)
			time.Sleep(300 * time.Millisecond)
			go func() {
				time.Sleep(50 * time.Millisecond)
				fwd.Pause()
				time.Sleep(500 * time.Millisecond)
				if tc.kill {
					if err := r.Client(0).ClientKillByFilter(context.Background(), "TYPE", "pubsub").Err(); err != nil {
						t.Errorf("CLIENT KILL: %v", err)
					}
				}
				time.Sleep(500 * time.Millisecond)
				fwd.Resume()
			}()
			burst(t, newWriter(t, r.Addr), "burst:", 60000, 256, &writes)
			time.Sleep(time.Second)
			close(stop)
			<-paced
			// Let keyrelay finish reading and delivering.
			var last int
			d.waitRecords(30*time.Second, func(recs []testRecord) bool {
				n := len(recs)
				settled := n == last && n > 0
				last = n
				time.Sleep(300 * time.Millisecond)
				return settled
			})
			if err := d.Stop(); err != nil {
				t.Fatalf("stop: %v", err)
			}
			recs := d.records()
			all := writes.all()
			lost, gaps := checkLossInGaps(t, all, recs)
			if len(gaps) == 0 {
				t.Fatalf("no gap record: the subscription was never dropped, so the test proved nothing (%d writes, %d lost)", len(all), lost)
			}
			t.Logf("%d writes, %d lost, all inside %d gap windows", len(all), lost, len(gaps))
			if tc.acl && !strings.Contains(d.Stderr.String(), "continuity markers are off") {
				t.Errorf("no warning that markers are off:\n%s", d.Stderr.String())
			}
			if tc.acl && strings.Count(d.Stderr.String(), "continuity markers are off") != 1 {
				t.Errorf("the markers warning is not logged exactly once")
			}
		})
	}
}

// TestStopDuringOutageReportsGap: SIGTERM while Redis is unreachable writes
// a gap record from the last anchor to the stop, logs it, and exits 0; the
// connect failures are logged once, not per attempt.
func TestStopDuringOutageReportsGap(t *testing.T) {
	r := bridgetest.StartRedis(t)
	addr := httpAddr(t)
	d := startDaemon(t, resilienceEnv(r.Addr, "KEYRELAY_HTTP_ADDR", addr, "KEYRELAY_MARKER_INTERVAL", "200ms",
		"KEYRELAY_LOG_LEVEL", "info"))
	time.Sleep(500 * time.Millisecond) // a few markers come back
	down := time.Now()
	r.Stop()
	time.Sleep(3 * time.Second) // many reconnection attempts
	gapsBefore, _ := metricValue(scrapeMetrics(t, addr), "keyrelay_gaps_total", "reason=stop")
	stopped := time.Now()
	if err := d.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	gaps := ofType(d.records(), "gap")
	if len(gaps) != 1 {
		t.Fatalf("%d gap records, want 1: %+v\n%s", len(gaps), gaps, d.Stderr.String())
	}
	since, until := checkGap(t, gaps[0], "stop")
	if since.After(down) || down.Sub(since) > time.Second {
		t.Errorf("since %s: want within a second before the outage began (%s)", since, down)
	}
	if until.Before(stopped) || until.Sub(stopped) > 5*time.Second {
		t.Errorf("until %s: want the stop (%s)", until, stopped)
	}
	if gapsBefore != 0 {
		t.Errorf("keyrelay_gaps_total{reason=stop} = %v before the stop", gapsBefore)
	}
	if n := strings.Count(d.Stderr.String(), "connect failed"); n != 1 {
		t.Errorf("%d \"connect failed\" lines, want 1 (one per kind of error):\n%s", n, d.Stderr.String())
	}
	if !strings.Contains(d.Stderr.String(), `"reason":"stop"`) {
		t.Errorf("the gap is not logged:\n%s", d.Stderr.String())
	}
}

// TestStopAfterPasswordRotation: the password changes under a running
// keyrelay; its reconnections are refused (WRONGPASS), retried, logged once,
// and the stop reports the window as a gap.
func TestStopAfterPasswordRotation(t *testing.T) {
	r := bridgetest.StartRedis(t, "--requirepass", "old")
	d := startDaemon(t, resilienceEnv(r.Addr, "KEYRELAY_REDIS_URL", "redis://:old@"+r.Addr, "KEYRELAY_LOG_LEVEL", "info"))
	c := redis.NewClient(&redis.Options{Addr: r.Addr, Password: "old", Protocol: 2})
	defer c.Close()
	ctx := context.Background()
	if err := c.ConfigSet(ctx, "requirepass", "new").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ClientKillByFilter(ctx, "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	d.waitLog("WRONGPASS", 10*time.Second)
	time.Sleep(2 * time.Second)
	if err := d.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	gaps := ofType(d.records(), "gap")
	if len(gaps) != 1 || gaps[0].Reason != "stop" {
		t.Fatalf("gap records %+v, want one with reason stop", gaps)
	}
	if n := strings.Count(d.Stderr.String(), "connect failed"); n != 1 {
		t.Errorf("%d \"connect failed\" lines, want 1", n)
	}
}
