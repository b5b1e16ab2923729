package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// SubscriberConfig configures the subscription to one Redis node.
type SubscriberConfig struct {
	// Options for the node: address, credentials, TLS. The subscriber copies
	// it and sets what a subscription needs (RESP2, no maintenance
	// notifications, no pool).
	Options *redis.Options
	// Source is the host:port written into records.
	Source   string
	Patterns []string
	Filter   Filter
	// HealthInterval: after this long without any message the subscriber
	// pings; after twice this long without an answer the connection is dead.
	HealthInterval time.Duration
	// FailoverInterval: how often a fresh connection through the endpoint
	// checks that it still names the node the subscription is on; 0 disables.
	FailoverInterval time.Duration
	// ReconnectMax caps the back-off between failed connection attempts.
	ReconnectMax time.Duration
	// MaxConnectionAge, when positive, makes the subscriber move to a new
	// connection before the old one is this old, in a planned way (with a
	// gap record, reason "planned"): ElastiCache cuts IAM-authenticated
	// connections after 12 hours.
	MaxConnectionAge time.Duration
}

// Subscriber holds one subscription to one node, decodes what it receives and
// emits records into a Relay. It reconnects on its own and reports every
// window in which events may have been missed as a gap record. Several
// subscribers (one per primary, in cluster mode) can share one Relay.
type Subscriber struct {
	cfg     SubscriberConfig
	relay   *Relay
	log     *slog.Logger
	metrics *Metrics

	mu        sync.Mutex
	connected bool
	beat      atomic.Int64 // unix nanoseconds of the reader loop's last turn
}

// NewSubscriber returns a subscriber; Run starts it.
func NewSubscriber(cfg SubscriberConfig, relay *Relay, log *slog.Logger, m *Metrics) *Subscriber {
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = time.Second
	}
	if cfg.ReconnectMax <= 0 {
		cfg.ReconnectMax = 5 * time.Second
	}
	s := &Subscriber{cfg: cfg, relay: relay, log: log.With("node", cfg.Source), metrics: m}
	s.beat.Store(time.Now().UnixNano())
	// Export every series from the start, so that the first reconnection
	// is an increase a rate() or increase() alert can see.
	m.Connected.WithLabelValues(cfg.Source).Set(0)
	for _, reason := range []string{GapReconnect, GapFailover, GapPlanned} {
		m.Reconnects.WithLabelValues(cfg.Source, reason)
	}
	return s
}

// Connected reports whether the subscription is established.
func (s *Subscriber) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connected
}

func (s *Subscriber) setConnected(c bool) {
	s.mu.Lock()
	s.connected = c
	s.mu.Unlock()
	v := 0.0
	if c {
		v = 1
	}
	s.metrics.Connected.WithLabelValues(s.cfg.Source).Set(v)
}

// errFailover ends a session whose node is no longer the primary the
// endpoint names: the endpoint moved, or the node was demoted.
var errFailover = errors.New("bridge: the subscribed node is no longer the endpoint's primary")

// errPlanned ends a session that reached MaxConnectionAge.
var errPlanned = errors.New("bridge: connection reached its maximum age")

