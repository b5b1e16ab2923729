package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
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
	// MarkerChannel is keyrelay's own channel on the node; every
	// MarkerInterval the subscriber publishes a marker there and reads it
	// back through the subscription. Empty or 0: no markers (the in-band
	// pings still anchor the gap windows).
	MarkerChannel  string
	MarkerInterval time.Duration
	// Instance tells this process's markers apart from another's.
	Instance string
	// OwnKeyPrefix starts every key keyrelay writes itself: their
	// notifications never become records.
	OwnKeyPrefix string

	// NodeID, when set, makes the subscriber serve one cluster node, the
	// one with this id (confirmed with CLUSTER MYID on every connection):
	// a demotion, or another node at the address, ends Run with
	// ErrNodeLeft instead of a reconnection; the cluster's reconciler
	// reports the window.
	NodeID string
	// InitialGap, when set, is reported once the first subscription is
	// confirmed: a window that began before this subscriber existed (a
	// primary first seen owning slots, a failover).
	InitialGap *InitialGap
	// OnBreak, when set, is called (from Run's goroutine) whenever a
	// subscription ends other than by a stop: the reconciler looks at the
	// topology again at once.
	OnBreak func()
	// AliveKey, when set, is keyrelay's alive key on the node (alive.go):
	// restart gaps, and proof that notifications flow.
	AliveKey string
}

// InitialGap is a gap that a new subscription closes.
type InitialGap struct {
	Reason string
	Since  time.Time
}

// ErrNodeLeft ends the Run of a cluster node's subscriber whose node is no
// longer the primary it was started for.
var ErrNodeLeft = errors.New("bridge: the node is no longer the primary it was subscribed as")

// Subscriber holds one subscription to one node, decodes what it receives and
// emits records into a Relay. It reconnects on its own and reports every
// window in which events may have been missed as a gap record. Several
// subscribers (one per primary, in cluster mode) can share one Relay.
type Subscriber struct {
	cfg     SubscriberConfig
	relay   *Relay
	log     *slog.Logger
	metrics *Metrics

	mu         sync.Mutex
	connected  bool
	beat       atomic.Int64 // unix nanoseconds of the reader loop's last turn
	markersOff atomic.Bool  // the Redis user may not publish markers
	current    *session     // under mu: the established session, for Abort
	left       atomic.Bool  // Leave was called
	leave      context.CancelFunc
	final      atomic.Int64 // Run's last anchor (unix nanoseconds), once it returned
	liveEnd    atomic.Bool  // Run ended while subscribed (Leave, or a demotion noticed on a live session)

	// ha is the node's HA state when the relay has HA on (ha.go).
	ha *haSource

	// dial establishes a session: connect, or a scripted one in tests.
	dial func(ctx context.Context) (*session, error)

	aliveDenied  atomic.Bool  // the Redis user may not write the alive key
	alivePending atomic.Int64 // unix nanoseconds of the first alive write whose notification is not back; 0: none
	aliveStopped atomic.Bool  // "notifications stopped" was logged
}

// EndedSubscribed reports, after Run returned, whether the subscription was
// live until the end: the node left (Leave, or a demotion its ROLE check
// noticed) while keyrelay was listening to it.
func (s *Subscriber) EndedSubscribed() bool { return s.liveEnd.Load() }

// Leave ends Run without a gap record, for a node the cluster no longer
// lists as a primary: the reconciler decides what its departure means and
// reads FinalAnchor. A subscription in progress drains first.
func (s *Subscriber) Leave() {
	if s.Connected() {
		s.liveEnd.Store(true)
	}
	s.left.Store(true)
	s.mu.Lock()
	leave := s.leave
	s.mu.Unlock()
	if leave != nil {
		leave()
	}
}

