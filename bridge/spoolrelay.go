package bridge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/keyrelay/keyrelay/bridge/spool"
)

// GapSpool is the reason of a gap record for records the durable spool could
// no longer deliver (a damaged or missing segment file, records an OS crash
// erased): Dropped is the exact count.
const GapSpool = "spool"

// The durable spool path of the Relay (RelayConfig.Spool set). Emit hands
// each entry to a bounded channel; one appender goroutine writes what the
// channel holds to the log in batches; each sink's workers read the log
// through the sink's own cursor, deliver with the same logic as the
// in-memory path, and acknowledge what the sink accepted or rejected.
// Records not acknowledged when the process stops (or dies) are read again
// at the next start, with their ids.

// Batches the appender writes at most in one Append: 8192 records, 4 MiB,
// and an eighth of the spool's bound (a batch must fit beside a full
// segment, or it would never fit). Under SyncEvery a batch is one fsync:
// large batches keep the appender ahead of a full-speed stream.
const (
	spoolAppendMax      = 8192
	spoolAppendMaxBytes = 4 << 20
)

// spoolGather is how long the appender lets a small group of records
// gather before it writes them; spoolGatherEvery under SyncEvery, where a
// group costs an fsync too (at full speed, 2 to 3 ms each on this
// project's test machine).
const (
	spoolGather      = time.Millisecond
	spoolGatherEvery = 3 * time.Millisecond
)

// spoolIdle is how long a worker waits for more records once the appender
// has drained at shutdown before it concludes its cursor is caught up.
const spoolIdle = 100 * time.Millisecond

// emitSpool encodes the key event rec into the hand-off without blocking;
// a full hand-off drops it for every sink (counted, reported by an overflow
// gap).
func (r *Relay) emitSpool(rec *Record) {
	bp := emitScratch.Get().(*[]byte)
	body := rec.AppendJSON((*bp)[:0])
	ok := r.hand.put(rec, body, nil, false)
	if cap(body) <= 64<<10 {
		*bp = body
		emitScratch.Put(bp)
	}
	if ok {
		return
	}
	for _, s := range r.sinks {
		r.metrics.Dropped.WithLabelValues(s.name, GapOverflow).Inc()
		s.noteSpoolDrop(1, rec.Time, rec.Time)
	}
}

// replay hands a record a standby held to the appender at its takeover:
// waiting for room (this is not the reader's goroutine), so that a large
// hold is not cut by the hand-off's bound.
func (r *Relay) replay(rec *Record) {
	if rec.Type == TypeGap || r.spool == nil {
		r.emitNow(rec)
		return
	}
	if !r.hand.put(rec, rec.AppendJSON(nil), nil, true) {
		r.emitSpool(rec) // after the stop: counted as dropped, as any record then
	}
}

// SpoolMarker keeps source's anchor (everything it published before was
// received) in the spool, for the next start's restart gap. A full hand-off
// or a standby skips it: markers are not records.
func (r *Relay) SpoolMarker(source string, anchor time.Time) {
	r.trySpool(&Record{Type: typeMarker, Source: source, Time: anchor})
}

// spoolPosition, on an HA leader, keeps in the spool the place of a marker
// in the node's stream (its send time is an anchor too): once every sink
// acknowledged past it, the leader's delivered position is after that
// marker even if no record followed it, so standbys stop holding what came
// before it (ha.go).
func (r *Relay) spoolPosition(source string, ref markerRef, idx uint64) {
	r.trySpool(&Record{Type: typeMarker, Source: source, Time: time.UnixMilli(int64(ref.ms)),
		ID: haID(ref, 0), placed: true, pos: haPos{idx, 0}})
}

// trySpool hands a marker to the appender if there is room; a standby
// writes none.
func (r *Relay) trySpool(rec *Record) {
	if r.spool == nil || (r.ha != nil && !r.ha.leader.Load()) {
		return
	}
	r.hand.put(rec, nil, nil, false)
}

