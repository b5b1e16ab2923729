package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// RelayConfig is the buffering, batching and retry configuration.
type RelayConfig struct {
	BufferRecords int           // per sink
	BufferBytes   int64         // per sink
	Overflow      Overflow      // what a full buffer drops
	Linger        time.Duration // how long a batch waits to fill
	RetryInitial  time.Duration // first back-off
	RetryMax      time.Duration // back-off cap
	Source        string        // host:port for gap records that belong to no node
}

// Relay fans records out to one bounded Queue per sink and runs each sink's
// workers: batching, one Publish attempt at a time, retry of exactly the
// failed entries with exponential back-off and jitter, and accounting of every
// record as delivered, rejected or dropped.
type Relay struct {
	cfg     RelayConfig
	log     *slog.Logger
	metrics *Metrics
	ids     *IDGenerator
	sinks   []*sinkRunner

	wg       sync.WaitGroup
	stopWork context.CancelFunc
	workCtx  context.Context
}

type sinkRunner struct {
	sink  Sink
	name  string
	lim   Limits
	queue *Queue
	relay *Relay

	mu      sync.Mutex
	up      bool
	seen    bool  // at least one attempt made
	dropped int64 // abandoned at shutdown
	// receive times of the first and last abandoned record
	droppedSince, droppedUntil time.Time
}

// NewRelay builds a relay for sinks. Start it before the first Emit.
func NewRelay(cfg RelayConfig, sinks []Sink, log *slog.Logger, m *Metrics) *Relay {
	r := &Relay{cfg: cfg, log: log, metrics: m, ids: NewIDGenerator()}
	for _, s := range sinks {
		lim := s.Limits()
		lim.MaxEntries = max(lim.MaxEntries, 1)
		lim.MaxInFlight = max(lim.MaxInFlight, 1)
		r.sinks = append(r.sinks, &sinkRunner{
			sink: s, name: s.Name(), lim: lim, relay: r, up: true,
			queue: NewQueue(cfg.BufferRecords, cfg.BufferBytes, cfg.Overflow),
		})
	}
	return r
}

// IDs returns the relay's record id generator, shared with subscribers.
func (r *Relay) IDs() *IDGenerator { return r.ids }

// Start launches every sink's workers. They run until Shutdown.
func (r *Relay) Start() {
	r.workCtx, r.stopWork = context.WithCancel(context.Background())
	for _, s := range r.sinks {
		// Export every series from the start, so that the first increase
		// is visible to rate() and increase() alerts.
		r.metrics.SinkUp.WithLabelValues(s.name).Set(1)
		r.metrics.Delivered.WithLabelValues(s.name)
		r.metrics.Retried.WithLabelValues(s.name)
		for _, reason := range []string{"too_large", "refused"} {
			r.metrics.Rejected.WithLabelValues(s.name, reason)
		}
		for _, reason := range []string{GapOverflow, GapShutdown} {
			r.metrics.Dropped.WithLabelValues(s.name, reason)
		}
		for range s.lim.MaxInFlight {
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				s.work(r.workCtx)
			}()
		}
	}
}

// Emit encodes rec once and appends it to every sink's buffer. It never
// blocks: a full buffer drops by policy, and the drop is counted and later
// reported by a gap record. Safe for concurrent use.
func (r *Relay) Emit(rec Record) {
	e := newEntry(&rec)
	for _, s := range r.sinks {
		res := s.queue.Push(e)
		if res.Dropped > 0 {
			r.metrics.Dropped.WithLabelValues(s.name, GapOverflow).Add(float64(res.Dropped))
		}
		if res.Ended != nil {
			r.overflowGap(s, res.Ended)
		}
	}
}

// newEntry encodes rec into a new Entry: two allocations, the Entry and
// its body. (One allocation holding both, 512 bytes, measured slower in
// BenchmarkEmit: it zeroes more and is scanned by the GC.)
func newEntry(rec *Record) *Entry {
	// A key of n bytes takes at most 4n/3+4 as base64 and usually n as a
	// JSON string; control characters (6 bytes escaped) are rare enough to
	// leave to append.
	size := 128 + len(rec.Source) + len(rec.Event) + len(rec.Key)*4/3
	return &Entry{Record: *rec, Body: rec.AppendJSON(make([]byte, 0, size))}
}

// EmitGap emits a gap record into every sink.
func (r *Relay) EmitGap(source, reason string, since, until time.Time) {
	now := time.Now()
	rec := Record{Type: TypeGap, ID: r.ids.New(now), Time: now, Source: source,
		Since: since, Until: until, Reason: reason}
	e := &Entry{Record: rec, Body: rec.AppendJSON(nil)}
	r.metrics.Gaps.WithLabelValues(reason).Inc()
	r.log.Warn("gap: events may be missing", "reason", reason, "source", source,
		"since", since, "until", until, "gap_id", rec.ID)
	for _, s := range r.sinks {
		s.queue.PushForce(e)
	}
}