// FinalAnchor is, after Run returned, the last moment everything the node
// published was surely received (zero if it never subscribed).
func (s *Subscriber) FinalAnchor() time.Time {
	if ns := s.final.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

func (s *Subscriber) onBreak() {
	if s.cfg.OnBreak != nil {
		s.cfg.OnBreak()
	}
}

// Abort cuts the current session short (a drain in progress included). Run
// then reports the window it could not read as a gap and returns, once its
// context is done.
func (s *Subscriber) Abort() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != nil {
		_ = s.current.pubsub.Close()
	}
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
	s.dial = s.connect
	if relay != nil && relay.ha != nil {
		s.ha = relay.ha.source(cfg.Source)
	}
	s.beat.Store(time.Now().UnixNano())
	// Export every series from the start, so that the first reconnection
	// is an increase a rate() or increase() alert can see.
	m.Connected.WithLabelValues(cfg.Source).Set(0)
	for _, reason := range []string{GapReconnect, GapFailover, GapPlanned} {
		m.Reconnects.WithLabelValues(cfg.Source, reason)
	}
	m.MarkersSent.WithLabelValues(cfg.Source)
	m.MarkersReturned.WithLabelValues(cfg.Source)
	for _, reason := range []string{"noperm", "publish", "overdue"} {
		m.MarkerErrors.WithLabelValues(cfg.Source, reason)
	}
	markers := 0.0
	if cfg.MarkerChannel != "" && cfg.MarkerInterval > 0 {
		markers = 1
	}
	m.MarkersEnabled.WithLabelValues(cfg.Source).Set(markers)
	m.NotificationsFlowing.WithLabelValues(cfg.Source).Set(1)
	for _, reason := range []string{"noperm", "write"} {
		m.AliveErrors.WithLabelValues(cfg.Source, reason)
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
//
// Every window in which events may have been missed becomes a gap record:
// from the anchor of the session that ended (the last moment everything
// Redis had published was surely received) to the confirmation of the next
// subscription, or to the stop when there is none.
func (s *Subscriber) Run(ctx context.Context) error {
	ctx, leave := context.WithCancel(ctx)
	defer leave()
	s.mu.Lock()
	s.leave = leave
	s.mu.Unlock()
	if s.left.Load() {
		leave()
	}
	started := time.Now()
	var anchor time.Time // zero until the first subscription
	defer func() {
		if !anchor.IsZero() {
			s.final.Store(anchor.UnixNano())
		}
	}()
	reason := GapReconnect
	initial := s.cfg.InitialGap
	first := true
	lastKind := "" // of the previous failed attempt: log a state change once
	stopGap := func() {
		if s.left.Load() {
			return // the reconciler reports the window
		}
		since := anchor
		if since.IsZero() {
			since = started // never subscribed since the start
		}
		s.relay.EmitGap(s.cfg.Source, GapStop, since, time.Now())
	}
	for attempt := 0; ; attempt++ {
		s.beat.Store(time.Now().UnixNano())
		if ctx.Err() != nil {
			stopGap()
			return nil
		}
		sess, err := s.dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				stopGap()
				return nil
			}
			err = ClassifyRedisError(err)
			if s.cfg.NodeID != "" && (errors.Is(err, ErrNotPrimary) || errors.Is(err, ErrNodeLeft)) {
				s.log.Warn("cluster node is no longer a primary: leaving it", "err", err)
				s.onBreak()
				return ErrNodeLeft
			}
			if anchor.IsZero() && IsPermanentRedisError(err) {
				if s.cfg.NodeID == "" {
					stopGap() // a cluster node's window is the reconciler's to report
				}
				return err
			}
			d := Backoff(100*time.Millisecond, s.cfg.ReconnectMax, attempt+1)
			level := slog.LevelWarn
			if kind := errorKind(err); kind == lastKind {
				level = slog.LevelDebug // the same failure again: not a new state
			} else {
				lastKind = kind
			}
			s.log.Log(ctx, level, "subscription: connect failed, retrying", "err", err,
				"attempt", attempt+1, "retry_in", d.Round(time.Millisecond).String())
			sleepCtx(ctx, d)
			continue
		}
		attempt, lastKind = -1, ""
		if !anchor.IsZero() {
			s.metrics.Reconnects.WithLabelValues(s.cfg.Source, reason).Inc()
			s.relay.EmitGap(s.cfg.Source, reason, anchor, sess.confirmed)
		} else if initial != nil {
			s.relay.EmitGap(s.cfg.Source, initial.Reason, initial.Since, sess.confirmed)
		} else if first {
			s.restartGap(ctx, sess)
		}
		initial, first = nil, false
		s.mu.Lock()
		s.current = sess
		s.mu.Unlock()
		s.setConnected(true)
		s.log.Info("subscribed", "patterns", s.cfg.Patterns, "run_id", sess.nodeID,
			"markers", sess.markers)
		var drained bool
		anchor, drained, err = s.read(ctx, sess)
		s.setConnected(false)
		s.mu.Lock()
		s.current = nil
		s.mu.Unlock()
		sess.close()
		if ctx.Err() != nil {
			if !drained && !s.left.Load() {
				// The drain did not complete: what Redis still held for
				// us when it was cut is lost.
				s.relay.EmitGap(s.cfg.Source, GapStop, anchor, time.Now())
			}
			return nil
		}
		s.onBreak()
		if s.cfg.NodeID != "" && errors.Is(err, errFailover) {
			if v := time.Unix(0, sess.verified.Load()); v.Before(anchor) {
				anchor = v
			}
			s.log.Warn("cluster node is no longer a primary: leaving it", "err", err, "since", anchor)
			s.liveEnd.Store(true)
			return ErrNodeLeft
		}
		reason = GapReconnect
		switch {
		case errors.Is(err, errFailover):
			reason = GapFailover
			// Events may have been missed (or arrived replica-flavoured,
			// del for expired) since the node was last known to be the
			// endpoint's primary, which may be before the anchor.
			if v := time.Unix(0, sess.verified.Load()); v.Before(anchor) {
				anchor = v
			}
		case errors.Is(err, errPlanned):
			reason = GapPlanned
		}
		s.log.Warn("subscription lost: reconnecting", "reason", reason, "err", err,
			"since", anchor)
	}
}