// SpoolAnchor returns the newest anchor of source the spool held at start.
func (r *Relay) SpoolAnchor(source string) (time.Time, bool) {
	t, ok := r.spoolAnchors[source]
	return t, ok
}

// readSpoolAnchors finds the newest marker of each node in the spool's
// newest segments.
func (r *Relay) readSpoolAnchors() {
	r.spoolAnchors = map[string]time.Time{}
	err := r.spool.ScanBack(func(_ uint64, _ time.Time, data []byte) {
		if !isSpoolMarker(data) {
			return
		}
		if source, anchor, ok := decodeSpoolMarker(data); ok && anchor.After(r.spoolAnchors[source]) {
			r.spoolAnchors[source] = anchor
		}
	}, func() bool { return len(r.spoolAnchors) > 0 })
	if err != nil {
		r.log.Warn("spool: cannot read the last markers: restart gaps rest on the alive key alone", "err", err)
	}
}

// emitGapSpool puts a gap record into the log for every sink. It waits for
// room in the hand-off (the appender never waits long): gap records report
// losses and are not dropped.
func (r *Relay) emitGapSpool(e *Entry) {
	if !r.hand.put(&e.Record, e.Body, e, true) {
		for _, s := range r.sinks { // after the stop
			s.pushGap(e)
		}
	}
}

// noteSpoolDrop adds n records dropped for this sink (received between since
// and until) to its open overflow episode, in memory until the appender
// moves it into the sink's cursor (moveSpoolDrops): the reader never waits
// for the log.
func (s *sinkRunner) noteSpoolDrop(n int64, since, until time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ep := &s.spoolEp
	if !since.IsZero() && (ep.Dropped == 0 || ep.Since.IsZero() || since.Before(ep.Since)) {
		ep.Since = since
	}
	if until.After(ep.Until) {
		ep.Until = until
	}
	ep.Dropped += n
}

// moveSpoolDrops moves the drops noteSpoolDrop counted in memory into each
// sink's cursor, which keeps them in its file from the next checkpoint on;
// it reports whether there were any.
func (r *Relay) moveSpoolDrops() bool {
	moved := false
	for _, s := range r.sinks {
		if s.cursor == nil {
			continue
		}
		s.mu.Lock()
		ep := s.spoolEp
		s.spoolEp = OverflowEpisode{}
		s.mu.Unlock()
		if ep.Dropped == 0 {
			continue
		}
		if err := s.cursor.AddOverflow(spool.Overflow{Count: ep.Dropped, Since: ep.Since, Until: ep.Until}); err != nil {
			s.noteSpoolDrop(ep.Dropped, ep.Since, ep.Until) // closed: reported at shutdown, if at all
			continue
		}
		moved = true
	}
	return moved
}

// spoolRecordTime returns the receive time of a record encoded by
// encodeSpoolRecord (zero if it cannot be read), without decoding the rest.
func spoolRecordTime(b []byte) time.Time {
	d := spoolDecoder{b: b}
	d.byte()  // version
	d.byte()  // type
	d.bytes() // id
	d.bytes() // source
	t := d.tm()
	if d.err != nil {
		return time.Time{}
	}
	return t
}

// pushGap queues a gap record for this sink only, outside the log: the
// sink's workers deliver it before their next batch.
func (s *sinkRunner) pushGap(e *Entry) {
	s.mu.Lock()
	s.gaps = append(s.gaps, e)
	s.mu.Unlock()
	select {
	case s.gapWake <- struct{}{}:
	default:
	}
}

func (s *sinkRunner) takeGaps() []*Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.gaps
	s.gaps = nil
	return g
}