// overflowGap reports an ended overflow episode of one sink, into that sink.
func (r *Relay) overflowGap(s *sinkRunner, ep *OverflowEpisode) {
	now := time.Now()
	rec := Record{Type: TypeGap, ID: r.ids.New(now), Time: now, Source: r.cfg.Source,
		Since: ep.Since, Until: ep.Until, Reason: GapOverflow, Dropped: ep.Dropped}
	r.metrics.Gaps.WithLabelValues(GapOverflow).Inc()
	r.log.Warn("gap: buffer overflow dropped records", "sink", s.name, "dropped", ep.Dropped,
		"since", ep.Since, "until", ep.Until, "gap_id", rec.ID, "policy", r.cfg.Overflow)
	s.queue.PushForce(&Entry{Record: rec, Body: rec.AppendJSON(nil)})
}

// Healthy reports whether every sink's last attempt succeeded.
func (r *Relay) Healthy() error {
	var errs []error
	for _, s := range r.sinks {
		s.mu.Lock()
		up := s.up
		s.mu.Unlock()
		if !up {
			errs = append(errs, fmt.Errorf("sink %s is failing", s.name))
		}
	}
	return errors.Join(errs...)
}

// UpdateGauges refreshes the buffer gauges; the HTTP handler calls it before
// serving /metrics.
func (r *Relay) UpdateGauges() {
	for _, s := range r.sinks {
		n, b := s.queue.Len()
		r.metrics.BufferRecords.WithLabelValues(s.name).Set(float64(n))
		r.metrics.BufferBytes.WithLabelValues(s.name).Set(float64(b))
	}
}

// Shutdown stops accepting records and delivers what is buffered, retrying
// as needed, until ctx is done. What is left then is counted as dropped
// (reason "shutdown") and logged; Shutdown returns an error naming how many
// records each sink could not deliver. It closes every sink.
func (r *Relay) Shutdown(ctx context.Context) error {
	for _, s := range r.sinks {
		if ep := s.queue.EndOverflow(); ep != nil {
			r.overflowGap(s, ep)
		}
		s.queue.Close()
	}
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		r.stopWork() // workers abandon their batches and count them
		<-done
	}
	r.stopWork()
	var errs []error
	for _, s := range r.sinks {
		if left, _ := s.queue.Len(); left > 0 {
			s.abandon(s.queue.Take(context.Background(), Limits{MaxEntries: left}, func(*Entry) int { return 0 }, 0), "shutdown deadline")
		}
		if n := s.abandoned(); n > 0 {
			errs = append(errs, fmt.Errorf("sink %s: %d records not delivered by the shutdown deadline", s.name, n))
			s.lastGap()
		}
		closeCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := s.sink.Close(closeCtx); err != nil {
			errs = append(errs, fmt.Errorf("sink %s: close: %w", s.name, err))
		}
		cancel()
	}
	r.UpdateGauges()
	return errors.Join(errs...)
}

// lastGap makes one short attempt to tell the sink's consumers that records
// were abandoned at the shutdown deadline. If the sink is still down it is
// lost, but the abandoned records are logged and counted either way.
func (s *sinkRunner) lastGap() {
	s.mu.Lock()
	since, until, n := s.droppedSince, s.droppedUntil, s.dropped
	s.mu.Unlock()
	r := s.relay
	now := time.Now()
	rec := Record{Type: TypeGap, ID: r.ids.New(now), Time: now, Source: r.cfg.Source,
		Since: since, Until: until, Reason: GapShutdown, Dropped: n}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r.metrics.Gaps.WithLabelValues(GapShutdown).Inc()
	err := s.sink.Publish(ctx, []*Entry{{Record: rec, Body: rec.AppendJSON(nil)}})
	r.log.Warn("gap: records abandoned at shutdown", "sink", s.name, "dropped", n,
		"since", since, "until", until, "gap_id", rec.ID, "gap_delivered", err == nil)
}

func (s *sinkRunner) abandoned() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// work takes batches and delivers them until the queue is closed and empty
// or ctx is cancelled.
func (s *sinkRunner) work(ctx context.Context) {
	for {
		batch := s.queue.Take(ctx, s.lim, s.sink.EntrySize, s.relay.cfg.Linger)
		if batch == nil {
			return
		}
		if ep := s.queue.EndOverflowIfDrained(); ep != nil {
			s.relay.overflowGap(s, ep)
		}
		s.deliver(ctx, batch)
	}
}