// subConn is an established subscription as the reader uses it: a
// respConn, or a scripted connection in the state machine's unit tests.
// ReceiveTimeout's *redis.Message, *redis.Pong or *redis.Subscription may be
// the connection's own, overwritten by the next ReceiveTimeout: a caller
// that keeps one longer keeps a copy. A timeout is a net.Error whose
// Timeout() is true. Ping, PUnsubscribe and Unsubscribe may run concurrently
// with ReceiveTimeout; Close may run at any time and interrupts it.
type subConn interface {
	ReceiveTimeout(ctx context.Context, timeout time.Duration) (any, error)
	Ping(ctx context.Context, payload ...string) error
	PUnsubscribe(ctx context.Context, patterns ...string) error
	Unsubscribe(ctx context.Context, channels ...string) error
	Close() error
}

// session is one established subscription.
type session struct {
	client *redis.Client // set the connection up (takeover); holds it until closed
	pubsub subConn
	pub    *redis.Client // publishes markers to the same node
	nodeID string        // run_id of the node the subscription is on
	cancel context.CancelFunc
	moved  chan struct{} // closed by the failover watcher, after setting why
	why    error         // wraps errFailover; read only after moved is closed
	// start is when the subscription was requested: everything published
	// after it reaches this session. confirmed is when Redis confirmed it.
	start, confirmed time.Time
	markers          bool // the marker channel is subscribed and markers are published
	// verified is when the endpoint last named this node as its primary
	// (unix nanoseconds): a failover happened after it.
	verified atomic.Int64
	// markerSent is the send time of the last marker Redis accepted (unix
	// nanoseconds; 0 before the first).
	markerSent atomic.Int64
	// anchor is the reader's anchor (unix nanoseconds), for the alive key.
	anchor atomic.Int64
	// early holds messages that arrived before every subscription was
	// confirmed; read handles them first.
	early []earlyMessage
}

type earlyMessage struct {
	msg any
	at  time.Time
}