// Run subscribes and reads until ctx is cancelled; it returns nil then. It
// returns an error only for a failure that retrying cannot fix (a refused
// AUTH or missing channel permission before the first subscription).
func (s *Subscriber) Run(ctx context.Context) error {
	var lastAlive time.Time // the last moment events were surely received
	reason := GapReconnect
	lastErr := "" // of the previous failed attempt: log a state change once
	for attempt := 0; ; attempt++ {
		s.beat.Store(time.Now().UnixNano())
		if ctx.Err() != nil {
			return nil
		}
		sess, err := s.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if lastAlive.IsZero() && isPermanentRedisError(err) {
				return err
			}
			d := backoff(100*time.Millisecond, s.cfg.ReconnectMax, attempt+1)
			level := slog.LevelWarn
			if err.Error() == lastErr {
				level = slog.LevelDebug // the same failure again: not a new state
			}
			lastErr = err.Error()
			s.log.Log(ctx, level, "subscription: connect failed, retrying", "err", err,
				"attempt", attempt+1, "retry_in", d.Round(time.Millisecond).String())
			sleepCtx(ctx, d)
			continue
		}
		attempt, lastErr = -1, ""
		now := time.Now()
		if !lastAlive.IsZero() {
			s.metrics.Reconnects.WithLabelValues(s.cfg.Source, reason).Inc()
			s.relay.EmitGap(s.cfg.Source, reason, lastAlive, now)
		}
		s.setConnected(true)
		s.log.Info("subscribed", "patterns", s.cfg.Patterns, "node_id", sess.nodeID)
		lastAlive, err = s.read(ctx, sess)
		s.setConnected(false)
		sess.close()
		if ctx.Err() != nil {
			return nil
		}
		reason = GapReconnect
		switch {
		case errors.Is(err, errFailover):
			reason = GapFailover
			// Events may have been missed (or arrived replica-flavoured,
			// del for expired) since the node was last known to be the
			// endpoint's primary, which may be before the last message.
			if v := time.Unix(0, sess.verified.Load()); v.Before(lastAlive) {
				lastAlive = v
			}
		case errors.Is(err, errPlanned):
			reason = GapPlanned
		}
		s.log.Warn("subscription lost: reconnecting", "reason", reason, "err", err)
	}
}

// session is one established subscription.
type session struct {
	client *redis.Client
	pubsub *redis.PubSub
	nodeID string // run_id of the node the subscription is on
	cancel context.CancelFunc
	moved  chan struct{} // closed by the failover watcher, after setting why
	why    error         // wraps errFailover; read only after moved is closed
	// verified is when the endpoint last named this node as its primary
	// (unix nanoseconds): a failover happened after it.
	verified atomic.Int64
	// early holds messages that arrived before every pattern was
	// confirmed; read handles them first.
	early []earlyMessage
}

type earlyMessage struct {
	msg *redis.Message
	at  time.Time
}

func (ss *session) close() {
	ss.cancel()
	_ = ss.pubsub.Close()
	_ = ss.client.Close()
}