// deliver publishes batch until every entry is accepted or rejected, or ctx
// is cancelled (then the rest is abandoned and counted).
func (s *sinkRunner) deliver(ctx context.Context, batch []*Entry) {
	r := s.relay
	pending := batch[:0:0]
	for _, e := range batch {
		if size := s.sink.EntrySize(e); s.lim.MaxEntryBytes > 0 && size > s.lim.MaxEntryBytes {
			s.reject(e, "too_large", fmt.Errorf("record is %d bytes, the target accepts at most %d", size, s.lim.MaxEntryBytes))
			continue
		}
		pending = append(pending, e)
	}
	for attempt := 0; len(pending) > 0; attempt++ {
		if attempt > 0 {
			r.metrics.Retried.WithLabelValues(s.name).Add(float64(len(pending)))
			if !sleepCtx(ctx, backoff(r.cfg.RetryInitial, r.cfg.RetryMax, attempt)) {
				s.abandon(pending, "shutdown deadline")
				return
			}
		}
		start := time.Now()
		err := s.sink.Publish(ctx, pending)
		r.metrics.PublishTime.WithLabelValues(s.name).Observe(time.Since(start).Seconds())
		r.metrics.BatchSize.WithLabelValues(s.name).Observe(float64(len(pending)))
		if err == nil {
			r.metrics.Delivered.WithLabelValues(s.name).Add(float64(len(pending)))
			s.setUp(true, nil)
			return
		}
		var retry []*Entry
		var pe *PartialError
		switch {
		case errors.As(err, &pe):
			failed := make(map[int]bool, len(pe.Failed))
			for _, f := range pe.Failed {
				if f.Index < 0 || f.Index >= len(pending) || failed[f.Index] {
					r.log.Error("sink reported a failure for no entry of the batch (sink bug)",
						"sink", s.name, "index", f.Index, "batch", len(pending), "err", f.Err)
					continue
				}
				failed[f.Index] = true
				if IsPermanent(f.Err) {
					s.reject(pending[f.Index], "refused", f.Err)
				} else {
					retry = append(retry, pending[f.Index])
				}
			}
			r.metrics.Delivered.WithLabelValues(s.name).Add(float64(len(pending) - len(failed)))
			if len(retry) > 0 {
				s.setUp(false, pe)
			} else {
				s.setUp(true, nil) // the target answered; the refusals are about entries
			}
		case IsPermanent(err):
			for _, e := range pending {
				s.reject(e, "refused", err)
			}
		default:
			if ctx.Err() != nil {
				s.abandon(pending, "shutdown deadline")
				return
			}
			s.setUp(false, err)
			retry = pending
		}
		pending = retry
	}
}

func (s *sinkRunner) setUp(up bool, err error) {
	s.mu.Lock()
	changed := s.up != up || !s.seen
	s.up, s.seen = up, true
	s.mu.Unlock()
	if !changed {
		return
	}
	r := s.relay
	if up {
		r.metrics.SinkUp.WithLabelValues(s.name).Set(1)
		r.log.Info("sink up", "sink", s.name)
	} else {
		r.metrics.SinkUp.WithLabelValues(s.name).Set(0)
		r.log.Warn("sink down: retrying", "sink", s.name, "err", err)
	}
}

// reject accounts for one record the sink refused permanently.
func (s *sinkRunner) reject(e *Entry, reason string, err error) {
	r := s.relay
	r.metrics.Rejected.WithLabelValues(s.name, reason).Inc()
	r.log.Error("record rejected", "sink", s.name, "reason", reason, "err", err,
		"id", e.Record.ID, "type", e.Record.Type, "event", e.Record.Event, "db", e.Record.DB,
		"key_bytes", len(e.Record.Key), "key_prefix", printablePrefix(e.Record.Key, 64))
}

// abandon accounts for records left undelivered at the shutdown deadline.
func (s *sinkRunner) abandon(entries []*Entry, why string) {
	if len(entries) == 0 {
		return
	}
	r := s.relay
	r.metrics.Dropped.WithLabelValues(s.name, GapShutdown).Add(float64(len(entries)))
	s.mu.Lock()
	for _, e := range entries {
		t := e.Record.Time
		if s.dropped == 0 || t.Before(s.droppedSince) {
			s.droppedSince = t
		}
		if t.After(s.droppedUntil) {
			s.droppedUntil = t
		}
		s.dropped++
	}
	s.mu.Unlock()
	r.log.Error("records not delivered", "sink", s.name, "count", len(entries), "why", why,
		"first_id", entries[0].Record.ID, "last_id", entries[len(entries)-1].Record.ID)
}

// backoff returns the delay before retry attempt n (n >= 1): exponential from
// initial, capped at max, with jitter in [d/2, d).
func backoff(initial, maxDelay time.Duration, n int) time.Duration {
	d := initial
	for i := 1; i < n && d < maxDelay; i++ {
		d *= 2
	}
	d = min(d, maxDelay)
	half := d / 2
	return half + rand.N(half+1)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// printablePrefix returns up to n bytes of s, quoted, for log lines.
func printablePrefix(s string, n int) string {
	if len(s) > n {
		return fmt.Sprintf("%q…", s[:n])
	}
	return fmt.Sprintf("%q", s)
}