func (ss *session) close() {
	ss.cancel()
	_ = ss.pubsub.Close()
	if ss.client != nil {
		_ = ss.client.Close()
	}
	if ss.pub != nil {
		_ = ss.pub.Close()
	}
}

// options returns the node's options as every keyrelay connection needs
// them: RESP2 (pub/sub messages in-band), no maintenance notifications, no
// CLIENT SETINFO.
func (s *Subscriber) options() redis.Options {
	opt := *s.cfg.Options
	opt.Protocol = 2
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	opt.DisableIdentity = true
	return opt
}

// connect dials a new connection, checks that it is on a primary, subscribes
// and waits for every subscription to be confirmed.
func (s *Subscriber) connect(ctx context.Context) (*session, error) {
	opt := s.options()
	var nodeID string
	opt.OnConnect = func(ctx context.Context, cn *redis.Conn) error {
		if s.cfg.NodeID != "" {
			id, err := cn.ClusterMyID(ctx).Result()
			if err != nil {
				return fmt.Errorf("bridge: cluster myid (grant +cluster|myid): %w", err)
			}
			if id != s.cfg.NodeID {
				return fmt.Errorf("%w: %s is now node %s, not %s", ErrNodeLeft, s.cfg.Source, id, s.cfg.NodeID)
			}
		}
		id, role, err := nodeIdentity(ctx, cn)
		if err != nil {
			return err
		}
		if role != "" && role != "master" {
			return fmt.Errorf("bridge: %s is a %s: %w: subscribe to the primary endpoint", s.cfg.Source, role, ErrNotPrimary)
		}
		nodeID = id
		return nil
	}
	client, ps, err := takeover(ctx, opt)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*session, error) {
		_ = ps.Close()
		_ = client.Close()
		return nil, err
	}
	start := time.Now()
	if err := ps.PSubscribe(ctx, s.cfg.Patterns...); err != nil {
		return fail(err)
	}
	var early []earlyMessage
	wait := func(n int, what string) error {
		for confirmed := 0; confirmed < n; {
			msg, err := ps.ReceiveTimeout(ctx, 5*time.Second)
			if err != nil {
				return fmt.Errorf("bridge: %s %s: %w", what, s.cfg.Source, err)
			}
			// msg belongs to ps until its next ReceiveTimeout: keep copies.
			switch m := msg.(type) {
			case *redis.Subscription:
				confirmed++
			case *redis.Message:
				// Redis confirms all patterns of one PSUBSCRIBE before it
				// publishes to them, but a message here must not be lost.
				c := *m
				early = append(early, earlyMessage{&c, time.Now()})
			case *redis.Pong:
				c := *m
				early = append(early, earlyMessage{&c, time.Now()})
			}
		}
		return nil
	}
	if err := wait(len(s.cfg.Patterns), "psubscribe"); err != nil {
		return fail(err)
	}
	markers := false
	if s.cfg.MarkerChannel != "" && s.cfg.MarkerInterval > 0 && !s.markersOff.Load() {
		err := ps.Subscribe(ctx, s.cfg.MarkerChannel)
		if err == nil {
			err = wait(1, "subscribe")
		}
		switch {
		case err == nil:
			markers = true
		case errors.Is(ClassifyRedisError(err), ErrRedisPermission):
			s.markersDenied(err)
		default:
			return fail(err)
		}
	}
	sess := &session{client: client, pubsub: ps, nodeID: nodeID,
		moved: make(chan struct{}), early: early, start: start, confirmed: time.Now(), markers: markers}
	sess.verified.Store(time.Now().UnixNano()) // OnConnect checked it is a primary
	wctx := s.drainOnStop(ctx, sess)
	if s.cfg.FailoverInterval > 0 {
		if nodeID == "" {
			s.log.Warn("failover detection is off: the Redis user may not run INFO (grant +info +role)")
		} else {
			go s.watchFailover(wctx, sess)
		}
	}
	if markers || s.cfg.AliveKey != "" {
		popt := s.options()
		popt.PoolSize, popt.MaxIdleConns, popt.MaxRetries = 1, 1, -1
		sess.pub = redis.NewClient(&popt)
	}
	if markers {
		go s.publishMarkers(wctx, sess)
	}
	if s.cfg.AliveKey != "" && !s.aliveDenied.Load() {
		go s.keepAlive(wctx, sess)
	}
	if s.cfg.AliveKey != "" && s.relay.spool != nil {
		go s.keepSpoolAnchor(wctx, sess)
	}
	return sess, nil
}

