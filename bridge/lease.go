package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// HAConfig configures the election of the instances that share a name.
type HAConfig struct {
	// Client reaches the keys below (a cluster client in cluster mode: the
	// keys share one hash tag). Run sets it.
	Client redis.UniversalClient
	// Prefix starts keyrelay's keys (keyrelay:NAME:).
	Prefix string
	// Instance is this process's id (the markers' too).
	Instance string
	// Lease is the lease's time to live: a killed leader is replaced within
	// about this long.
	Lease time.Duration
	// Report is how often the leader writes its delivered position and a
	// standby reads it (the marker interval).
	Report time.Duration
	// Limit bounds the records a standby holds.
	Limit int
}

// The keys of the election, under one hash tag so that a script may use
// them together in cluster mode.
func leaseKey(prefix string) string { return prefix + "{ha}:leader" }
func epochKey(prefix string) string { return prefix + "{ha}:epoch" }
func ackedKey(prefix string) string { return prefix + "{ha}:delivered" }

// LeaseKey is the key naming the current leader ("instance epoch").
func LeaseKey(prefix string) string { return leaseKey(prefix) }

// acquire takes the lease if nobody holds it, under a new epoch.
var acquireScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local e = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. e, 'PX', ARGV[2])
  return e
end
return 0`)

// renew extends the lease if this instance still holds it.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`)

// release gives the lease up if this instance holds it.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)

// Elector runs the election for a Relay with HA enabled: it takes the lease
// when nobody holds it, renews it, and moves the relay between leader and
// standby. The leader writes, every Report, the id of the last record per
// node that every sink has acknowledged; a standby reads it and drops what
// it holds up to there, and a new leader starts after it.
type Elector struct {
	cfg HAConfig
	h   *haState
	log *slog.Logger

	mu      sync.Mutex
	epoch   int64
	value   string    // the lease's value while leading
	renewed time.Time // send time of the last successful renew (or acquire)
	final   []string  // the delivered position at the end of the relay's shutdown

	stopping  atomic.Bool // no more campaigning: the process is stopping
	clientSet atomic.Bool // Run set cfg.Client
	denied    atomic.Bool // the lease scripts were refused (logged once)
}

// client is the connection Run was given.
func (e *Elector) client() redis.UniversalClient {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cfg.Client
}

// Stopping ends campaigning: an instance that is stopping must not take
// over. A leader keeps renewing until Handover.
func (e *Elector) Stopping() { e.stopping.Store(true) }

// EnableHA makes r start as a standby that holds what it receives until e
// makes it the leader. Call before Start; the relay must have a spool (the
// leader's delivered position is its cursors').
func (r *Relay) EnableHA(cfg HAConfig, m *HAMetrics, log *slog.Logger) (*Elector, error) {
	if r.spool == nil {
		return nil, errors.New("bridge: HA needs the durable spool")
	}
	r.ha = &haState{r: r, metrics: m, limit: max(cfg.Limit, 1), leaderCh: make(chan struct{}),
		sources: map[string]*haSource{}}
	m.Leader.Set(0)
	e := &Elector{cfg: cfg, h: r.ha, log: log.With("instance", cfg.Instance)}
	r.ha.onFinal = e.noteFinal
	return e, nil
}

// Leader reports whether this instance leads.
func (e *Elector) Leader() bool { return e.h.leader.Load() }

// Epoch returns the epoch of the current or last leadership (0: never led).
func (e *Elector) Epoch() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.epoch
}