// flushSpoolEpisodes reports each sink's overflow with a gap record carrying
// its exact count. The count lives in the sink's cursor (its file, from the
// next checkpoint on) until the sink accepts the gap record: a kill before
// then makes the next start report it again, under the same id. One such
// gap record per sink is out at a time; what is dropped meanwhile waits for
// the next one.
func (r *Relay) flushSpoolEpisodes() {
	persist := r.moveSpoolDrops()
	var out []*sinkRunner
	var gaps []*Entry
	for _, s := range r.sinks {
		if s.cursor == nil {
			continue
		}
		s.mu.Lock()
		busy := s.ovfGap != nil
		s.mu.Unlock()
		if busy {
			continue
		}
		now := time.Now()
		id := r.ids.New(now)
		o, ok := s.cursor.TakeOverflow(id)
		if !ok {
			continue
		}
		again := o.ID != id
		if o.ID == "" {
			o.ID = id
		}
		persist = persist || !again
		rec := Record{Type: TypeGap, ID: o.ID, Time: now, Source: r.cfg.Source,
			Since: o.Since, Until: o.Until, Reason: GapOverflow, Dropped: o.Count}
		if !again {
			r.metrics.Gaps.WithLabelValues(GapOverflow).Inc()
		}
		// again: sent before the last stop, not known to be delivered.
		r.log.Warn("gap: spool overflow dropped records", "sink", s.name, "dropped", o.Count,
			"since", o.Since, "until", o.Until, "gap_id", rec.ID, "policy", r.cfg.Overflow, "again", again)
		e := &Entry{Record: rec, Body: rec.AppendJSON(nil)}
		s.mu.Lock()
		s.ovfGap = e
		s.mu.Unlock()
		out, gaps = append(out, s), append(gaps, e)
	}
	if persist {
		// The count, and a sealed report's id, are in the cursor files
		// before any sink sees the gap record.
		if err := r.spool.Checkpoint(); err != nil && !errors.Is(err, spool.ErrClosed) {
			r.log.Warn("spool: checkpoint failed", "err", err)
		}
	}
	for i, s := range out {
		s.pushGap(gaps[i])
	}
}

// gapsDelivered clears the cursor's overflow once the sink accepted its
// gap record (among gaps).
func (s *sinkRunner) gapsDelivered(gaps []*Entry) {
	s.mu.Lock()
	e := s.ovfGap
	s.mu.Unlock()
	if e == nil {
		return
	}
	for _, g := range gaps {
		if g == e {
			s.cursor.ClearOverflow()
			s.mu.Lock()
			s.ovfGap = nil
			s.mu.Unlock()
			return
		}
	}
}

// startSpool opens one cursor per sink, removes the cursors of sinks no
// longer configured, and starts the appender.
func (r *Relay) startSpool() error {
	r.readSpoolAnchors()
	names := map[string]bool{}
	for _, s := range r.sinks {
		c, err := r.spool.Cursor(s.name)
		if err != nil {
			return fmt.Errorf("spool cursor %s: %w", s.name, err)
		}
		s.cursor = c
		names[s.name] = true
	}
	for _, cs := range r.spool.Stat().Cursors {
		if !names[cs.Name] {
			if err := r.spool.RemoveCursor(cs.Name); err != nil {
				r.log.Warn("spool: cannot remove the cursor of a sink no longer configured", "cursor", cs.Name, "err", err)
			} else {
				r.log.Info("spool: removed the cursor of a sink no longer configured", "cursor", cs.Name, "lag", cs.Lag)
			}
		}
	}
	// Overflow a previous run counted and did not get delivered.
	r.flushSpoolEpisodes()
	go r.appendLoop()
	return nil
}