// drainOnStop arranges the end of sess: on a stop (ctx done), drain instead
// of dropping the connection: PUNSUBSCRIBE (and UNSUBSCRIBE of the marker
// channel) is answered after every message Redis already queued for us, so
// reading up to the last confirmation receives everything published before
// the stop; a drain that does not finish in time is cut by closing. On any
// other end (sess.cancel), the connection is closed. It returns the
// session's context, for its helper goroutines.
func (s *Subscriber) drainOnStop(ctx context.Context, sess *session) context.Context {
	wctx, cancel := context.WithCancel(ctx)
	sess.cancel = cancel
	ps := sess.pubsub
	context.AfterFunc(wctx, func() {
		if ctx.Err() == nil {
			_ = ps.Close() // the session ended for another reason
			return
		}
		dctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		defer cancel()
		_ = ps.PUnsubscribe(dctx)
		if sess.markers {
			_ = ps.Unsubscribe(dctx)
		}
		time.AfterFunc(drainTimeout, func() { _ = ps.Close() })
	})
	return wctx
}

// markersDenied switches markers off for good after a permission error:
// logged once, counted, and the gap windows then rest on the in-band pings.
func (s *Subscriber) markersDenied(err error) {
	s.metrics.MarkerErrors.WithLabelValues(s.cfg.Source, "noperm").Inc()
	s.metrics.MarkersEnabled.WithLabelValues(s.cfg.Source).Set(0)
	if s.ha != nil && !s.markersOff.Load() {
		s.log.Error("ha: continuity markers refused: record ids cannot be the same in every instance, so a takeover may repeat records under new ids (grant +subscribe +publish and &" + s.cfg.MarkerChannel + ")")
	}
	if s.markersOff.CompareAndSwap(false, true) {
		s.log.Warn("continuity markers are off: the Redis user may not publish or subscribe to keyrelay's channel; gap windows rest on the subscription's pings (grant +subscribe +unsubscribe +publish and &"+s.cfg.MarkerChannel+")",
			"channel", s.cfg.MarkerChannel, "err", err)
	}
}

// publishMarkers publishes a marker on keyrelay's channel of the node every
// MarkerInterval, until the session ends. The reader's anchor moves to a
// marker's send time when the marker comes back: Redis delivers a node's
// messages to a subscriber in publish order, so everything published before
// it has been received.
func (s *Subscriber) publishMarkers(ctx context.Context, sess *session) {
	t := time.NewTicker(s.cfg.MarkerInterval)
	defer t.Stop()
	for seq := uint64(1); ; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sent := time.Now()
		payload := s.cfg.Instance + " " + s.cfg.Source + " " + strconv.FormatUint(seq, 10) + " " + strconv.FormatInt(sent.UnixNano(), 10)
		pctx, cancel := context.WithTimeout(ctx, s.cfg.MarkerInterval+time.Second)
		err := sess.pub.Publish(pctx, s.cfg.MarkerChannel, payload).Err()
		cancel()
		switch {
		case err == nil:
			sess.markerSent.Store(sent.UnixNano())
			s.metrics.MarkersSent.WithLabelValues(s.cfg.Source).Inc()
		case ctx.Err() != nil:
			return
		case errors.Is(ClassifyRedisError(err), ErrRedisPermission):
			s.markersDenied(err)
			return
		default:
			s.metrics.MarkerErrors.WithLabelValues(s.cfg.Source, "publish").Inc()
			s.log.Debug("marker: publish failed", "err", err)
		}
	}
}

