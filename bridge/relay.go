package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyrelay/keyrelay/bridge/spool"
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
	// StallTimeout: a Publish running longer than this makes Healthy fail
	// (a standard output nobody reads). 0: 10 s.
	StallTimeout time.Duration
	// Spool, when set, is the durable spool (KEYRELAY_SPOOL_DIR): records
	// go through it instead of the in-memory queues, and the Relay closes
	// it at Shutdown. BufferRecords then sizes the hand-off between the
	// reader and the log.
	Spool *spool.Log
}

// shutdownGrace is how long Shutdown waits, after its deadline, for workers
// to return from a Publish that ignores its context. Workers still stuck
// then are abandoned with their batches (counted).
const shutdownGrace = time.Second

// finalBudget bounds, after the deliveries, the last gap records and the
// closing of every sink together.
const finalBudget = 2 * time.Second

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

	fatalOnce sync.Once
	fatal     chan error // receives the first ErrSinkClosed

	// The durable spool (nil: the in-memory queues); see spoolrelay.go.
	spool         *spool.Log
	hand          *handoff             // the readers' hand-off to the appender
	appended      chan struct{}        // closed when the appender has drained the hand-off
	ha            *haState             // nil unless HA (EnableHA)
	spoolAnchors  map[string]time.Time // newest marker per node in the spool at start
	drained       chan struct{}        // closed at shutdown once the appender is done
	spoolStarted  bool
	appendFailing bool // the last append failed (appender goroutine only)
}

type sinkRunner struct {
	sink  Sink
	name  string
	lim   Limits
	queue *Queue
	relay *Relay

	// workers[i] is the state of worker i's current Publish.
	workers []workerState

	mu      sync.Mutex
	up      bool
	seen    bool  // at least one attempt made
	closed  error // set once Publish returned ErrSinkClosed
	dropped int64 // abandoned at shutdown (or after the target closed)
	// receive times of the first and last abandoned record, and the ids
	droppedSince, droppedUntil time.Time
	firstDropped, lastDropped  string
	droppedWhy                 string

	// The durable spool path.
	cursor  *spool.Cursor
	gaps    []*Entry        // gap records for this sink only, delivered before the next batch (mu)
	spoolEp OverflowEpisode // records dropped before the cursor counts them (mu)
	ovfGap  *Entry          // the overflow gap record taken from the cursor, not yet delivered (mu)
	gapWake chan struct{}
}

// workerState is what one worker is publishing: Healthy reports a stalled
// Publish, and Shutdown counts the batch of a worker that never returns.
type workerState struct {
	since   atomic.Int64 // unix nanoseconds when the current Publish began; 0 when idle
	pending atomic.Int64 // entries of the batch being delivered
	batch   Batch        // the worker's own: the memory its batches are rebuilt in
}

// NewRelay builds a relay for sinks. Start it before the first Emit.
func NewRelay(cfg RelayConfig, sinks []Sink, log *slog.Logger, m *Metrics) *Relay {
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = 10 * time.Second
	}
	r := &Relay{cfg: cfg, log: log, metrics: m, ids: NewIDGenerator(), fatal: make(chan error, 1)}
	if cfg.Spool != nil {
		r.spool = cfg.Spool
		r.hand = newHandoff(max(cfg.BufferRecords, 1))
		r.appended = make(chan struct{})
		r.drained = make(chan struct{})
	}
	for _, s := range sinks {
		lim := s.Limits()
		lim.MaxEntries = max(lim.MaxEntries, 1)
		lim.MaxInFlight = max(lim.MaxInFlight, 1)
		r.sinks = append(r.sinks, &sinkRunner{
			sink: s, name: s.Name(), lim: lim, relay: r, up: true,
			queue:   NewQueue(cfg.BufferRecords, cfg.BufferBytes, cfg.Overflow),
			workers: make([]workerState, lim.MaxInFlight),
			gapWake: make(chan struct{}, 1),
		})
	}
	return r
}