// appendLoop appends what the hand-off holds, a group at a time, until it
// is closed and empty.
func (r *Relay) appendLoop() {
	defer close(r.appended)
	var g handBatch
	gather, gatherBelow := spoolGather, spoolAppendMax/8
	if r.spool.SyncPolicy() == spool.SyncEvery {
		gather, gatherBelow = spoolGatherEvery, spoolAppendMax/2
	}
	maxBytes := int(min(int64(spoolAppendMaxBytes), r.spool.Stat().MaxBytes/8))
	// An overflow episode is reported at the latest a second after it
	// began, even if no record follows to end it.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			r.flushSpoolEpisodes()
			continue
		case <-r.hand.wake:
		}
		if n := r.hand.len(); n > 0 && n < gatherBelow {
			// Let a group gather: at full speed a write (and with
			// SyncEvery an fsync) per few records costs more than the
			// records; a few milliseconds are far below the batch linger.
			time.Sleep(gather)
		}
		closed := r.hand.take(&g)
		// In batches of at most spoolAppendMax records and maxBytes bytes.
		for i := 0; i < len(g.payloads); {
			first, size := i, 0
			for i < len(g.payloads) && i-first < spoolAppendMax && (i == first || size+len(g.payloads[i]) <= maxBytes) {
				size += len(g.payloads[i])
				i++
			}
			r.appendBatch(g.meta[first:i], g.payloads[first:i])
		}
		if closed {
			r.flushSpoolEpisodes()
			return
		}
	}
}

// appendBatch writes one batch; on ErrFull it applies the overflow policy.
func (r *Relay) appendBatch(batch []handMeta, payloads [][]byte) {
	at := batch[len(batch)-1].time
	if at.IsZero() {
		at = time.Now()
	}
	first, err := r.spool.AppendAt(at, payloads)
	if errors.Is(err, spool.ErrFull) && r.cfg.Overflow == DropOldest {
		if kept := r.dropOldest(); len(kept) > 0 {
			// Gap records from the skipped file go back into the log,
			// before the batch, so that a kill cannot lose them. A sink
			// that had delivered them gets them again, with their ids.
			kb := make([]handMeta, 0, len(kept)+len(batch))
			kp := make([][]byte, 0, len(kept)+len(payloads))
			for _, rec := range kept {
				e, derr := decodeSpoolEntry(rec.Data)
				if derr != nil {
					continue
				}
				m := handMeta{typ: e.Record.Type, time: e.Record.Time, source: e.Record.Source, id: e.Record.ID}
				if e.Record.Type == TypeGap {
					m.gap = e
				}
				kb, kp = append(kb, m), append(kp, rec.Data)
			}
			batch, payloads = append(kb, batch...), append(kp, payloads...)
		}
		first, err = r.spool.AppendAt(at, payloads)
	}
	if err == nil {
		if r.ha != nil {
			r.ha.mark(first, batch)
		}
		if r.appendFailing {
			r.appendFailing = false
			r.log.Info("spool: appending again")
		}
		if r.hand.len() <= r.hand.max/2 {
			r.flushSpoolEpisodes()
		}
		return
	}
	if !errors.Is(err, spool.ErrFull) && !r.appendFailing {
		r.appendFailing = true
		r.log.Error("spool: append failed: dropping records (counted, reported by an overflow gap)", "err", err)
	}
	// The batch is dropped for every sink; its gap records are not lost:
	// each sink gets them outside the log.
	var n int64
	var since, until time.Time
	for _, m := range batch {
		switch m.typ {
		case typeMarker:
			continue // not a record
		case TypeGap:
			for _, s := range r.sinks {
				s.pushGap(m.gap)
			}
			continue
		}
		t := m.time
		if n == 0 || t.Before(since) {
			since = t
		}
		if t.After(until) {
			until = t
		}
		n++
	}
	if n == 0 {
		return
	}
	r.moveSpoolDrops()
	for _, s := range r.sinks {
		r.metrics.Dropped.WithLabelValues(s.name, GapOverflow).Add(float64(n))
		if s.cursor == nil || s.cursor.AddOverflow(spool.Overflow{Count: n, Since: since, Until: until}) != nil {
			s.noteSpoolDrop(n, since, until)
		}
	}
	// Durable before anything else happens: these records are in no file.
	if err := r.spool.Checkpoint(); err != nil && !errors.Is(err, spool.ErrClosed) {
		r.log.Warn("spool: checkpoint failed", "err", err)
	}
}

