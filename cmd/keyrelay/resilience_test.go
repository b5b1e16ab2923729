//go:build integration

package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyrelay/keyrelay/bridge/bridgetest"
)

// The tests in this file run keyrelay in-process against real redis-server
// processes and break things under it: a killed subscription, a restarted
// server, a blackholed connection, a primary/replica swap behind the
// endpoint, a stuck and a slow stdout. Each proves that no loss goes
// unreported (exactly one gap record per incident) and that events flow
// again afterwards.

// resilienceEnv is the configuration every test starts from: fast health and
// failover checks so that incidents resolve in well under a second.
func resilienceEnv(redisAddr string, extra ...string) map[string]string {
	env := map[string]string{
		"KEYRELAY_REDIS_URL":                     "redis://" + redisAddr,
		"KEYRELAY_SINKS":                         "stdout",
		"KEYRELAY_REDIS_HEALTH_INTERVAL":         "200ms",
		"KEYRELAY_REDIS_FAILOVER_CHECK_INTERVAL": "300ms",
	}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	return env
}

// maxGapWindow is the contract's bound on a reconnection: "reconnection
// within 2 seconds".
const maxGapWindow = 2 * time.Second

// recordTimeRE is RFC 3339, UTC, with microseconds.
var recordTimeRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$`)

// newWriter returns a client for the test's writes that never retries a
// command on its own, so that one successful SET is exactly one event.
func newWriter(t *testing.T, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	return c
}

// streamWrite is one successful SET of a keyStream.
type streamWrite struct {
	key   string
	start time.Time // when the SET was sent
}

// keyStream writes SET <prefix><n> one after another, a few hundred per
// second, and remembers when each successful write began. Failed writes
// (server down) are not remembered: they caused no event.
type keyStream struct {
	stop chan struct{}
	done chan struct{}

	mu     sync.Mutex
	writes []streamWrite
}

func startStream(t *testing.T, c *redis.Client, prefix string) *keyStream {
	s := &keyStream{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for n := 0; ; n++ {
			select {
			case <-s.stop:
				return
			default:
			}
			key := prefix + strconv.Itoa(n)
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := c.Set(ctx, key, "v", 0).Err()
			cancel()
			if err == nil {
				s.mu.Lock()
				s.writes = append(s.writes, streamWrite{key, start})
				s.mu.Unlock()
			} else {
				time.Sleep(20 * time.Millisecond) // server down: do not spin
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { s.Stop() })
	return s
}

// after returns how many successful writes began after t.
func (s *keyStream) after(t time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, w := range s.writes {
		if w.start.After(t) {
			n++
		}
	}
	return n
}

// Stop ends the stream and returns its successful writes.
func (s *keyStream) Stop() []streamWrite {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]streamWrite(nil), s.writes...)
}

// ofType returns the records of one type.
func ofType(recs []testRecord, typ string) []testRecord {
	var out []testRecord
	for _, r := range recs {
		if r.Type == typ {
			out = append(out, r)
		}
	}
	return out
}

// keysOf returns how often each key occurs among the key events for event.
func keysOf(recs []testRecord, event string) map[string]int {
	out := map[string]int{}
	for _, r := range recs {
		if r.Type == "keyevent" && r.Event == event && r.Key != nil {
			out[*r.Key]++
		}
	}
	return out
}

// hasKeys reports whether recs hold a set record of every key of keys.
func hasKeys(recs []testRecord, keys []string) bool {
	got := keysOf(recs, "set")
	for _, k := range keys {
		if got[k] == 0 {
			return false
		}
	}
	return true
}

// checkGap checks a gap record's shape and returns its window.
func checkGap(t *testing.T, g testRecord, reason string) (since, until time.Time) {
	t.Helper()
	if g.Reason != reason {
		t.Errorf("gap reason = %q, want %q (%+v)", g.Reason, reason, g)
	}
	for name, v := range map[string]string{"time": g.Time, "since": g.Since, "until": g.Until} {
		if !recordTimeRE.MatchString(v) {
			t.Errorf("gap %s = %q, want RFC 3339 UTC with microseconds", name, v)
		}
	}
	if g.ID == "" || g.Source == "" {
		t.Errorf("gap record without id or source: %+v", g)
	}
	var err error
	if since, err = time.Parse(time.RFC3339Nano, g.Since); err != nil {
		t.Fatalf("gap since: %v", err)
	}
	if until, err = time.Parse(time.RFC3339Nano, g.Until); err != nil {
		t.Fatalf("gap until: %v", err)
	}
	if until.Before(since) {
		t.Errorf("gap until %s is before since %s", g.Until, g.Since)
	}
	return since, until
}

// checkUnique fails on records delivered twice (same id) and on keys of a
// stream delivered more than once.
func checkUnique(t *testing.T, recs []testRecord, event string) {
	t.Helper()
	ids := map[string]bool{}
	for _, r := range recs {
		if ids[r.ID] {
			t.Errorf("record %s delivered twice", r.ID)
		}
		ids[r.ID] = true
	}
	for k, n := range keysOf(recs, event) {
		if n > 1 {
			t.Errorf("%s %q delivered %d times", event, k, n)
		}
	}
}

// testReconnect runs a steady stream of writes, breaks the subscription with
// breakIt and checks the contract: exactly one gap record with reason
// reconnect whose window is under two seconds, and every event written
// after reception resumed is delivered, once.
func testReconnect(t *testing.T, r *bridgetest.Redis, endpoint string, breakIt func(t *testing.T)) (testRecord, *daemon) {
	d := startDaemon(t, resilienceEnv(endpoint, "KEYRELAY_EVENTS", "set"))
	stream := startStream(t, newWriter(t, r.Addr), "stream:")
	d.waitRecords(10*time.Second, func(recs []testRecord) bool { return len(keysOf(recs, "set")) >= 30 })

	breakIt(t)

	recs := d.waitRecords(15*time.Second, func(recs []testRecord) bool { return len(ofType(recs, "gap")) > 0 })
	gap := ofType(recs, "gap")[0]
	since, until := checkGap(t, gap, "reconnect")
	if w := until.Sub(since); w >= maxGapWindow {
		t.Errorf("gap window %s (since %s, until %s): want a reconnection within %s", w, gap.Since, gap.Until, maxGapWindow)
	}
	// Keep writing for a while after reception resumed.
	waitUntil(t, 10*time.Second, "writes after the reconnection", func() bool { return stream.after(until) >= 50 })
	writes := stream.Stop()

	var want []string
	for _, w := range writes {
		if w.start.After(until) {
			want = append(want, w.key)
		}
	}
	recs = d.waitRecords(10*time.Second, func(recs []testRecord) bool {
		return hasKeys(recs, want)
	})
	if gaps := ofType(recs, "gap"); len(gaps) != 1 {
		t.Errorf("%d gap records, want exactly 1: %+v", len(gaps), gaps)
	}
	checkUnique(t, recs, "set")
	if n := strings.Count(d.Stderr.String(), `"msg":"subscribed"`); n != 2 {
		t.Errorf("logged %d subscriptions, want 2 (the first and one reconnection)", n)
	}
	return gap, d
}

// TestResilienceClientKill: CLIENT KILL TYPE pubsub during a steady stream.
func TestResilienceClientKill(t *testing.T) {
	r := bridgetest.StartRedis(t)
	testReconnect(t, r, r.Addr, func(t *testing.T) {
		n, err := r.Client(0).ClientKillByFilter(context.Background(), "TYPE", "pubsub").Result()
		if err != nil || n < 1 {
			t.Fatalf("CLIENT KILL TYPE pubsub = %d, %v; want keyrelay's subscription killed", n, err)
		}
	})
}

// TestResilienceRestart: redis-server restarted during a steady stream.
func TestResilienceRestart(t *testing.T) {
	r := bridgetest.StartRedis(t)
	testReconnect(t, r, r.Addr, func(t *testing.T) { r.Restart() })
}

// TestResilienceStall: the subscription's connection stops carrying bytes
// without closing (a blackholed peer). keyrelay must notice from the missing
// answer to its ping, within seconds, not when TCP gives up minutes later.
func TestResilienceStall(t *testing.T) {
	r := bridgetest.StartRedis(t)
	fwd := bridgetest.StartForwarder(t, r.Addr)
	_, d := testReconnect(t, r, fwd.Addr, func(t *testing.T) {
		if n := fwd.Stall(); n < 1 {
			t.Fatalf("stalled %d connections, want keyrelay's subscription", n)
		}
	})
	if !strings.Contains(d.Stderr.String(), "no answer to ping") {
		t.Errorf("the log does not say that the ping went unanswered")
	}
}

// redisInfo returns one field of INFO.
func redisInfo(t *testing.T, c *redis.Client, section, field string) string {
	t.Helper()
	info, err := c.Info(context.Background(), section).Result()
	if err != nil {
		t.Fatalf("INFO %s: %v", section, err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// replicaOf makes c a replica of primary (nil: a primary) and, for a replica,
// waits until its link is up.
func replicaOf(t *testing.T, c *redis.Client, primary *bridgetest.Redis) {
	t.Helper()
	ctx := context.Background()
	if primary == nil {
		if err := c.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
			t.Fatalf("REPLICAOF NO ONE: %v", err)
		}
		return
	}
	if err := c.Do(ctx, "REPLICAOF", "127.0.0.1", primary.Port).Err(); err != nil {
		t.Fatalf("REPLICAOF: %v", err)
	}
	waitUntil(t, 10*time.Second, "replication link up", func() bool {
		return redisInfo(t, c, "replication", "master_link_status") == "up"
	})
}

// delWatcher subscribes directly to a node's del notifications: the control
// that proves the old node does publish replica-flavoured events, so that
// their absence from keyrelay's output means something.
type delWatcher struct {
	mu   sync.Mutex
	keys map[string]bool
}

func watchDels(t *testing.T, c *redis.Client) *delWatcher {
	w := &delWatcher{keys: map[string]bool{}}
	ps := c.PSubscribe(context.Background(), "__keyevent@*__:del")
	if _, err := ps.Receive(context.Background()); err != nil {
		t.Fatalf("control psubscribe: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := ps.ReceiveMessage(context.Background())
			if err != nil {
				return
			}
			w.mu.Lock()
			w.keys[m.Payload] = true
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() { ps.Close(); <-done })
	return w
}

func (w *delWatcher) has(keys []string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, k := range keys {
		if !w.keys[k] {
			return false
		}
	}
	return true
}

// failoverPair starts A (primary) and B (replica of A), a forwarder to A as
// the endpoint, and keyrelay on the endpoint forwarding expired and del
// events. It checks that expirations on A come through as expired.
func failoverPair(t *testing.T) (a, b *bridgetest.Redis, fwd *bridgetest.Forwarder, d *daemon) {
	// No waiting for more replicas before a full synchronisation.
	nodelay := []string{"--repl-diskless-sync-delay", "0"}
	a = bridgetest.StartRedis(t, nodelay...)
	b = bridgetest.StartRedis(t, append(nodelay, "--replicaof", "127.0.0.1", strconv.Itoa(a.Port))...)
	waitUntil(t, 10*time.Second, "B replicating A", func() bool {
		return redisInfo(t, b.Client(0), "replication", "master_link_status") == "up"
	})
	fwd = bridgetest.StartForwarder(t, a.Addr)
	d = startDaemon(t, resilienceEnv(fwd.Addr, "KEYRELAY_EVENTS", "expired,del"))
	aID := redisInfo(t, a.Client(0), "server", "run_id")
	if !strings.Contains(d.Stderr.String(), `"run_id":"`+aID+`"`) {
		t.Fatalf("keyrelay did not subscribe on A (run_id %s)", aID)
	}
	if err := a.Client(0).Set(context.Background(), "before", "v", 50*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	d.waitRecords(10*time.Second, func(recs []testRecord) bool { return keysOf(recs, "expired")["before"] == 1 })
	return a, b, fwd, d
}

// expireOn sets n keys named prefix<i> with a short TTL on c and returns them.
func expireOn(t *testing.T, c *redis.Client, prefix string, n int) []string {
	t.Helper()
	var keys []string
	for i := range n {
		k := prefix + strconv.Itoa(i)
		if err := c.Set(context.Background(), k, "v", 100*time.Millisecond).Err(); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	return keys
}

// checkAfterFailover checks that keyrelay is subscribed on B: keys expiring
// on B arrive as expired, once, while the del events the old node A
// publishes for them (seen by a direct control subscriber) are not
// forwarded.
func checkAfterFailover(t *testing.T, a, b *bridgetest.Redis, d *daemon, control *delWatcher, prefix string) {
	t.Helper()
	bID := redisInfo(t, b.Client(0), "server", "run_id")
	d.waitLog(`"run_id":"`+bID+`"`, 10*time.Second)
	keys := expireOn(t, b.Client(0), prefix, 20)
	recs := d.waitRecords(10*time.Second, func(recs []testRecord) bool {
		got := keysOf(recs, "expired")
		for _, k := range keys {
			if got[k] == 0 {
				return false
			}
		}
		return true
	})
	waitUntil(t, 10*time.Second, "the old node publishing del for the expired keys", func() bool { return control.has(keys) })
	// keyrelay would have read A's dels about when the control did; give its
	// batching a moment before checking that none was forwarded.
	time.Sleep(300 * time.Millisecond)
	recs = d.records()
	dels := keysOf(recs, "del")
	for _, k := range keys {
		if dels[k] > 0 {
			t.Errorf("del %q from the old node was forwarded after the move", k)
		}
	}
	checkUnique(t, recs, "expired")
	gaps := ofType(recs, "gap")
	if len(gaps) != 1 {
		t.Fatalf("%d gap records, want exactly 1: %+v", len(gaps), gaps)
	}
	checkGap(t, gaps[0], "failover")
}

// TestResilienceFailover: the endpoint moves from A to B while A is demoted
// to a replica of B, as in an ElastiCache failover. The open subscription
// stays on A (now a replica, publishing del instead of expired); keyrelay must
// notice, move to B, report the switch with one gap record, and forward B's
// expired events and none of A's dels.
func TestResilienceFailover(t *testing.T) {
	a, b, fwd, d := failoverPair(t)

	replicaOf(t, b.Client(0), nil)
	control := watchDels(t, a.Client(0))
	replicaOf(t, a.Client(0), b)
	demoted := time.Now()
	fwd.SetTarget(b.Addr)

	d.waitLog("failover:", 10*time.Second)
	checkAfterFailover(t, a, b, d, control, "after:")
	// The gap starts no later than the demotion: from the last moment the
	// endpoint was known to name A as its primary.
	for _, g := range ofType(d.records(), "gap") {
		since, err := time.Parse(time.RFC3339Nano, g.Since)
		if err != nil || since.After(demoted) {
			t.Errorf("failover gap since %s (%v), after the demotion at %s", g.Since, err, demoted.UTC().Format(time.RFC3339Nano))
		}
	}
	waitUntil(t, 10*time.Second, "no connection left open to the old node", func() bool { return fwd.Conns()[a.Addr] == 0 })
}

// TestResilienceFailoverDemotedFirst: the subscribed node is demoted to a
// replica, but the endpoint still names it for a while (DNS moves later).
// keyrelay must leave the replica at once, rather than forward its
// replica-flavoured events (del for expired, no expired at all) as if
// nothing happened, and subscribe to the new primary when the endpoint
// names it, with one gap record covering the time without a primary.
func TestResilienceFailoverDemotedFirst(t *testing.T) {
	a, b, fwd, d := failoverPair(t)

	replicaOf(t, b.Client(0), nil)
	control := watchDels(t, a.Client(0))
	replicaOf(t, a.Client(0), b)

	d.waitLog("no longer a primary", 10*time.Second)
	// While the endpoint still names A, expirations on B show up on A as del;
	// keyrelay must not forward them.
	during := expireOn(t, b.Client(0), "during:", 10)
	waitUntil(t, 10*time.Second, "the old node publishing del for keys expiring on B", func() bool { return control.has(during) })
	time.Sleep(300 * time.Millisecond)
	if got := keysOf(d.records(), "del"); len(got) > 0 {
		t.Errorf("forwarded del events from the demoted node: %v", got)
	}
	if n := len(ofType(d.records(), "gap")); n != 0 {
		t.Errorf("%d gap records before reception resumed, want 0", n)
	}

	fwd.SetTarget(b.Addr)
	checkAfterFailover(t, a, b, d, control, "after:")
}

// gateWriter is a stdout that blocks every Write until it is opened: a
// terminal nobody reads. Then it passes everything on to out.
type gateWriter struct {
	out     io.Writer
	open    chan struct{}
	waiting atomic.Int64 // Writes blocked now
}

func (g *gateWriter) Write(p []byte) (int, error) {
	g.waiting.Add(1)
	<-g.open
	g.waiting.Add(-1)
	return g.out.Write(p)
}

// httpEnv returns a free KEYRELAY_HTTP_ADDR.
func httpAddr(t *testing.T) string {
	return "127.0.0.1:" + strconv.Itoa(bridgetest.FreePort(t))
}

// writeKeys writes SET prefix<i> for i < n in pipelines and returns the keys.
func writeKeys(t *testing.T, c *redis.Client, prefix string, n int) []string {
	t.Helper()
	keys := make([]string, 0, n)
	for i := 0; i < n; {
		pipe := c.Pipeline()
		for j := 0; j < 500 && i < n; i, j = i+1, j+1 {
			k := prefix + strconv.Itoa(i)
			pipe.Set(context.Background(), k, "v", 0)
			keys = append(keys, k)
		}
		if _, err := pipe.Exec(context.Background()); err != nil {
			t.Fatalf("write %s…: %v", prefix, err)
		}
	}
	return keys
}

// TestResilienceOverflow: the sink is stuck and the buffer holds 10 records.
// The reader keeps reading, the buffer drops what does not fit, and once
// the sink moves again a gap record with reason overflow reports exactly
// the dropped count, which the metric also shows; every received record is
// either delivered or dropped.
func TestResilienceOverflow(t *testing.T) {
	r := bridgetest.StartRedis(t)
	addr := httpAddr(t)
	gate := &gateWriter{open: make(chan struct{})}
	d := startDaemonTo(t, resilienceEnv(r.Addr,
		"KEYRELAY_EVENTS", "set", "KEYRELAY_BUFFER_RECORDS", "10", "KEYRELAY_HTTP_ADDR", addr),
		func(buf *syncBuffer) io.Writer { gate.out = buf; return gate })
	released := false
	release := func() {
		if !released {
			released = true
			close(gate.open)
		}
	}
	t.Cleanup(release)

	const n = 300
	c := newWriter(t, r.Addr)
	burst := writeKeys(t, c, "burst:", n)
	var m []metricSample
	waitUntil(t, 10*time.Second, "all notifications received while the sink is stuck", func() bool {
		m = scrapeMetrics(t, addr)
		v, _ := metricValue(m, "keyrelay_notifications_received_total", "event=set")
		return v == n && gate.waiting.Load() > 0
	})
	// The reader counts a notification just before it buffers or drops it:
	// the drops are checked in full at the end.
	if dropped, _ := metricValue(m, "keyrelay_records_dropped_total", "sink=stdout", "reason=overflow"); dropped <= 0 {
		t.Fatalf("no records dropped with a stuck sink and a buffer of 10")
	}
	if buffered, _ := metricValue(m, "keyrelay_buffer_records", "sink=stdout"); buffered > 10 {
		t.Errorf("keyrelay_buffer_records = %v with a stuck sink, want at most 10 (the bound)", buffered)
	}
	if d.Stdout.String() != "" {
		t.Fatalf("records written through a stuck stdout")
	}

	release()
	// The overflow episode ends, and its gap record is written, when a
	// record fits into the buffer again: keep events coming, as on a live
	// cache.
	later := writeKeys(t, c, "later:", 5)
	recs := d.waitRecords(10*time.Second, func(recs []testRecord) bool {
		return hasKeys(recs, later) && len(ofType(recs, "gap")) > 0
	})
	gaps := ofType(recs, "gap")
	if len(gaps) != 1 {
		t.Fatalf("%d gap records, want 1: %+v", len(gaps), gaps)
	}
	checkGap(t, gaps[0], "overflow")
	checkUnique(t, recs, "set")

	m = scrapeMetrics(t, addr)
	received, _ := metricValue(m, "keyrelay_notifications_received_total", "event=set")
	dropped, _ := metricValue(m, "keyrelay_records_dropped_total", "sink=stdout", "reason=overflow")
	allDropped, _ := metricValue(m, "keyrelay_records_dropped_total", "sink=stdout")
	delivered, _ := metricValue(m, "keyrelay_records_delivered_total", "sink=stdout")
	events := len(ofType(recs, "keyevent"))
	if float64(gaps[0].Dropped) != dropped || dropped <= 0 {
		t.Errorf("gap record dropped = %d, metric keyrelay_records_dropped_total{reason=overflow} = %v", gaps[0].Dropped, dropped)
	}
	if received != n+5 {
		t.Errorf("received %v notifications, want %d", received, n+5)
	}
	if float64(events)+allDropped != received {
		t.Errorf("received %v != delivered %d + dropped %v", received, events, allDropped)
	}
	if delivered != float64(len(recs)) {
		t.Errorf("keyrelay_records_delivered_total = %v, but %d records were written", delivered, len(recs))
	}
	if got := keysOf(recs, "set"); float64(len(got)) != float64(len(burst)+len(later))-dropped {
		t.Errorf("%d distinct keys delivered, want %v", len(got), float64(len(burst)+len(later))-dropped)
	}
}

// slowWriter is a stdout that takes 5 ms per KiB: a slow terminal or pipe.
type slowWriter struct{ out io.Writer }

func (s slowWriter) Write(p []byte) (int, error) {
	time.Sleep(time.Duration(len(p)) * 5 * time.Millisecond / 1024)
	return s.out.Write(p)
}

// TestResilienceTermDrains: SIGTERM while thousands of records wait for a
// slow sink. run returns nil (exit status 0) only after every record
// received before the stop was written.
func TestResilienceTermDrains(t *testing.T) {
	r := bridgetest.StartRedis(t)
	addr := httpAddr(t)
	d := startDaemonTo(t, resilienceEnv(r.Addr, "KEYRELAY_EVENTS", "set", "KEYRELAY_HTTP_ADDR", addr),
		func(buf *syncBuffer) io.Writer { return slowWriter{buf} })

	const n = 5000
	keys := writeKeys(t, newWriter(t, r.Addr), "term:", n)
	var m []metricSample
	waitUntil(t, 20*time.Second, "all notifications received", func() bool {
		m = scrapeMetrics(t, addr)
		v, _ := metricValue(m, "keyrelay_notifications_received_total", "event=set")
		return v == n
	})
	if buffered, _ := metricValue(m, "keyrelay_buffer_records", "sink=stdout"); buffered < 1000 {
		t.Fatalf("only %v records buffered at the stop; the test needs thousands", buffered)
	}

	err := d.Stop()
	if err != nil || exitCode(err, io.Discard) != 0 {
		t.Fatalf("run returned %v (exit status %d), want nil (0)", err, exitCode(err, io.Discard))
	}
	recs := d.records()
	got := keysOf(recs, "set")
	missing := 0
	for _, k := range keys {
		if got[k] == 0 {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d records not written before run returned", missing, n)
	}
	checkUnique(t, recs, "set")
	if gaps := ofType(recs, "gap"); len(gaps) > 0 {
		t.Errorf("gap records on a clean stop: %+v", gaps)
	}
	if strings.Contains(d.Stderr.String(), "records not delivered") {
		t.Errorf("the log reports undelivered records")
	}
}

// TestResilienceHTTP: /healthz, /readyz and /metrics through a Redis outage.
func TestResilienceHTTP(t *testing.T) {
	r := bridgetest.StartRedis(t)
	addr := httpAddr(t)
	d := startDaemon(t, resilienceEnv(r.Addr, "KEYRELAY_HTTP_ADDR", addr))
	base := "http://" + addr
	expect := func(path string, code int, body string) {
		t.Helper()
		waitUntil(t, 10*time.Second, fmt.Sprintf("GET %s → %d %q", path, code, body), func() bool {
			c, b := getHTTP(base + path)
			return c == code && strings.Contains(b, body)
		})
	}
	expect("/healthz", http.StatusOK, "ok")
	expect("/readyz", http.StatusOK, "ready")

	if err := r.Client(0).Set(context.Background(), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	d.waitRecords(10*time.Second, func(recs []testRecord) bool { return keysOf(recs, "set")["k"] == 1 })
	m := scrapeMetrics(t, addr)
	if v, _ := metricValue(m, "keyrelay_subscription_connected"); v != 1 {
		t.Errorf("keyrelay_subscription_connected = %v while subscribed, want 1", v)
	}
	// Counters exist at 0 before their first increase, or increase() and
	// rate() alerts would miss that increase.
	if v, ok := metricValue(m, "keyrelay_subscription_reconnects_total", "reason=reconnect"); !ok || v != 0 {
		t.Errorf("keyrelay_subscription_reconnects_total{reason=reconnect} = %v (exported: %v) before any reconnection, want 0", v, ok)
	}
	if v, _ := metricValue(m, "keyrelay_last_notification_timestamp_seconds"); math.Abs(float64(time.Now().Unix())-v) > 60 {
		t.Errorf("keyrelay_last_notification_timestamp_seconds = %v after a notification, want about %d", v, time.Now().Unix())
	}

	r.Stop()
	expect("/readyz", http.StatusServiceUnavailable, "not subscribed")
	if c, b := getHTTP(base + "/healthz"); c != http.StatusOK {
		t.Errorf("/healthz while Redis is down = %d %s, want 200: the process is alive", c, b)
	}
	if v, _ := metricValue(scrapeMetrics(t, addr), "keyrelay_subscription_connected"); v != 0 {
		t.Errorf("keyrelay_subscription_connected = %v while Redis is down, want 0", v)
	}

	r.Start()
	expect("/readyz", http.StatusOK, "ready")
	if err := r.Client(0).Set(context.Background(), "k2", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	recs := d.waitRecords(10*time.Second, func(recs []testRecord) bool { return keysOf(recs, "set")["k2"] == 1 })
	if gaps := ofType(recs, "gap"); len(gaps) != 1 {
		t.Errorf("%d gap records after one outage, want 1", len(gaps))
	}

	m = scrapeMetrics(t, addr)
	for _, want := range []struct {
		name   string
		labels []string
		value  float64 // -1: any
	}{
		{"keyrelay_notifications_received_total", []string{"event=set"}, 2},
		{"keyrelay_notifications_ignored_total", nil, -1},
		{"keyrelay_notifications_undecodable_total", nil, 0},
		{"keyrelay_records_delivered_total", []string{"sink=stdout"}, 3},
		{"keyrelay_gaps_total", []string{"reason=reconnect"}, 1},
		{"keyrelay_buffer_records", []string{"sink=stdout"}, 0},
		{"keyrelay_buffer_bytes", []string{"sink=stdout"}, 0},
		{"keyrelay_batch_size_count", []string{"sink=stdout"}, -1},
		{"keyrelay_publish_duration_seconds_count", []string{"sink=stdout"}, -1},
		{"keyrelay_sink_up", []string{"sink=stdout"}, 1},
		{"keyrelay_subscription_connected", nil, 1},
		{"keyrelay_subscription_reconnects_total", []string{"reason=reconnect"}, 1},
		{"keyrelay_last_notification_timestamp_seconds", nil, -1},
		{"keyrelay_buffer_capacity_records", []string{"sink=stdout"}, 100000},
		{"keyrelay_buffer_capacity_bytes", []string{"sink=stdout"}, 67108864},
		{"keyrelay_build_info", []string{"goversion=" + runtime.Version()}, 1},
	} {
		v, ok := metricValue(m, want.name, want.labels...)
		switch {
		case !ok:
			t.Errorf("/metrics has no %s%v", want.name, want.labels)
		case want.value >= 0 && v != want.value:
			t.Errorf("%s%v = %v, want %v", want.name, want.labels, v, want.value)
		}
	}
}