// DropClosed is the Dropped reason of records held for a sink whose target
// closed for good (ErrSinkClosed).
const DropClosed = "closed"

// Fatal delivers the first error after which a sink can never deliver again
// (ErrSinkClosed): the daemon stops on it.
func (r *Relay) Fatal() <-chan error { return r.fatal }

// IDs returns the relay's record id generator, shared with subscribers.
func (r *Relay) IDs() *IDGenerator { return r.ids }

// Start launches every sink's workers. They run until Shutdown.
func (r *Relay) Start() {
	r.workCtx, r.stopWork = context.WithCancel(context.Background())
	if r.spool != nil {
		if err := r.startSpool(); err != nil {
			r.log.Error("spool: cannot start", "err", err)
			r.fatalOnce.Do(func() { r.fatal <- err })
			return
		}
		r.spoolStarted = true
	}
	for _, s := range r.sinks {
		// Export every series from the start, so that the first increase
		// is visible to rate() and increase() alerts.
		r.metrics.SinkUp.WithLabelValues(s.name).Set(1)
		r.metrics.BufferCapacityRecords.WithLabelValues(s.name).Set(float64(r.cfg.BufferRecords))
		r.metrics.BufferCapacityBytes.WithLabelValues(s.name).Set(float64(r.cfg.BufferBytes))
		r.metrics.Delivered.WithLabelValues(s.name)
		r.metrics.Retried.WithLabelValues(s.name)
		for _, reason := range []string{"too_large", "refused"} {
			r.metrics.Rejected.WithLabelValues(s.name, reason)
		}
		for _, reason := range []string{GapOverflow, GapShutdown, DropClosed} {
			r.metrics.Dropped.WithLabelValues(s.name, reason)
		}
		for i := range s.lim.MaxInFlight {
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				if r.spool != nil {
					s.spoolWork(r.workCtx, &s.workers[i])
					return
				}
				s.work(r.workCtx, &s.workers[i])
			}()
		}
	}
}

// Emit encodes rec once and appends it to every sink's buffer. It never
// blocks: a full buffer drops by policy, and the drop is counted and later
// reported by a gap record. Safe for concurrent use.
func (r *Relay) Emit(rec Record) {
	if r.ha != nil && r.ha.hold(&rec) {
		return
	}
	r.emitNow(&rec)
}

// emitNow is Emit past the HA hold.
func (r *Relay) emitNow(rec *Record) {
	if rec.Type == TypeGap {
		r.emitGapRecord(rec)
		return
	}
	if r.spool != nil {
		r.emitSpool(rec)
		return
	}
	// Encoded once into a scratch buffer that each queue copies from: no
	// allocation per record.
	bp := emitScratch.Get().(*[]byte)
	body := rec.AppendJSON((*bp)[:0])
	for _, s := range r.sinks {
		res := s.queue.PushRecord(rec, body)
		if res.Dropped > 0 {
			r.metrics.Dropped.WithLabelValues(s.name, GapOverflow).Add(float64(res.Dropped))
		}
		if res.Ended != nil {
			r.overflowGap(s, res.Ended)
		}
	}
	if cap(body) <= 64<<10 { // a huge key's buffer is left to the GC
		*bp = body
		emitScratch.Put(bp)
	}
}

// emitScratch holds emitNow's encoding buffers (Emit is called from every
// subscriber's reader goroutine).
var emitScratch = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// EmitGap emits a gap record into every sink.
func (r *Relay) EmitGap(source, reason string, since, until time.Time) {
	now := time.Now()
	rec := Record{Type: TypeGap, ID: r.ids.New(now), Time: now, Source: source,
		Since: since, Until: until, Reason: reason}
	if r.ha != nil && r.ha.hold(&rec) {
		r.log.Debug("standby: gap held until the leader reports past it", "reason", reason,
			"source", source, "since", since, "until", until)
		return
	}
	r.emitGapRecord(&rec)
}