// dropOldest makes every cursor behind the oldest segment skip it (each
// sink's skipped records go to its cursor's overflow, reported by an
// overflow gap record), so that the segment can be deleted. Gap records in
// it are not dropped, as the in-memory buffer never evicts one: they are
// returned (once, whichever sinks skipped them) for the caller to append
// again. The checkpoint writes each moved position with its overflow.
func (r *Relay) dropOldest() []spool.Record {
	end, ok := r.spool.OldestSegmentEnd()
	if !ok {
		return nil
	}
	var kept []spool.Record
	seen := map[uint64]bool{}
	for _, s := range r.sinks {
		if s.cursor == nil {
			continue
		}
		d, err := s.cursor.DropFunc(end, spoolDropInspect)
		if err != nil {
			r.log.Warn("spool: drop of the oldest records failed", "sink", s.name, "err", err)
			continue
		}
		for _, rec := range d.Kept {
			if isSpoolMarker(rec.Data) {
				continue // keyrelay's own: neither counted nor kept
			}
			if !seen[rec.Seq] {
				seen[rec.Seq] = true
				kept = append(kept, rec)
			}
		}
		if d.Count > 0 {
			r.metrics.Dropped.WithLabelValues(s.name, GapOverflow).Add(float64(d.Count))
		}
	}
	if err := r.spool.Checkpoint(); err != nil {
		r.log.Warn("spool: checkpoint failed", "err", err)
	}
	slices.SortFunc(kept, func(a, b spool.Record) int { return cmp.Compare(a.Seq, b.Seq) })
	return kept
}

// spoolDropInspect keeps gap records from a drop (and takes markers out
// of the count: dropOldest forgets them) and times the others by their
// receive time (the log stamps a batch with its newest record's).
func spoolDropInspect(data []byte, _ time.Time) (bool, time.Time) {
	if isSpoolGap(data) || isSpoolMarker(data) {
		return true, time.Time{}
	}
	return false, spoolRecordTime(data)
}

// spoolWork reads the sink's cursor and delivers until ctx is cancelled, the
// log is closed, or (once the appender has drained at shutdown) nothing is
// left.
func (s *sinkRunner) spoolWork(ctx context.Context, w *workerState) {
	r := s.relay
	for {
		if r.ha != nil && !r.ha.waitLeader(ctx.Done(), r.drained) {
			return // a standby delivers nothing, not even at its stop
		}
		if gaps := s.takeGaps(); len(gaps) > 0 {
			if !s.deliverSplit(ctx, w, gaps) {
				return // gap records left undelivered at the deadline (logged at shutdown)
			}
			s.gapsDelivered(gaps)
			continue
		}
		s.mu.Lock()
		closed := s.closed != nil
		s.mu.Unlock()
		if closed {
			return // the records stay in the spool
		}
		drained := false
		select {
		case <-r.drained:
			drained = true
		default:
		}
		recs, err := s.next(ctx, drained)
		if err != nil {
			switch {
			case ctx.Err() != nil, errors.Is(err, spool.ErrClosed):
				return
			case errors.Is(err, context.DeadlineExceeded) && drained:
				if s.hasGaps() {
					continue
				}
				return
			case errors.Is(err, errGapWake):
				continue
			}
			r.log.Error("spool: read failed", "sink", s.name, "err", err)
			if !sleepCtx(ctx, r.cfg.RetryInitial) {
				return
			}
			continue
		}
		// Rebuilt in the worker's reused memory; their strings alias the
		// records' data, which the cursor gave this batch alone.
		w.batch.reset(len(recs))
		for _, rec := range recs {
			if rec.Lost == nil && isSpoolMarker(rec.Data) {
				continue // keyrelay's own, acknowledged with the batch
			}
			w.batch.ptrs = append(w.batch.ptrs, s.spoolEntry(rec, &w.batch))
		}
		entries := w.batch.ptrs
		if !s.deliverSplit(ctx, w, entries) {
			return // not acknowledged: read again at the next start
		}
		s.ack(recs)
	}
}

