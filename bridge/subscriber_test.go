package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The subscriber's state machine, driven through scripted connections: no
// server. What it must get right is the window of every gap record.

// scriptConn is a scripted subscription: the test pushes what Redis would
// send; pings are answered in order when answer is on, like Redis answers a
// PING after everything it queued before it.
type scriptConn struct {
	mu      sync.Mutex
	queue   []scriptItem
	notify  chan struct{}
	closed  bool
	answer  bool
	pings   []string // payloads, in order
	answers []string // payloads answered
	drain   bool     // confirm PUNSUBSCRIBE (a drain completes)
}

type scriptItem struct {
	msg any
	err error
}

func newScriptConn(answer bool) *scriptConn {
	return &scriptConn{notify: make(chan struct{}, 1), answer: answer, drain: true}
}

func (c *scriptConn) push(items ...scriptItem) {
	c.mu.Lock()
	c.queue = append(c.queue, items...)
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// stopAnswering stops answering pings and returns the send time of the last
// one answered.
func (c *scriptConn) stopAnswering(t *testing.T) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.answer = false
	if len(c.answers) == 0 {
		t.Fatal("no ping answered yet")
	}
	ns, err := strconv.ParseInt(strings.TrimPrefix(c.answers[len(c.answers)-1], pingPrefix), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return time.Unix(0, ns)
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

func (c *scriptConn) ReceiveTimeout(ctx context.Context, timeout time.Duration) (any, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		if len(c.queue) > 0 {
			it := c.queue[0]
			c.queue = c.queue[1:]
			c.mu.Unlock()
			return it.msg, it.err
		}
		closed := c.closed
		c.mu.Unlock()
		if closed {
			return nil, errors.New("redis: client is closed")
		}
		select {
		case <-c.notify:
		case <-deadline.C:
			return nil, timeoutError{}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (c *scriptConn) Ping(ctx context.Context, payload ...string) error {
	c.mu.Lock()
	p := payload[0]
	c.pings = append(c.pings, p)
	answer := c.answer
	if answer {
		c.answers = append(c.answers, p)
	}
	c.mu.Unlock()
	if answer {
		c.push(scriptItem{msg: &redis.Pong{Payload: p}})
	}
	return nil
}

func (c *scriptConn) PUnsubscribe(ctx context.Context, patterns ...string) error {
	c.mu.Lock()
	drain := c.drain
	c.mu.Unlock()
	if drain {
		c.push(scriptItem{msg: &redis.Subscription{Kind: "punsubscribe", Count: 0}})
	}
	return nil
}

func (c *scriptConn) Unsubscribe(ctx context.Context, channels ...string) error { return nil }

func (c *scriptConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.push()
	return nil
}

// message is a keyevent notification for key.
func message(key string) scriptItem {
	return scriptItem{msg: &redis.Message{Pattern: "__keyevent@*__:*", Channel: "__keyevent@0__:set", Payload: key}}
}

// recordingSink keeps every record the relay delivers.
type recordingSink struct {
	mu   sync.Mutex
	recs []Record
}

func (s *recordingSink) Name() string                { return "recording" }
func (s *recordingSink) Limits() Limits              { return Limits{MaxEntries: 100, MaxInFlight: 1} }
func (s *recordingSink) EntrySize(e *Entry) int      { return len(e.Body) }
func (s *recordingSink) Check(context.Context) error { return nil }
func (s *recordingSink) Close(context.Context) error { return nil }
func (s *recordingSink) Publish(ctx context.Context, batch []*Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range batch {
		s.recs = append(s.recs, cloneRecord(e.Record)) // a batch's memory is reused after Publish
	}
	return nil
}

// cloneRecord copies r's strings out of the memory they share with a batch.
func cloneRecord(r Record) Record {
	r.ID, r.Key = strings.Clone(r.ID), strings.Clone(r.Key)
	return r
}

func (s *recordingSink) gaps() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Record
	for _, r := range s.recs {
		if r.Type == TypeGap {
			out = append(out, r)
		}
	}
	return out
}

// machine is a subscriber whose sessions come from a script of connections.
type machine struct {
	sub   *Subscriber
	relay *Relay
	sink  *recordingSink

	mu       sync.Mutex
	conns    []*scriptConn
	sessions []*session
	dialErr  error // when the script is out of connections; nil: "connection refused"
}

func newMachine(t *testing.T, cfg SubscriberConfig, conns ...*scriptConn) *machine {
	t.Helper()
	if cfg.Options == nil {
		cfg.Options = &redis.Options{Addr: "node:6379"}
	}
	if cfg.Source == "" {
		cfg.Source = "node:6379"
	}
	if cfg.HealthInterval == 0 {
		cfg.HealthInterval = 50 * time.Millisecond
	}
	cfg.ReconnectMax = 20 * time.Millisecond
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := &machine{sink: &recordingSink{}, conns: conns}
	metrics := NewMetrics(nil)
	m.relay = NewRelay(RelayConfig{BufferRecords: 1000, Overflow: DropNewest, RetryInitial: time.Millisecond, RetryMax: time.Millisecond},
		[]Sink{m.sink}, log, metrics)
	m.relay.Start()
	m.sub = NewSubscriber(cfg, m.relay, log, metrics)
	m.sub.dial = m.dial
	return m
}

func (m *machine) dial(ctx context.Context) (*session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.conns) == 0 {
		if m.dialErr != nil {
			return nil, m.dialErr
		}
		return nil, errors.New("dial tcp node:6379: connect: connection refused")
	}
	c := m.conns[0]
	m.conns = m.conns[1:]
	now := time.Now()
	sess := &session{pubsub: c, moved: make(chan struct{}), start: now.Add(-time.Millisecond), confirmed: now}
	sess.verified.Store(now.UnixNano())
	m.sub.drainOnStop(ctx, sess)
	m.sessions = append(m.sessions, sess)
	return sess, nil
}

func (m *machine) session(t *testing.T, i int) *session {
	t.Helper()
	waitFor(t, fmt.Sprintf("session %d", i), func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.sessions) > i
	})
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sessions[i]
}