// connect dials a new connection, checks that it is on a primary, subscribes
// and waits for every subscription to be confirmed.
func (s *Subscriber) connect(ctx context.Context) (*session, error) {
	opt := *s.cfg.Options
	opt.Protocol = 2
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	opt.DisableIdentity = true
	var nodeID string
	opt.OnConnect = func(ctx context.Context, cn *redis.Conn) error {
		id, role, err := nodeIdentity(ctx, cn)
		if err != nil {
			return err
		}
		if role != "" && role != "master" {
			return fmt.Errorf("bridge: %s is a %s, not a primary: subscribe to the primary endpoint", s.cfg.Source, role)
		}
		nodeID = id
		return nil
	}
	client := redis.NewClient(&opt)
	ps := client.PSubscribe(ctx)
	fail := func(err error) (*session, error) {
		_ = ps.Close()
		_ = client.Close()
		return nil, err
	}
	if err := ps.PSubscribe(ctx, s.cfg.Patterns...); err != nil {
		return fail(err)
	}
	var early []earlyMessage
	for confirmed := 0; confirmed < len(s.cfg.Patterns); {
		msg, err := ps.ReceiveTimeout(ctx, 5*time.Second)
		if err != nil {
			return fail(fmt.Errorf("bridge: psubscribe %s: %w", s.cfg.Source, err))
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			confirmed++
		case *redis.Message:
			// Redis confirms all patterns of one PSUBSCRIBE before it
			// publishes to them, but a message here must not be lost.
			early = append(early, earlyMessage{m, time.Now()})
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	sess := &session{client: client, pubsub: ps, nodeID: nodeID, cancel: cancel,
		moved: make(chan struct{}), early: early}
	sess.verified.Store(time.Now().UnixNano()) // OnConnect checked it is a primary
	// On shutdown, drain instead of dropping the connection: PUNSUBSCRIBE is
	// answered after every message Redis already queued for us, so reading
	// up to its confirmation receives everything published before the
	// stop. A drain that does not finish in time is cut by closing.
	context.AfterFunc(wctx, func() {
		if ctx.Err() == nil {
			_ = ps.Close() // the session ended for another reason
			return
		}
		dctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		defer cancel()
		_ = ps.PUnsubscribe(dctx)
		time.AfterFunc(drainTimeout, func() { _ = ps.Close() })
	})
	if s.cfg.FailoverInterval > 0 {
		if nodeID == "" {
			s.log.Warn("failover detection is off: the Redis user may not run INFO (grant +info +role)")
		} else {
			go s.watchFailover(wctx, sess)
		}
	}
	return sess, nil
}

// read receives until the connection breaks or ctx is cancelled. It returns
// the last moment events were surely received.
func (s *Subscriber) read(ctx context.Context, sess *session) (time.Time, error) {
	lastAlive := time.Now()
	pinged := false
	var expires time.Time
	if s.cfg.MaxConnectionAge > 0 {
		expires = lastAlive.Add(s.cfg.MaxConnectionAge)
	}
	st := s.newReadState()
	for _, e := range sess.early {
		s.handle(e.msg, e.at, st)
	}
	sess.early = nil
	rctx := context.WithoutCancel(ctx) // reads continue past ctx's end until the drain completes
	for {
		if !expires.IsZero() && time.Now().After(expires) {
			return lastAlive, errPlanned
		}
		msg, err := sess.pubsub.ReceiveTimeout(rctx, s.cfg.HealthInterval)
		now := time.Now()
		s.beat.Store(now.UnixNano())
		if err != nil {
			select {
			case <-sess.moved:
				return lastAlive, sess.why
			default:
			}
			if ctx.Err() != nil {
				return now, ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if pinged {
					return lastAlive, fmt.Errorf("bridge: no answer to ping within %s", 2*s.cfg.HealthInterval)
				}
				if err := sess.pubsub.Ping(ctx); err != nil {
					return lastAlive, fmt.Errorf("bridge: ping: %w", err)
				}
				pinged = true
				continue
			}
			return lastAlive, err
		}
		lastAlive, pinged = now, false
		switch m := msg.(type) {
		case *redis.Message:
			s.handle(m, now, st)
		case *redis.Subscription:
			if m.Kind == "punsubscribe" && m.Count == 0 && ctx.Err() != nil {
				return now, ctx.Err() // drained: everything published before the stop is in
			}
		case *redis.Pong:
		}
	}
}

// drainTimeout bounds the read of what Redis had already published when a
// stop began.
const drainTimeout = 3 * time.Second

// readState is the reader goroutine's own state (no locks): the received
// counter of each event name, so that a message costs no label lookup in the
// metric vector, and the last one, so that a stream of one event costs no
// map lookup either.
type readState struct {
	lastEvent string
	last      prometheus.Counter
	events    map[string]prometheus.Counter
}

func (s *Subscriber) newReadState() *readState {
	return &readState{events: make(map[string]prometheus.Counter)}
}

// received returns the counter of notifications received for event.
func (st *readState) received(m *Metrics, event string) prometheus.Counter {
	if st.last != nil && event == st.lastEvent {
		return st.last
	}
	c, ok := st.events[event]
	if !ok {
		c = m.Received.WithLabelValues(event)
		if len(st.events) < 1000 { // bounded: module events could name anything
			st.events[event] = c
		}
	}
	st.lastEvent, st.last = event, c
	return c
}

// handle decodes one message and emits its record. It runs on the reader
// goroutine: it must never block.
func (s *Subscriber) handle(m *redis.Message, now time.Time, st *readState) {
	n, err := Decode(m.Channel, m.Payload)
	if err != nil {
		s.metrics.Undecodable.Inc()
		s.log.Warn("ignored message on an unexpected channel", "channel", printablePrefix(m.Channel, 128))
		return
	}
	s.metrics.noteNotification(now)
	if !s.cfg.Filter.Match(n) {
		s.metrics.Ignored.Inc()
		return
	}
	st.received(s.metrics, n.Event).Inc()
	s.relay.Emit(Record{Type: TypeKeyEvent, ID: s.relay.ids.New(now), Time: now,
		Source: s.cfg.Source, DB: n.DB, Event: n.Event, Key: n.Key})
}

// watchFailover checks, through a fresh connection each time, that the
// endpoint still names the node the subscription is on. ElastiCache moves the
// primary endpoint's DNS name on failover, but an open connection stays on
// the old node, which may live on as a replica.
func (s *Subscriber) watchFailover(ctx context.Context, sess *session) {
	for {
		jitter := rand.N(s.cfg.FailoverInterval/5 + 1)
		if !sleepCtx(ctx, s.cfg.FailoverInterval+jitter) {
			return
		}
		probed := time.Now() // the node was the primary at some moment after this
		id, role, err := s.probe(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Debug("failover check failed", "err", err)
			}
			continue
		}
		switch {
		case id != sess.nodeID && role == "master":
			sess.why = fmt.Errorf("%w: the endpoint names primary %s", errFailover, id)
			s.log.Warn("failover: the endpoint names another primary, moving the subscription",
				"old_node_id", sess.nodeID, "new_node_id", id)
		case id == sess.nodeID && role != "" && role != "master":
			// The node was demoted but the endpoint still names it (its DNS
			// name has not moved yet). A replica publishes del instead of
			// expired: leave it now, report the gap, and subscribe again
			// once the endpoint names a primary.
			sess.why = fmt.Errorf("%w: it is now a %s", errFailover, role)
			s.log.Warn("failover: the subscribed node is no longer a primary, leaving it",
				"node_id", sess.nodeID, "role", role)
		default:
			if id == sess.nodeID {
				sess.verified.Store(probed.UnixNano())
			}
			continue
		}
		close(sess.moved)
		_ = sess.pubsub.Close()
		return
	}
}

// probe opens a fresh connection through the endpoint and returns the
// identity and role of the node it reaches.
func (s *Subscriber) probe(ctx context.Context) (id, role string, err error) {
	opt := *s.cfg.Options
	opt.Protocol = 2
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	opt.DisableIdentity = true
	opt.PoolSize, opt.MaxIdleConns, opt.MaxRetries = 1, 0, -1
	opt.OnConnect = nil
	c := redis.NewClient(&opt)
	defer c.Close()
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	cn := c.Conn()
	defer cn.Close()
	return nodeIdentity(pctx, cn)
}

// nodeIdentity returns the node's run_id and its ROLE ("master", "slave").
// An engine that hides either returns it empty.
func nodeIdentity(ctx context.Context, cn *redis.Conn) (id, role string, err error) {
	info, err := cn.Info(ctx, "server").Result()
	if err != nil {
		if strings.Contains(err.Error(), "NOPERM") {
			// An ACL user without +info: subscribe anyway; failover
			// detection is off (logged by connect).
			return "", "", nil
		}
		return "", "", fmt.Errorf("bridge: info server: %w", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(line, "run_id:"); ok {
			id = strings.TrimSpace(v)
		}
	}
	if r, err := cn.Do(ctx, "ROLE").Slice(); err == nil && len(r) > 0 {
		role, _ = r[0].(string)
	}
	return id, role, nil
}

// isPermanentRedisError reports errors that retrying will not fix: refused
// authentication and missing permissions.
func isPermanentRedisError(err error) bool {
	msg := err.Error()
	for _, p := range []string{"NOPERM", "WRONGPASS", "NOAUTH", "ERR AUTH", "invalid password", "not a primary"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// Alive reports whether the reader loop is running: it beats at least once
// per HealthInterval while subscribed and once per connection attempt while
// not.
func (s *Subscriber) Alive() error {
	last := time.Unix(0, s.beat.Load())
	if limit := 3*s.cfg.HealthInterval + 15*time.Second; time.Since(last) > limit {
		return fmt.Errorf("reader loop silent for %s", time.Since(last).Round(time.Second))
	}
	return nil
}