// parseMarker returns the send time of one of this subscriber's markers
// ("instance source seq unixnano"); ok is false for another instance's or
// another node's marker (a cluster broadcasts PUBLISH to every node, out of
// order with the node's own messages) or a malformed one.
func (s *Subscriber) parseMarker(payload string) (sent time.Time, ok bool) {
	inst, rest, _ := strings.Cut(payload, " ")
	source, rest, _ := strings.Cut(rest, " ")
	if inst != s.cfg.Instance || source != s.cfg.Source {
		return time.Time{}, false
	}
	_, ns, _ := strings.Cut(rest, " ")
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, n), true
}

// pingPrefix starts the payload of the subscription's own pings: the rest is
// the send time, so a PONG anchors like a marker.
const pingPrefix = "keyrelay "

// read receives until the connection breaks or ctx is cancelled. It returns
// the session's last anchor: the send time of the last marker or ping that
// came back (or the subscription request), before which everything
// published has been received. drained reports a stop whose drain completed.
//
// Health: every HealthInterval the reader pings through the subscription
// (busy or not); the answer comes after everything Redis queued before the
// ping. The connection is dead when, with nothing arriving, a ping stays
// unanswered for twice HealthInterval, or markers Redis accepted stay away
// for three marker intervals.
func (s *Subscriber) read(ctx context.Context, sess *session) (anchor time.Time, drained bool, err error) {
	anchor = sess.start
	sess.anchor.Store(anchor.UnixNano())
	markerBack := sess.confirmed // send time of the last own marker that came back
	var pingSent time.Time       // of the unanswered ping; zero when none
	lastPing := sess.confirmed
	var expires time.Time
	if s.cfg.MaxConnectionAge > 0 {
		// Jittered, so that the nodes of a cluster do not all move at once.
		expires = sess.confirmed.Add(s.cfg.MaxConnectionAge - rand.N(s.cfg.MaxConnectionAge/20+1))
	}
	rctx := context.WithoutCancel(ctx) // reads continue past ctx's end until the drain completes
	ping := func(now time.Time) error {
		if err := sess.pubsub.Ping(rctx, pingPrefix+strconv.FormatInt(now.UnixNano(), 10)); err != nil {
			return fmt.Errorf("bridge: ping: %w", err)
		}
		pingSent, lastPing = now, now
		return nil
	}
	st := s.newReadState()
	// dispatch handles one message; done reports the end of a drain.
	dispatch := func(msg any, now time.Time) (done bool) {
		switch m := msg.(type) {
		case *redis.Message:
			if m.Pattern == "" && m.Channel == s.cfg.MarkerChannel {
				if s.ha != nil && st.haMarker(s.ha, s.cfg.NodeID, m.Payload) {
					s.relay.spoolPosition(s.cfg.Source, st.ref, st.idx)
				}
				if sent, ok := s.parseMarker(m.Payload); ok {
					s.metrics.MarkersReturned.WithLabelValues(s.cfg.Source).Inc()
					markerBack = sent
					if sent.After(anchor) {
						anchor = sent
						sess.anchor.Store(anchor.UnixNano())
					}
				}
				return false
			}
			st.off++ // every message after the marker counts, whatever the filter says
			s.handle(m, now, st)
		case *redis.Pong:
			if ns, ok := strings.CutPrefix(m.Payload, pingPrefix); ok {
				if n, err := strconv.ParseInt(ns, 10, 64); err == nil {
					if sent := time.Unix(0, n); sent.After(anchor) {
						anchor = sent
						sess.anchor.Store(anchor.UnixNano())
					}
				}
			}
			pingSent = time.Time{}
		case *redis.Subscription:
			return (m.Kind == "punsubscribe" || m.Kind == "unsubscribe") && m.Count == 0 && ctx.Err() != nil
		}
		return false
	}
	for _, e := range sess.early {
		dispatch(e.msg, e.at)
	}
	sess.early = nil
	clock, _ := sess.pubsub.(interface{ ReceivedAt() time.Time })
	now := time.Now()
	for {
		if !expires.IsZero() && now.After(expires) {
			return anchor, false, errPlanned
		}
		msg, err := sess.pubsub.ReceiveTimeout(rctx, s.cfg.HealthInterval)
		if clock != nil && err == nil {
			now = clock.ReceivedAt() // one clock reading per read, not per message
		} else {
			now = time.Now()
		}
		s.beat.Store(now.UnixNano())
		if err != nil {
			select {
			case <-sess.moved:
				return anchor, false, sess.why
			default:
			}
			if ctx.Err() != nil {
				return anchor, false, ctx.Err() // the drain was cut
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return anchor, false, err
			}
			// Nothing arrived for HealthInterval.
			if !pingSent.IsZero() && now.Sub(pingSent) >= 2*s.cfg.HealthInterval {
				return anchor, false, fmt.Errorf("bridge: no answer to ping within %s", 2*s.cfg.HealthInterval)
			}
			if ns := sess.markerSent.Load(); ns != 0 && time.Unix(0, ns).Sub(markerBack) >= 3*s.cfg.MarkerInterval {
				s.metrics.MarkerErrors.WithLabelValues(s.cfg.Source, "overdue").Inc()
				return anchor, false, fmt.Errorf("bridge: markers published since %s did not come back", markerBack.Format(time.RFC3339Nano))
			}
			if pingSent.IsZero() {
				if err := ping(now); err != nil {
					return anchor, false, err
				}
			}
			continue
		}
		if dispatch(msg, now) {
			return now, true, ctx.Err() // drained: everything published before the stop is in
		}
		if pingSent.IsZero() && now.Sub(lastPing) >= s.cfg.HealthInterval && ctx.Err() == nil {
			if err := ping(now); err != nil {
				return anchor, false, err
			}
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

	// HA (ha.go): the last marker this session saw, its index on the node,
	// and the messages since; anchored once there is one.
	anchored bool
	ref      markerRef
	idx      uint64
	off      uint64
}

// haMarker places the session's next messages after the marker payload;
// false for a payload that is not a marker.
func (st *readState) haMarker(src *haSource, node, payload string) bool {
	ref, ok := newMarkerRef(node, payload)
	if !ok {
		return false
	}
	st.anchored, st.ref, st.idx, st.off = true, ref, src.marker(ref), 0
	return true
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
	if s.cfg.OwnKeyPrefix != "" && strings.HasPrefix(n.Key, s.cfg.OwnKeyPrefix) {
		if n.Key == s.cfg.AliveKey && n.Event == "set" {
			s.aliveSeen()
		}
		s.metrics.Ignored.Inc()
		return // keyrelay's own keys are not the cache's traffic: not even for the silence gauge
	}
	s.metrics.noteNotification(now)
	if !s.cfg.Filter.Match(n) {
		s.metrics.Ignored.Inc()
		return
	}
	st.received(s.metrics, n.Event).Inc()
	rec := Record{Type: TypeKeyEvent, Time: now, Source: s.cfg.Source, DB: n.DB, Event: n.Event, Key: n.Key}
	if s.ha != nil && st.anchored {
		rec.ID, rec.placed, rec.pos = haID(st.ref, st.off), true, haPos{st.idx, st.off}
	} else {
		rec.ID = s.relay.ids.New(now)
	}
	s.relay.Emit(rec)
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
				"old_run_id", sess.nodeID, "new_run_id", id)
		case id == sess.nodeID && role != "" && role != "master":
			// The node was demoted but the endpoint still names it (its DNS
			// name has not moved yet). A replica publishes del instead of
			// expired: leave it now, report the gap, and subscribe again
			// once the endpoint names a primary.
			sess.why = fmt.Errorf("%w: it is now a %s", errFailover, role)
			s.log.Warn("failover: the subscribed node is no longer a primary, leaving it",
				"run_id", sess.nodeID, "role", role)
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
	opt := s.options()
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
		if errors.Is(ClassifyRedisError(err), ErrRedisPermission) {
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