// errGapWake interrupts a worker waiting for records: a gap record was
// queued for its sink, or the appender finished at shutdown.
var errGapWake = errors.New("gap record queued")

func (s *sinkRunner) hasGaps() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.gaps) > 0
}

// next returns the next records of the sink's cursor, lingering up to the
// configured linger for a fuller batch. A gap record queued for the sink
// interrupts the wait (errGapWake).
func (s *sinkRunner) next(ctx context.Context, drained bool) ([]spool.Record, error) {
	r := s.relay
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopWake := make(chan struct{})
	defer close(stopWake)
	var drainedCh <-chan struct{}
	if !drained {
		drainedCh = r.drained // wake up to notice the end of the appender
	}
	go func() {
		select {
		case <-s.gapWake:
			cancel(errGapWake)
		case <-drainedCh:
			cancel(errGapWake)
		case <-stopWake:
		}
	}()
	nctx := wctx
	if drained {
		var c context.CancelFunc
		nctx, c = context.WithTimeout(wctx, spoolIdle)
		defer c()
	}
	recs, err := s.cursor.Next(nctx, s.lim.MaxEntries, s.lim.MaxBatchBytes)
	if err != nil {
		if cause := context.Cause(wctx); errors.Is(cause, errGapWake) && ctx.Err() == nil {
			return nil, errGapWake
		}
		return nil, err
	}
	if r.cfg.Linger <= 0 || len(recs) >= s.lim.MaxEntries || drained {
		return recs, nil
	}
	lctx, c := context.WithTimeout(ctx, r.cfg.Linger)
	defer c()
	for len(recs) < s.lim.MaxEntries {
		more, err := s.cursor.Next(lctx, s.lim.MaxEntries-len(recs), s.lim.MaxBatchBytes)
		if err != nil {
			break
		}
		recs = append(recs, more...)
	}
	return recs, nil
}

// spoolEntry turns one record read from the spool into the entry to
// deliver: the stored one, or a gap record for records the spool lost.
func (s *sinkRunner) spoolEntry(rec spool.Record, b *Batch) *Entry {
	r := s.relay
	var since, until time.Time
	var n int64
	if rec.Lost != nil {
		since, until, n = rec.Lost.Since, rec.Lost.Until, rec.Lost.Count
	} else {
		b.entries = append(b.entries, Entry{})
		e := &b.entries[len(b.entries)-1]
		if err := decodeSpoolEntryInto(e, rec.Data, true); err == nil {
			return e
		}
		since, until, n = rec.Time, rec.Time, 1
	}
	now := time.Now()
	g := Record{Type: TypeGap, ID: r.ids.New(now), Time: now, Source: r.cfg.Source,
		Since: since, Until: until, Reason: GapSpool, Dropped: n}
	r.metrics.Gaps.WithLabelValues(GapSpool).Inc()
	r.log.Warn("gap: records lost in the spool", "sink", s.name, "dropped", n,
		"since", since, "until", until, "gap_id", g.ID)
	return &Entry{Record: g, Body: g.AppendJSON(nil)}
}

// deliverSplit delivers entries in batches within the sink's limits; false
// when it was cut short (shutdown deadline, closed target).
func (s *sinkRunner) deliverSplit(ctx context.Context, w *workerState, entries []*Entry) bool {
	for len(entries) > 0 {
		n, total := 0, 0
		for n < len(entries) && n < s.lim.MaxEntries {
			sz := s.sink.EntrySize(entries[n])
			if n > 0 && s.lim.MaxBatchBytes > 0 && total+sz > s.lim.MaxBatchBytes {
				break
			}
			total += sz
			n++
		}
		w.pending.Store(int64(n))
		ok := s.deliver(ctx, w, entries[:n])
		w.pending.Store(0)
		if !ok {
			return false
		}
		entries = entries[n:]
	}
	return true
}