// Run campaigns through client until ctx ends. It does not release the
// lease: Handover does.
func (e *Elector) Run(ctx context.Context, client redis.UniversalClient) {
	e.mu.Lock()
	e.cfg.Client = client
	e.mu.Unlock()
	e.clientSet.Store(true)
	step := max(e.cfg.Lease/10, 50*time.Millisecond)
	t := time.NewTicker(step)
	defer t.Stop()
	var lastReport time.Time
	for {
		now := time.Now()
		if e.Leader() {
			e.renew(ctx, now)
		} else {
			e.campaign(ctx)
		}
		if now.Sub(lastReport) >= e.cfg.Report {
			lastReport = now
			e.report(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (e *Elector) cmdCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, max(e.cfg.Lease/4, 200*time.Millisecond))
}

// campaign takes the lease if it is free.
func (e *Elector) campaign(ctx context.Context) {
	if e.stopping.Load() {
		return
	}
	cctx, cancel := e.cmdCtx(ctx)
	defer cancel()
	sent := time.Now()
	n, err := acquireScript.Run(cctx, e.client(), []string{leaseKey(e.cfg.Prefix), epochKey(e.cfg.Prefix)},
		e.cfg.Instance, e.cfg.Lease.Milliseconds()).Int64()
	if err != nil {
		switch {
		case ctx.Err() != nil:
		case errors.Is(ClassifyRedisError(err), ErrRedisPermission):
			if e.denied.CompareAndSwap(false, true) {
				e.log.Error("ha: the Redis user may not run the lease scripts: this instance can never lead (grant +eval +evalsha +incr +pexpire +del on ~"+e.cfg.Prefix+"*)", "err", err)
			}
		default:
			e.log.Debug("ha: cannot campaign", "err", err)
		}
		return
	}
	if n == 0 {
		return
	}
	ids := e.readDelivered(ctx)
	e.mu.Lock()
	e.epoch, e.value, e.renewed = n, e.cfg.Instance+" "+strconv.FormatInt(n, 10), sent
	e.mu.Unlock()
	replayed := e.h.promote(ids)
	e.h.metrics.Leader.Set(1)
	e.h.metrics.Epoch.Set(float64(n))
	e.h.metrics.RoleChanges.WithLabelValues("leader").Inc()
	e.log.Info("ha: leading: publishing to the sinks", "epoch", n, "resumed_after", ids,
		"replayed", replayed)
}

// renew extends the lease; a lease lost, or not renewed for three quarters
// of its life, makes this instance stand by before another can take it.
func (e *Elector) renew(ctx context.Context, now time.Time) {
	e.mu.Lock()
	value, renewed := e.value, e.renewed
	e.mu.Unlock()
	// The renewal may not run past the moment this instance must stand by.
	cctx, cancel := context.WithDeadline(ctx, renewed.Add(e.cfg.Lease*3/4))
	defer cancel()
	n, err := renewScript.Run(cctx, e.client(), []string{leaseKey(e.cfg.Prefix)}, value, e.cfg.Lease.Milliseconds()).Int64()
	switch {
	case err == nil && n == 1:
		e.mu.Lock()
		e.renewed = now
		e.mu.Unlock()
	case err == nil:
		e.standBy("the lease is held by another instance")
	case ctx.Err() != nil:
	case time.Since(renewed) >= e.cfg.Lease*3/4:
		e.standBy(fmt.Sprintf("the lease could not be renewed for %s (%v)", time.Since(renewed).Round(time.Millisecond), err))
	default:
		e.log.Warn("ha: lease renewal failed, retrying", "err", err)
	}
}

func (e *Elector) standBy(why string) {
	e.h.demote()
	e.h.metrics.Leader.Set(0)
	e.h.metrics.RoleChanges.WithLabelValues("standby").Inc()
	e.log.Warn("ha: standing by: "+why, "epoch", e.Epoch())
}

// report writes the delivered position (leader) or drops what the holds
// keep up to it (standby).
func (e *Elector) report(ctx context.Context) {
	if e.Leader() {
		e.writeDelivered(ctx, e.h.delivered())
		return
	}
	if ids := e.readDelivered(ctx); len(ids) > 0 {
		e.h.trim(ids)
	}
}

func (e *Elector) writeDelivered(ctx context.Context, ids []string) {
	if len(ids) == 0 {
		return
	}
	cctx, cancel := e.cmdCtx(ctx)
	defer cancel()
	v := strconv.FormatInt(e.Epoch(), 10) + " " + strings.Join(ids, " ")
	if err := e.client().Set(cctx, ackedKey(e.cfg.Prefix), v, aliveTTL).Err(); err != nil && ctx.Err() == nil {
		e.log.Warn("ha: cannot write the delivered position", "err", err)
	}
}

// readDelivered returns the ids of the leader's last written position.
func (e *Elector) readDelivered(ctx context.Context) []string {
	cctx, cancel := e.cmdCtx(ctx)
	defer cancel()
	v, err := e.client().Get(cctx, ackedKey(e.cfg.Prefix)).Result()
	if err != nil {
		if !errors.Is(err, redis.Nil) && ctx.Err() == nil {
			e.log.Warn("ha: cannot read the leader's delivered position", "err", err)
		}
		return nil
	}
	f := strings.Fields(v)
	if len(f) < 2 {
		return nil
	}
	return f[1:]
}

// noteFinal is called by the relay's shutdown once the sinks are done with
// the spool: it keeps the last delivered position for Handover.
func (e *Elector) noteFinal() {
	if e.Leader() {
		ids := e.h.delivered()
		e.mu.Lock()
		e.final = ids
		e.mu.Unlock()
	}
}

// Handover, at a stop, writes the leader's final delivered position and
// releases the lease, so that a standby takes over at once from there.
// Call it after the relay's Shutdown (and after Run returned).
func (e *Elector) Handover(ctx context.Context) {
	if !e.Leader() || !e.clientSet.Load() {
		return
	}
	e.mu.Lock()
	final, value := e.final, e.value
	e.mu.Unlock()
	e.writeDelivered(ctx, final)
	cctx, cancel := e.cmdCtx(ctx)
	defer cancel()
	if err := releaseScript.Run(cctx, e.client(), []string{leaseKey(e.cfg.Prefix)}, value).Err(); err != nil {
		e.log.Warn("ha: cannot release the lease: a standby takes over when it expires", "err", err)
		return
	}
	e.h.demote()
	e.h.metrics.Leader.Set(0)
	e.log.Info("ha: handed over: lease released", "epoch", e.Epoch(), "delivered", final)
}

// ProbeLease runs the renewal script on a probe key under prefix (which
// holds nothing): an error says this user may not run the election.
func ProbeLease(ctx context.Context, c redis.UniversalClient, prefix string) error {
	return renewScript.Run(ctx, c, []string{leaseKey(prefix)}, "probe", 1000).Err()
}

// ParseLease splits the lease's value into instance and epoch.
func ParseLease(v string) (instance string, epoch int64, ok bool) {
	inst, es, found := strings.Cut(v, " ")
	if !found {
		return "", 0, false
	}
	n, err := strconv.ParseInt(es, 10, 64)
	return inst, n, err == nil
}
