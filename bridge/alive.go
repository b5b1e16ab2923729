package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The alive key (keyrelay:NAME:alive, one per node in cluster mode) holds
// the last moment an instance of the group was known to be listening: the
// anchor of its subscription, written every marker interval. It serves two
// purposes:
//
//   - restart gaps: a subscriber that starts reads it and reports the window
//     in which no instance listened (deploy, crash, stop) as a gap record
//     with reason restart, from that moment until its subscription is
//     confirmed;
//   - proof that notifications still flow: when the configured events
//     include set, the key's own notification must come back; when it stops
//     (notifications switched off in the parameter group), the subscriber
//     says so and is not ready.

// aliveTTL is how long the alive key outlives the last instance: a restart
// after a longer absence finds no key and says that it cannot tell.
const aliveTTL = 7 * 24 * time.Hour

// aliveInterval is how often the alive key is written: every marker
// interval (the daemon sets no alive key when markers are disabled).
func (s *Subscriber) aliveInterval() time.Duration {
	if s.cfg.MarkerInterval > 0 {
		return s.cfg.MarkerInterval
	}
	return time.Second
}

// keepAlive writes the session's anchor into the alive key every
// aliveInterval until the session ends.
func (s *Subscriber) keepAlive(ctx context.Context, sess *session) {
	t := time.NewTicker(s.aliveInterval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_ = s.NotificationsFlowing() // judged here too, not only when /readyz is asked
		anchor := sess.anchor.Load()
		if anchor == 0 {
			continue
		}
		at := time.Now()
		wctx, cancel := context.WithTimeout(ctx, s.aliveInterval()+time.Second)
		err := sess.pub.Set(wctx, s.cfg.AliveKey, strconv.FormatInt(anchor/1000, 10), aliveTTL).Err()
		cancel()
		switch {
		case err == nil:
			s.alivePending.CompareAndSwap(0, at.UnixNano())
		case ctx.Err() != nil:
			return
		case errors.Is(ClassifyRedisError(err), ErrRedisPermission):
			s.metrics.AliveErrors.WithLabelValues(s.cfg.Source, "noperm").Inc()
			if s.aliveDenied.CompareAndSwap(false, true) {
				s.log.Warn("alive key off: the Redis user may not write "+s.cfg.AliveKey+"; restart gaps rest on nothing and stopped notifications go unnoticed (grant ~keyrelay:* +set +get)",
					"err", err)
			}
			return
		default:
			s.metrics.AliveErrors.WithLabelValues(s.cfg.Source, "write").Inc()
			s.log.Debug("alive key: write failed", "err", err)
		}
	}
}

// aliveSeen notes that the alive key's own notification came back.
func (s *Subscriber) aliveSeen() {
	s.alivePending.Store(0)
	if s.aliveStopped.CompareAndSwap(true, false) {
		s.metrics.NotificationsFlowing.WithLabelValues(s.cfg.Source).Set(1)
		s.log.Info("notifications flow again: the alive key's notification came back")
	}
}

// NotificationsFlowing reports an error when the alive key was written but
// its notification has not come back for a while (only checked when the
// configured events and databases include it).
func (s *Subscriber) NotificationsFlowing() error {
	if !s.aliveWatched() {
		return nil
	}
	pending := s.alivePending.Load()
	if pending == 0 {
		return nil
	}
	limit := max(5*s.aliveInterval(), 10*time.Second)
	if late := time.Since(time.Unix(0, pending)); late > limit {
		if s.aliveStopped.CompareAndSwap(false, true) {
			s.metrics.NotificationsFlowing.WithLabelValues(s.cfg.Source).Set(0)
			s.log.Error("notifications stopped: keyrelay wrote its alive key but no notification came back; check notify-keyspace-events in the parameter group",
				"key", s.cfg.AliveKey, "waiting", late.Round(time.Second).String())
		}
		return fmt.Errorf("%s: no notification for keyrelay's own write of %s for %s: are keyspace notifications switched off?",
			s.cfg.Source, s.cfg.AliveKey, late.Round(time.Second))
	}
	return nil
}

// aliveWatched reports whether the alive key's set notification is among
// what the subscription receives.
func (s *Subscriber) aliveWatched() bool {
	if s.cfg.AliveKey == "" || s.aliveDenied.Load() {
		return false
	}
	n := Notification{DB: s.cfg.Options.DB, Event: "set", Key: s.cfg.AliveKey}
	f := s.cfg.Filter
	f.Keys = nil // own keys are filtered out before KEYRELAY_KEYS applies
	return f.Match(n)
}

// restartGap reports, before the first record of a subscriber's first
// subscription, the window in which no instance of the group listened to the
// node: from the moment the alive key holds until the subscription was
// confirmed.
//
// Two places may know that moment: the alive key in Redis (any instance of
// the group) and the newest marker this instance's spool kept for the node
// (restarts with the same spool, even without permission to write the
// key). Both are moments at which the group surely listened: the later one
// is the tighter bound.
func (s *Subscriber) restartGap(ctx context.Context, sess *session) {
	if s.cfg.AliveKey == "" {
		return // markers off
	}
	since, fromSpool := s.relay.SpoolAnchor(s.cfg.Source)
	if alive, ok := s.readAlive(ctx, sess, fromSpool); ok && alive.After(since) {
		since = alive
	}
	if since.IsZero() {
		s.metrics.RestartUnknown.Inc()
		return // readAlive said why
	}
	if !since.Before(sess.confirmed) {
		return // the key is newer than this subscription (clocks, or another instance of the group)
	}
	s.relay.EmitGap(s.cfg.Source, GapRestart, since, sess.confirmed)
}

// readAlive returns the moment the alive key holds. Without one it logs
// why, as a warning unless the spool dates the restart anyway (quiet).
func (s *Subscriber) readAlive(ctx context.Context, sess *session, quiet bool) (time.Time, bool) {
	level := slog.LevelWarn
	if quiet {
		level = slog.LevelDebug
	}
	if sess.pub == nil {
		return time.Time{}, false
	}
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	v, err := sess.pub.Get(rctx, s.cfg.AliveKey).Result()
	cancel()
	switch {
	case errors.Is(err, redis.Nil):
		if !quiet {
			level = slog.LevelInfo
		}
		s.log.Log(ctx, level, "restart: no record of when keyrelay last listened to this node (a first start, or absent longer than the alive key lives): no restart gap",
			"key", s.cfg.AliveKey)
		return time.Time{}, false
	case err != nil:
		s.log.Log(ctx, level, "restart: cannot read when keyrelay last listened to this node: no restart gap", "key", s.cfg.AliveKey, "err", err)
		return time.Time{}, false
	}
	us, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		s.log.Log(ctx, level, "restart: the alive key holds no time", "key", s.cfg.AliveKey, "value", printablePrefix(v, 64))
		return time.Time{}, false
	}
	return time.UnixMicro(us), true
}

// keepSpoolAnchor writes the session's anchor into the spool every marker
// interval while it moves, for the next start's restart gap.
func (s *Subscriber) keepSpoolAnchor(ctx context.Context, sess *session) {
	t := time.NewTicker(s.cfg.MarkerInterval)
	defer t.Stop()
	var last int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if a := sess.anchor.Load(); a != 0 && a != last {
			last = a
			s.relay.SpoolMarker(s.cfg.Source, time.Unix(0, a))
		}
	}
}