// ack acknowledges the records' sequence ranges, merging consecutive ones.
func (s *sinkRunner) ack(recs []spool.Record) {
	flush := func(first, last uint64) {
		if err := s.cursor.Ack(first, last); err != nil && !errors.Is(err, spool.ErrClosed) {
			s.relay.log.Error("spool: ack failed", "sink", s.name, "err", err)
		}
	}
	first, last := recs[0].Seq, recs[0].Last()
	for _, rec := range recs[1:] {
		if rec.Seq == last+1 {
			last = rec.Last()
			continue
		}
		flush(first, last)
		first, last = rec.Seq, rec.Last()
	}
	flush(first, last)
}

// shutdownSpool: stop accepting, drain the hand-off into the log, let the
// workers deliver until ctx is done, close the sinks and the log. What is
// not delivered stays in the spool for the next start and is not lost.
func (r *Relay) shutdownSpool(ctx context.Context) error {
	r.hand.close()
	if r.spoolStarted {
		<-r.appended
	}
	close(r.drained)
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		r.stopWork()
		select {
		case <-done:
		case <-time.After(shutdownGrace):
			// A Publish ignores its context: its records are not
			// acknowledged, they stay in the spool.
		}
	}
	r.stopWork()
	if r.ha != nil && r.ha.onFinal != nil {
		r.ha.onFinal() // the leader's last delivered position, for its handover
	}
	final, cancelFinal := context.WithTimeout(context.Background(), finalBudget)
	defer cancelFinal()
	if errors.Is(ctx.Err(), context.Canceled) {
		cancelFinal()
	}
	r.UpdateGauges()
	lag := map[string]int64{}
	for _, cs := range r.spool.Stat().Cursors {
		lag[cs.Name] = cs.Lag
	}
	var errs []error
	for _, s := range r.sinks {
		if n := lag[s.name]; n > 0 {
			r.log.Warn("records left in the spool for the next start", "sink", s.name, "count", n,
				"spool", r.spool.Dir())
		}
		g := s.takeGaps()
		s.mu.Lock()
		ovf := s.ovfGap
		s.mu.Unlock()
		if ovf != nil {
			// Still counted in the cursor: the next start reports it.
			r.log.Warn("overflow gap record left in the spool for the next start", "sink", s.name,
				"dropped", ovf.Record.Dropped, "gap_id", ovf.Record.ID)
			g = slices.DeleteFunc(g, func(e *Entry) bool { return e == ovf })
		}
		if len(g) > 0 {
			r.log.Error("gap records not delivered", "sink", s.name, "count", len(g))
		}
		if err := s.sink.Close(final); err != nil {
			errs = append(errs, fmt.Errorf("sink %s: close: %w", s.name, err))
		}
	}
	if err := r.spool.Close(); err != nil {
		errs = append(errs, fmt.Errorf("spool: close: %w", err))
	}
	return errors.Join(errs...)
}

// updateSpoolGauges refreshes the spool metrics.
func (r *Relay) updateSpoolGauges() {
	st := r.spool.Stat()
	r.metrics.SpoolBytes.Set(float64(st.Bytes))
	r.metrics.SpoolFiles.Set(float64(st.Files))
	lag := map[string]spool.CursorStat{}
	for _, cs := range st.Cursors {
		lag[cs.Name] = cs
	}
	for _, s := range r.sinks {
		cs := lag[s.name]
		r.metrics.SpoolLagRecords.WithLabelValues(s.name).Set(float64(cs.Lag))
		r.metrics.SpoolLagSeconds.WithLabelValues(s.name).Set(cs.LagTime.Seconds())
	}
}