// emitOverflowGap reports n key events dropped before any sink saw them.
func (r *Relay) emitOverflowGap(source string, n int64, since, until time.Time, why string) {
	now := time.Now()
	rec := Record{Type: TypeGap, ID: r.ids.New(now), Time: now, Source: source,
		Since: since, Until: until, Reason: GapOverflow, Dropped: n}
	r.log.Warn("records dropped: "+why, "dropped", n)
	r.emitGapRecord(&rec)
}

// emitGapRecord counts, logs and emits a gap record into every sink.
func (r *Relay) emitGapRecord(rec *Record) {
	e := &Entry{Record: *rec, Body: rec.AppendJSON(nil)}
	reason, source, since, until := rec.Reason, rec.Source, rec.Since, rec.Until
	r.metrics.Gaps.WithLabelValues(reason).Inc()
	r.log.Warn("gap: events may be missing", "reason", reason, "source", source,
		"since", since, "until", until, "gap_id", rec.ID, "dropped", rec.Dropped)
	if r.spool != nil {
		r.emitGapSpool(e)
		return
	}
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
	now := time.Now()
	for _, s := range r.sinks {
		s.mu.Lock()
		up, closed := s.up, s.closed
		s.mu.Unlock()
		switch {
		case closed != nil:
			errs = append(errs, fmt.Errorf("sink %s is closed: %w", s.name, closed))
			continue
		case !up:
			errs = append(errs, fmt.Errorf("sink %s is failing", s.name))
			continue
		}
		for i := range s.workers {
			if ns := s.workers[i].since.Load(); ns != 0 && now.Sub(time.Unix(0, ns)) > r.cfg.StallTimeout {
				errs = append(errs, fmt.Errorf("sink %s: a publish has been blocked for %s", s.name, now.Sub(time.Unix(0, ns)).Round(time.Second)))
				break
			}
		}
		if h, ok := s.sink.(HealthReporter); ok {
			if err := h.Healthy(); err != nil {
				errs = append(errs, fmt.Errorf("sink %s: %w", s.name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// UpdateGauges refreshes the buffer gauges; the HTTP handler calls it before
// serving /metrics.
func (r *Relay) UpdateGauges() {
	if r.spool != nil {
		r.updateSpoolGauges()
	}
	for _, s := range r.sinks {
		n, b := s.queue.Len()
		r.metrics.BufferRecords.WithLabelValues(s.name).Set(float64(n))
		r.metrics.BufferBytes.WithLabelValues(s.name).Set(float64(b))
	}
}

// Shutdown stops accepting records and delivers what is buffered, retrying
// as needed, until ctx is done. What is left then is counted as dropped
// (reason "shutdown") and logged in one line per sink; Shutdown returns an
// error naming how many records each sink could not deliver. It closes every
// sink. It returns at most about three seconds after ctx is done, whatever
// the sinks do (a Publish stuck on a pipe nobody reads is left behind), and
// at most about one second after ctx is cancelled (a second signal).
func (r *Relay) Shutdown(ctx context.Context) error {
	if r.spool != nil {
		return r.shutdownSpool(ctx)
	}
	for _, s := range r.sinks {
		if ep := s.queue.EndOverflow(); ep != nil {
			r.overflowGap(s, ep)
		}
		s.queue.Close()
	}
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	stuck := false
	select {
	case <-done:
	case <-ctx.Done():
		r.stopWork() // workers abandon their batches and count them
		select {
		case <-done:
		case <-time.After(shutdownGrace):
			stuck = true // a Publish ignores its context: leave it behind
		}
	}
	r.stopWork()
	// One short budget for the last gap records and closing the sinks, all
	// together: none after a second signal (ctx cancelled, not expired).
	final, cancelFinal := context.WithTimeout(context.Background(), finalBudget)
	defer cancelFinal()
	if errors.Is(ctx.Err(), context.Canceled) {
		cancelFinal()
	}
	var errs []error
	for _, s := range r.sinks {
		if stuck {
			for i := range s.workers {
				if n := s.workers[i].pending.Swap(0); n > 0 {
					s.abandonCount(n, "a publish did not return by the shutdown deadline")
				}
			}
		}
		if left, _ := s.queue.Len(); left > 0 {
			s.abandon(s.queue.Take(context.Background(), Limits{MaxEntries: left}, func(*Entry) int { return 0 }, 0), "shutdown deadline")
		}
		if n := s.abandoned(); n > 0 {
			errs = append(errs, fmt.Errorf("sink %s: %d records not delivered", s.name, n))
			s.summary()
			s.lastGap(final)
		}
		if err := s.sink.Close(final); err != nil {
			errs = append(errs, fmt.Errorf("sink %s: close: %w", s.name, err))
		}
	}
	r.UpdateGauges()
	return errors.Join(errs...)
}

// lastGap makes one short attempt to tell the sink's consumers that records
// were abandoned at the shutdown deadline. If the sink is still down it is
// lost, but the abandoned records are logged and counted either way.
func (s *sinkRunner) lastGap(ctx context.Context) {
	s.mu.Lock()
	since, until, n := s.droppedSince, s.droppedUntil, s.dropped
	s.mu.Unlock()
	r := s.relay
	now := time.Now()
	rec := Record{Type: TypeGap, ID: r.ids.New(now), Time: now, Source: r.cfg.Source,
		Since: since, Until: until, Reason: GapShutdown, Dropped: n}
	r.metrics.Gaps.WithLabelValues(GapShutdown).Inc()
	err := ErrSinkClosed
	s.mu.Lock()
	closed := s.closed != nil
	s.mu.Unlock()
	if !closed {
		err = s.sink.Publish(ctx, []*Entry{{Record: rec, Body: rec.AppendJSON(nil)}})
	}
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
func (s *sinkRunner) work(ctx context.Context, w *workerState) {
	for {
		batch := s.queue.TakeInto(ctx, s.lim, s.sink.EntrySize, s.relay.cfg.Linger, &w.batch)
		if batch == nil {
			return
		}
		if ep := s.queue.EndOverflowIfDrained(); ep != nil {
			s.relay.overflowGap(s, ep)
		}
		s.mu.Lock()
		closed := s.closed != nil
		s.mu.Unlock()
		if closed {
			s.drop(batch)
			continue
		}
		w.pending.Store(int64(len(batch)))
		s.deliver(ctx, w, batch)
		w.pending.Store(0)
	}
}

// deliver publishes batch until every entry is accepted or rejected, or ctx
// is cancelled (then the rest is abandoned and counted). It returns whether
// every entry was accepted or rejected.
func (s *sinkRunner) deliver(ctx context.Context, w *workerState, batch []*Entry) bool {
	r := s.relay
	pending := batch // a copy only once an entry is left out: the caller may read batch again
	for i, e := range batch {
		if size := s.sink.EntrySize(e); s.lim.MaxEntryBytes > 0 && size > s.lim.MaxEntryBytes {
			s.reject(e, "too_large", fmt.Errorf("record is %d bytes, the target accepts at most %d", size, s.lim.MaxEntryBytes))
			if len(pending) == len(batch) {
				pending = append(make([]*Entry, 0, len(batch)), batch[:i]...)
			}
			continue
		}
		if len(pending) < len(batch) {
			pending = append(pending, e)
		}
	}
	for attempt := 0; len(pending) > 0; attempt++ {
		if attempt > 0 {
			r.metrics.Retried.WithLabelValues(s.name).Add(float64(len(pending)))
			if !sleepCtx(ctx, Backoff(r.cfg.RetryInitial, r.cfg.RetryMax, attempt)) {
				s.abandon(pending, "shutdown deadline")
				return false
			}
		}
		start := time.Now()
		w.since.Store(start.UnixNano())
		err := s.sink.Publish(ctx, pending)
		w.since.Store(0)
		r.metrics.PublishTime.WithLabelValues(s.name).Observe(time.Since(start).Seconds())
		r.metrics.BatchSize.WithLabelValues(s.name).Observe(float64(len(pending)))
		if err == nil {
			r.metrics.Delivered.WithLabelValues(s.name).Add(float64(len(pending)))
			s.setUp(true, nil)
			return true
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
		case errors.Is(err, ErrSinkClosed):
			s.close(err)
			s.drop(pending)
			return false
		case IsPermanent(err):
			for _, e := range pending {
				s.reject(e, "refused", err)
			}
		default:
			if ctx.Err() != nil {
				s.abandon(pending, "shutdown deadline")
				return false
			}
			s.setUp(false, err)
			retry = pending
		}
		pending = retry
	}
	return true
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

// close marks the sink's target as closed for good: the Relay stops
// feeding it, and the daemon is told to stop.
func (s *sinkRunner) close(err error) {
	s.mu.Lock()
	first := s.closed == nil
	if first {
		s.closed = err
	}
	s.mu.Unlock()
	if !first {
		return
	}
	r := s.relay
	r.metrics.SinkUp.WithLabelValues(s.name).Set(0)
	r.log.Error("sink closed for good: stopping", "sink", s.name, "err", err)
	r.fatalOnce.Do(func() { r.fatal <- fmt.Errorf("sink %s: %w", s.name, err) })
}

// drop accounts for records that a closed sink can never take.
func (s *sinkRunner) drop(entries []*Entry) {
	if s.relay.spool != nil {
		return // not acknowledged: they stay in the spool
	}
	s.relay.metrics.Dropped.WithLabelValues(s.name, DropClosed).Add(float64(len(entries)))
	s.note(entries, "the sink's target is closed")
}

// abandon accounts for records left undelivered at the shutdown deadline.
func (s *sinkRunner) abandon(entries []*Entry, why string) {
	if len(entries) == 0 || s.relay.spool != nil {
		return
	}
	s.relay.metrics.Dropped.WithLabelValues(s.name, GapShutdown).Add(float64(len(entries)))
	s.note(entries, why)
}

// abandonCount accounts for n records whose entries are out of reach (held
// by a Publish that never returned).
func (s *sinkRunner) abandonCount(n int64, why string) {
	s.relay.metrics.Dropped.WithLabelValues(s.name, GapShutdown).Add(float64(n))
	s.mu.Lock()
	s.dropped += n
	s.droppedWhy = why
	s.mu.Unlock()
}

// note remembers undelivered records for the one summary line and the
// shutdown gap record: logging each batch would flood the log.
func (s *sinkRunner) note(entries []*Entry, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range entries {
		// The ids are cloned: a batch's entries live in its worker's reused memory.
		t := e.Record.Time
		if s.firstDropped == "" || t.Before(s.droppedSince) {
			s.droppedSince, s.firstDropped = t, strings.Clone(e.Record.ID)
		}
		if t.After(s.droppedUntil) || s.lastDropped == "" {
			s.droppedUntil, s.lastDropped = t, strings.Clone(e.Record.ID)
		}
		s.dropped++
	}
	s.droppedWhy = why
}

// summary logs the one line about every record the sink did not deliver.
func (s *sinkRunner) summary() {
	s.mu.Lock()
	n, why, first, last := s.dropped, s.droppedWhy, s.firstDropped, s.lastDropped
	since, until := s.droppedSince, s.droppedUntil
	s.mu.Unlock()
	s.relay.log.Error("records not delivered", "sink", s.name, "count", n, "why", why,
		"first_id", first, "last_id", last, "since", since, "until", until)
}

// Backoff returns the delay before retry attempt n (n >= 1): exponential
// from initial, capped at maxDelay, with jitter in [d/2, d]. The relay's
// retries use it, and so do sinks that retry on their own (reading an AWS
// target's attributes).
func Backoff(initial, maxDelay time.Duration, n int) time.Duration {
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