// run starts Run; stop ends it and returns its error and the records.
func (m *machine) run() (stop func() (error, []Record)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.sub.Run(ctx) }()
	return func() (error, []Record) {
		cancel()
		err := <-done
		_ = m.relay.Shutdown(context.Background())
		m.sink.mu.Lock()
		defer m.sink.mu.Unlock()
		return err, m.sink.recs
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func onlyGap(t *testing.T, recs []Record, reason string) Record {
	t.Helper()
	var gaps []Record
	for _, r := range recs {
		if r.Type == TypeGap {
			gaps = append(gaps, r)
		}
	}
	if len(gaps) != 1 || gaps[0].Reason != reason {
		t.Fatalf("gaps %+v, want one with reason %s", gaps, reason)
	}
	return gaps[0]
}

// A broken connection: the gap starts at the send time of the last ping
// that came back (not at the last message received), and ends when the next
// subscription is confirmed.
func TestSubscriberGapStartsAtLastAnsweredPing(t *testing.T) {
	c1, c2 := newScriptConn(true), newScriptConn(true)
	m := newMachine(t, SubscriberConfig{}, c1, c2)
	stop := m.run()
	waitFor(t, "two answered pings", func() bool { c1.mu.Lock(); defer c1.mu.Unlock(); return len(c1.answers) >= 2 })
	since := c1.stopAnswering(t)
	c1.push(message("a"), message("b")) // received after the anchor: not the anchor
	time.Sleep(20 * time.Millisecond)
	c1.push(scriptItem{err: io.EOF})
	s2 := m.session(t, 1)
	c2.push(message("c"))
	waitFor(t, "the gap", func() bool { return len(m.sink.gaps()) > 0 })
	err, recs := stop()
	if err != nil {
		t.Fatal(err)
	}
	g := onlyGap(t, recs, GapReconnect)
	if !g.Since.Equal(since) || !g.Until.Equal(s2.confirmed) {
		t.Errorf("gap [%s, %s], want [%s (last answered ping), %s (confirmed)]", g.Since, g.Until, since, s2.confirmed)
	}
	keys := ""
	for _, r := range recs {
		keys += r.Key
	}
	if keys != "abc" {
		t.Errorf("keys %q, want abc", keys)
	}
}

// Nothing arrives and pings stay unanswered: dead after twice the health
// interval; the window starts at the subscription request.
func TestSubscriberPingTimeout(t *testing.T) {
	c1, c2 := newScriptConn(false), newScriptConn(true)
	m := newMachine(t, SubscriberConfig{}, c1, c2)
	stop := m.run()
	s1 := m.session(t, 0)
	m.session(t, 1)
	err, recs := stop()
	if err != nil {
		t.Fatal(err)
	}
	if g := onlyGap(t, recs, GapReconnect); !g.Since.Equal(s1.start) {
		t.Errorf("since %s, want the first subscription's request %s", g.Since, s1.start)
	}
}

// A connection that reached MaxConnectionAge is replaced: reason planned.
func TestSubscriberPlannedReconnect(t *testing.T) {
	m := newMachine(t, SubscriberConfig{MaxConnectionAge: 100 * time.Millisecond}, newScriptConn(true), newScriptConn(true))
	stop := m.run()
	m.session(t, 1)
	_, recs := stop()
	onlyGap(t, recs, GapPlanned)
}

// The failover watcher found the node demoted: reason failover, since the
// node was last verified as the primary when that is before the anchor.
func TestSubscriberFailover(t *testing.T) {
	c1 := newScriptConn(true)
	m := newMachine(t, SubscriberConfig{}, c1, newScriptConn(true))
	stop := m.run()
	s1 := m.session(t, 0)
	waitFor(t, "an answered ping", func() bool { c1.mu.Lock(); defer c1.mu.Unlock(); return len(c1.answers) >= 1 })
	verified := s1.start.Add(-time.Second)
	s1.verified.Store(verified.UnixNano())
	s1.why = fmt.Errorf("%w: it is now a slave", errFailover)
	close(s1.moved)
	_ = c1.Close()
	m.session(t, 1)
	_, recs := stop()
	if g := onlyGap(t, recs, GapFailover); !g.Since.Equal(verified) {
		t.Errorf("since %s, want the last verification %s", g.Since, verified)
	}
}

// A stop while reconnecting: a stop gap from the last anchor to the stop.
func TestSubscriberStopWhileDisconnected(t *testing.T) {
	c1 := newScriptConn(true)
	m := newMachine(t, SubscriberConfig{}, c1)
	stop := m.run()
	waitFor(t, "an answered ping", func() bool { c1.mu.Lock(); defer c1.mu.Unlock(); return len(c1.answers) >= 1 })
	since := c1.stopAnswering(t)
	c1.push(scriptItem{err: io.EOF})
	time.Sleep(100 * time.Millisecond) // failed reconnections
	before := time.Now()
	err, recs := stop()
	if err != nil {
		t.Fatal(err)
	}
	g := onlyGap(t, recs, GapStop)
	if !g.Since.Equal(since) || g.Until.Before(before) {
		t.Errorf("stop gap [%s, %s], want [%s, the stop]", g.Since, g.Until, since)
	}
}

// A refused password before the first subscription ends Run with an error
// that says so; the time since the start is a stop gap.
func TestSubscriberPermanentErrorAtStart(t *testing.T) {
	m := newMachine(t, SubscriberConfig{})
	m.dialErr = redisErr("WRONGPASS invalid username-password pair or user is disabled.")
	stop := m.run()
	waitFor(t, "the stop gap", func() bool { return len(m.sink.gaps()) > 0 })
	err, recs := stop()
	if !errors.Is(err, ErrRedisAuth) {
		t.Fatalf("Run = %v, want ErrRedisAuth", err)
	}
	onlyGap(t, recs, GapStop)
}

// A stop while subscribed drains: no gap.
func TestSubscriberDrainOnStop(t *testing.T) {
	c1 := newScriptConn(true)
	m := newMachine(t, SubscriberConfig{}, c1)
	stop := m.run()
	m.session(t, 0)
	c1.push(message("k"))
	time.Sleep(20 * time.Millisecond)
	err, recs := stop()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Key != "k" {
		t.Errorf("records %+v, want k and no gap", recs)
	}
}

// A cluster node demoted: Run ends with ErrNodeLeft and no gap (the
// reconciler reports it), its final anchor kept.
func TestSubscriberClusterNodeLeaves(t *testing.T) {
	c1 := newScriptConn(true)
	m := newMachine(t, SubscriberConfig{NodeID: "n1"}, c1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.sub.Run(ctx) }()
	s1 := m.session(t, 0)
	waitFor(t, "an answered ping", func() bool { c1.mu.Lock(); defer c1.mu.Unlock(); return len(c1.answers) >= 1 })
	since := c1.stopAnswering(t)
	s1.verified.Store(time.Now().UnixNano()) // verified after the anchor: the anchor bounds the window
	s1.why = fmt.Errorf("%w: it is now a slave", errFailover)
	close(s1.moved)
	_ = c1.Close()
	if err := <-done; !errors.Is(err, ErrNodeLeft) {
		t.Fatalf("Run = %v, want ErrNodeLeft", err)
	}
	if a := m.sub.FinalAnchor(); !a.Equal(since) || !m.sub.EndedSubscribed() {
		t.Errorf("final anchor %s (live end %v), want %s", a, m.sub.EndedSubscribed(), since)
	}
	if gaps := m.sink.gaps(); len(gaps) > 0 {
		t.Errorf("gaps %+v, want none", gaps)
	}
}
