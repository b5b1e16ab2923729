package spool

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"
)

// Record is one record handed out by Cursor.Next, or a run of lost records.
type Record struct {
	Seq  uint64    // sequence number; for a lost run, its first
	Time time.Time // append time (AppendAt's at); for a lost run, Lost.Until
	// Data is the payload as appended. It belongs to the caller: the log
	// never touches it again.
	Data []byte
	// Lost, when set, stands for records the log can no longer deliver
	// (damage, a missing file): Data is nil and the caller reports the range
	// (keyrelay: a gap record with Lost.Count) and acknowledges it like any
	// record, so that the cursor moves past it only once the report is
	// accepted.
	Lost *LostRange
}

// Last returns the last sequence number r stands for: Seq, or Lost.Last.
func (r Record) Last() uint64 {
	if r.Lost != nil {
		return r.Lost.Last
	}
	return r.Seq
}

// Dropped describes the records a Drop skipped.
type Dropped struct {
	Count       int64  // records this cursor will never hand out
	First, Last uint64 // their sequence numbers (valid when Count > 0)
	// Append times of the first and last skipped records still readable
	// (zero if none was), Kept left out.
	Since, Until time.Time
	// Kept are the skipped records DropExcept was told to keep: not in
	// Count, acknowledged like the others; the caller delivers them.
	Kept []Record
}

// Cursor is one reader's position in the log (keyrelay: one per sink). It
// hands out records in order and moves its persisted position over the
// contiguous prefix of acknowledged records. Next, Ack, Drop and Close are
// safe for concurrent use (several batches in flight).
type Cursor struct {
	l    *Log
	st   *cursorState
	name string

	sem       chan struct{} // held by Next or Drop while reading
	done      chan struct{} // closed by Close
	closeOnce sync.Once

	// Reader state, guarded by sem.
	seg      *segment // segment being read; nil when not positioned
	after    *segment // sealed segment just finished: position to its successor
	r        *segReader
	limit    int64 // seg's size and sealed flag when last looked at
	sealed   bool
	next     uint64 // next sequence number to hand out
	lastTime int64  // append time of the last record handed out
}

// cursorState is a cursor's acknowledgement state, kept by the log while the
// cursor is closed too (for reclaim and Stat). Guarded by Log.mu.
type cursorState struct {
	name          string
	acked         uint64 // every record ≤ acked is acknowledged
	ackedTime     int64  // append time of record acked (0 if unknown)
	persisted     uint64 // acked as last written to the cursor file
	persistedTime int64
	unsaved       bool       // the file must be written even if acked == persisted
	invalid       bool       // the file was unreadable at Open
	handed        uint64     // highest sequence number handed out or dropped
	pending       []seqRange // acknowledged above acked+1: sorted, disjoint, not adjacent
	inflight      []seqTime  // handed out above acked, by sequence number
	open          *Cursor

	// The reader's overflow not yet reported (see Overflow): ovf is still
	// growing, sealed was taken for a report and waits for ClearOverflow.
	// savedOvf and savedSealed are as last written to the cursor file.
	ovf, sealed           Overflow
	savedOvf, savedSealed Overflow
	// limbo: records in flight when a Drop passed them and not acknowledged
	// since (limboOvf counts them): lost if the process dies first.
	limbo      []seqRange
	limboOvf   Overflow
	savedLimbo Overflow
}

// Overflow counts records a cursor's reader will never receive because of
// the log's bound, to be reported (keyrelay: an overflow gap record): those
// Drop skipped, and those its caller never appended (AddOverflow). It is
// kept in the cursor file, written by the same checkpoint as the position a
// Drop moved, so that a crash never keeps the one without the other.
type Overflow struct {
	Count        int64
	Since, Until time.Time // times of the first and last records counted (zero if unknown)
	// ID is the caller's name for the report of a sealed overflow
	// (TakeOverflow; at most 32 bytes kept), so that a report repeated
	// after a crash carries the same one.
	ID string
}

// add merges o's count and window into v.
func (v *Overflow) add(o Overflow) {
	if o.Count <= 0 {
		return
	}
	if !o.Since.IsZero() && (v.Count == 0 || v.Since.IsZero() || o.Since.Before(v.Since)) {
		v.Since = o.Since
	}
	if o.Until.After(v.Until) {
		v.Until = o.Until
	}
	v.Count += o.Count
}

func (st *cursorState) overflowChanged() bool {
	return st.ovf != st.savedOvf || st.sealed != st.savedSealed || st.limboOvf != st.savedLimbo
}

// enterLimbo records the records handed out in lo..hi and not acknowledged
// (not in pending) as in flight past a Drop.
func (st *cursorState) enterLimbo(lo, hi uint64) {
	var n int64
	for _, p := range st.pending {
		if p.last < lo || p.first > hi {
			continue
		}
		if p.first > lo {
			st.limbo = addRange(st.limbo, seqRange{lo, p.first - 1})
			n += int64(p.first - lo)
		}
		lo = p.last + 1
	}
	if lo <= hi {
		st.limbo = addRange(st.limbo, seqRange{lo, hi})
		n += int64(hi - lo + 1)
	}
	if n == 0 {
		return
	}
	// Window: from the last record acknowledged before (its batch's time is
	// no later than theirs) to the batch of the last one.
	o := Overflow{Count: n, Since: fromUnixNano(st.ackedTime)}
	for _, f := range st.inflight {
		if o.Since.IsZero() {
			o.Since = fromUnixNano(f.at)
		}
		if f.seq >= hi {
			o.Until = fromUnixNano(f.at)
			break
		}
	}
	st.limboOvf.add(o)
}

// leaveLimbo takes acknowledged first..last out of the limbo.
func (st *cursorState) leaveLimbo(first, last uint64) {
	if len(st.limbo) == 0 {
		return
	}
	var out []seqRange
	var n int64
	for _, r := range st.limbo {
		if r.last < first || r.first > last {
			out = append(out, r)
			n += int64(r.last - r.first + 1)
			continue
		}
		if r.first < first {
			out = append(out, seqRange{r.first, first - 1})
			n += int64(first - r.first)
		}
		if r.last > last {
			out = append(out, seqRange{last + 1, r.last})
			n += int64(r.last - last)
		}
	}
	st.limbo = out
	if n == 0 {
		st.limboOvf = Overflow{}
	} else {
		st.limboOvf.Count = n
	}
}

type seqRange struct{ first, last uint64 }

type seqTime struct {
	seq uint64 // last sequence number of a handed-out Record
	at  int64
}

// Cursor opens the named cursor (1 to 64 of A-Z a-z 0-9 _ -). An existing
// cursor resumes after its persisted position: records handed out but not
// acknowledged before a crash or Close are handed out again (at least once),
// with the same sequence numbers and bytes. A new cursor starts at the
// oldest record on disk, and its file is written before Cursor returns. A
// cursor can be open once at a time (ErrCursorBusy).
func (l *Log) Cursor(name string) (*Cursor, error) {
	if !validCursorName(name) {
		return nil, fmt.Errorf("spool: invalid cursor name %q", name)
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	st := l.cursors[name]
	if st != nil && st.open != nil {
		l.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrCursorBusy, name)
	}
	isNew := st == nil
	if isNew {
		// persisted 0 holds back reclaim until the file exists.
		st = &cursorState{name: name, acked: l.firstLocked() - 1, unsaved: true}
		l.cursors[name] = st
	}
	c := &Cursor{
		l: l, st: st, name: name,
		sem:  make(chan struct{}, 1),
		done: make(chan struct{}),
		next: st.acked + 1, lastTime: st.ackedTime,
	}
	st.open, st.handed, st.pending, st.inflight = c, st.acked, nil, nil
	l.mu.Unlock()
	if isNew {
		if err := l.checkpoint(); err != nil {
			l.mu.Lock()
			if st.unsaved {
				delete(l.cursors, name)
				l.mu.Unlock()
				return nil, err
			}
			l.mu.Unlock() // this cursor's file was written; the error is another's
		}
	}
	return c, nil
}

// Name returns the cursor's name.
func (c *Cursor) Name() string { return c.name }

// Acked returns the sequence number up to which every record is
// acknowledged (the contiguous prefix; not yet persisted, perhaps).
func (c *Cursor) Acked() uint64 {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	return c.st.acked
}

// Next hands out up to max records (at least 1) after those already handed
// out, in sequence order, whose payloads total at most maxBytes (0: no
// limit; the first record is returned whatever its size). It blocks until
// at least one is available, ctx is done (ctx.Err()) or the cursor or log is
// closed (ErrClosed). It returns as soon as it has something: to linger for
// a fuller batch, call it again with a short deadline.
//
// Handing out does not acknowledge: the position moves only with Ack (or
// Drop). A Record with Lost set reports a run of records that cannot be
// delivered. A read error is returned as an *IOError; the cursor stays
// usable.
func (c *Cursor) Next(ctx context.Context, max, maxBytes int) ([]Record, error) {
	max = maxInt(max, 1)
	l := c.l
	for {
		if err := c.acquire(ctx); err != nil {
			return nil, err
		}
		l.mu.Lock()
		closed, gen := l.closed || c.st.open != c, l.gen
		l.mu.Unlock()
		if closed {
			c.release()
			return nil, ErrClosed
		}
		recs, err := c.collect(max, maxBytes)
		if len(recs) > 0 {
			c.handOut(recs)
		}
		c.release()
		if len(recs) > 0 {
			return recs, nil
		}
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		if l.gen != gen {
			l.mu.Unlock()
			continue
		}
		wake := l.waitLocked()
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.done:
			return nil, ErrClosed
		case <-l.done:
			return nil, ErrClosed
		case <-wake:
		}
	}
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

// collect reads up to max records. Called with sem held.
func (c *Cursor) collect(max, maxBytes int) ([]Record, error) {
	var out []Record
	var arena []byte
	size := 0
	for len(out) < max {
		it, ok, err := c.peek()
		if err != nil {
			return out, err
		}
		if !ok {
			break
		}
		if out == nil {
			out = make([]Record, 0, min(max, 1024))
		}
		if it.lost != nil {
			lr := *it.lost
			out = append(out, Record{Seq: lr.First, Time: lr.Until, Lost: &lr})
			c.l.noteLost(c.name, lr)
			c.consume(it)
			continue
		}
		n := len(it.fr.data)
		if len(out) > 0 && maxBytes > 0 && size+n > maxBytes {
			break
		}
		if cap(arena)-len(arena) < n {
			// A new block; records already cut from the old one keep it.
			want := n * (max - len(out))
			if maxBytes > 0 {
				want = min(want, maxBytes-size)
			}
			arena = make([]byte, 0, maxInt(n, min(maxInt(want, 4<<10), 1<<20)))
		}
		start := len(arena)
		arena = append(arena, it.fr.data...)
		out = append(out, Record{Seq: it.fr.seq, Time: fromUnixNano(it.fr.time), Data: arena[start:len(arena):len(arena)]})
		size += n
		c.consume(it)
	}
	return out, nil
}

// handOut records what Next hands out, for Ack's checks and the lag in time.
func (c *Cursor) handOut(recs []Record) {
	st := c.st
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	st.handed = max(st.handed, c.next-1)
	for _, r := range recs {
		st.inflight = append(st.inflight, seqTime{r.Last(), unixNano(r.Time)})
	}
}

// Ack acknowledges the records first..last (inclusive): the sink accepted
// them. Ranges may arrive in any order and overlap; the position moves over
// the contiguous acknowledged prefix only, and is written to the cursor file
// at the next checkpoint. Acknowledging a range that spans a lost run is
// fine. Acknowledging a record not yet handed out is an error.
func (c *Cursor) Ack(first, last uint64) error {
	if first == 0 || first > last {
		return fmt.Errorf("spool: cursor %s: invalid ack range %d..%d", c.name, first, last)
	}
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	st := c.st
	if c.l.closed || st.open != c {
		return ErrClosed
	}
	if last > st.handed {
		return fmt.Errorf("spool: cursor %s: ack of %d..%d beyond the last record handed out (%d)", c.name, first, last, st.handed)
	}
	st.leaveLimbo(first, last)
	st.ack(first, last)
	return nil
}

func (st *cursorState) ack(first, last uint64) {
	if last <= st.acked {
		return
	}
	st.pending = addRange(st.pending, seqRange{max(first, st.acked+1), last})
	if p := st.pending[0]; p.first == st.acked+1 {
		st.pending = slices.Delete(st.pending, 0, 1)
		st.advance(p.last)
	}
}

// advance moves the acknowledged prefix to seq.
func (st *cursorState) advance(seq uint64) {
	st.acked = seq
	i := sort.Search(len(st.inflight), func(i int) bool { return st.inflight[i].seq > seq })
	if i > 0 {
		st.ackedTime = st.inflight[i-1].at
		st.inflight = st.inflight[:copy(st.inflight, st.inflight[i:])]
	}
}

// addRange inserts r into a sorted list of disjoint, non-adjacent ranges.
func addRange(rs []seqRange, r seqRange) []seqRange {
	i := sort.Search(len(rs), func(i int) bool { return rs[i].last+1 >= r.first })
	j := i
	for j < len(rs) && rs[j].first <= r.last+1 {
		r.first, r.last = min(r.first, rs[j].first), max(r.last, rs[j].last)
		j++
	}
	return slices.Replace(rs, i, j, r)
}

// Drop skips every record up to upTo that this cursor has not handed out yet
// and counts them as acknowledged, so that the segments they fill can be
// deleted (after the next checkpoint): the overflow policy "drop the oldest"
// for one sink. Records already handed out and still in flight count as
// acknowledged too, and are not in the returned count (the Overflow counts
// them as in flight until they are acknowledged: if the process dies first,
// the next Open adds them to it). The dropped ones are
// added to the cursor's Overflow in the same step (a checkpoint writes both
// or neither), for the caller to report (keyrelay: a gap record with the
// count, see TakeOverflow). upTo beyond the last record is capped to it.
// Drop reads the records it skips, to report their times.
func (c *Cursor) Drop(upTo uint64) (Dropped, error) { return c.DropFunc(upTo, nil) }

// DropExcept is Drop, except that the skipped records for which keep
// returns true are returned in Dropped.Kept (their data copied) instead of
// being counted: records the caller must not lose to the overflow policy
// (keyrelay: gap records), which it then delivers itself. keep sees a
// record's data only while it runs.
func (c *Cursor) DropExcept(upTo uint64, keep func(data []byte) bool) (Dropped, error) {
	if keep == nil {
		return c.DropFunc(upTo, nil)
	}
	return c.DropFunc(upTo, func(data []byte, _ time.Time) (bool, time.Time) { return keep(data), time.Time{} })
}

// DropFunc is DropExcept where inspect also tells the time to count a
// dropped record at (Since, Until and the Overflow's window) instead of its
// append time: keyrelay stamps a batch with its newest record's time and
// knows each record's own. A zero time means the append time.
func (c *Cursor) DropFunc(upTo uint64, inspect func(data []byte, at time.Time) (keep bool, t time.Time)) (Dropped, error) {
	var d Dropped
	if err := c.acquire(context.Background()); err != nil {
		return d, err
	}
	defer c.release()
	l := c.l
	l.mu.Lock()
	closed := l.closed || c.st.open != c
	upTo = min(upTo, l.next-1)
	l.mu.Unlock()
	if closed {
		return d, ErrClosed
	}
	if c.next <= upTo {
		d.First, d.Last, d.Count = c.next, upTo, int64(upTo-c.next+1)
		for c.next <= upTo {
			it, ok, err := c.peek()
			if err != nil || !ok {
				break // Next skips the rest by sequence number
			}
			if it.lost != nil {
				c.next = min(it.lost.Last, upTo) + 1
				continue
			}
			if it.fr.seq > upTo {
				break
			}
			at := fromUnixNano(it.fr.time)
			if inspect != nil {
				keep, t := inspect(it.fr.data, at)
				if keep {
					d.Kept = append(d.Kept, Record{Seq: it.fr.seq, Time: at,
						Data: append([]byte(nil), it.fr.data...)})
					d.Count--
					c.consume(it)
					continue
				}
				if !t.IsZero() {
					at = t
				}
			}
			if !at.IsZero() && (d.Since.IsZero() || at.Before(d.Since)) {
				d.Since = at
			}
			if at.After(d.Until) {
				d.Until = at
			}
			c.consume(it)
		}
		c.next = upTo + 1
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	st := c.st
	// Records handed out and not acknowledged: the sink has them, but the
	// position passes them now.
	if lo, hi := st.acked+1, min(st.handed, upTo); lo <= hi {
		st.enterLimbo(lo, hi)
	}
	st.handed = max(st.handed, upTo)
	if upTo > st.acked {
		st.ack(st.acked+1, upTo)
		if st.acked == upTo && !d.Until.IsZero() {
			st.ackedTime = unixNano(d.Until)
		}
	}
	st.ovf.add(Overflow{Count: d.Count, Since: d.Since, Until: d.Until})
	return d, nil
}

// AddOverflow adds records lost to this cursor's reader outside the log
// (keyrelay: records the bound kept from being appended, under drop-newest)
// to its Overflow. It is written at the next checkpoint; call
// Log.Checkpoint to make it durable at once.
func (c *Cursor) AddOverflow(o Overflow) error {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	if c.l.closed || c.st.open != c {
		return ErrClosed
	}
	c.st.ovf.add(Overflow{Count: o.Count, Since: o.Since, Until: o.Until})
	return nil
}

// TakeOverflow returns the overflow to report: the one taken before and not
// yet cleared (after a restart too: report it again, it has its ID), or
// else the pending one, sealed now under id, the name the caller gives its
// report. false when there is nothing to report. Records counted after it
// wait for the next TakeOverflow, after ClearOverflow. A checkpoint writes
// the sealing (call Log.Checkpoint before delivering the report, so that a
// repeat after a crash keeps the ID).
func (c *Cursor) TakeOverflow(id string) (Overflow, bool) {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	st := c.st
	if st.sealed.Count == 0 && st.ovf.Count > 0 {
		st.sealed, st.ovf = st.ovf, Overflow{}
		st.sealed.ID = id[:min(len(id), maxOverflowID)]
	}
	if st.sealed.Count == 0 {
		return Overflow{}, false
	}
	return st.sealed, true
}

// ClearOverflow forgets the overflow TakeOverflow returned: its report was
// delivered. It is written at the next checkpoint (until then a crash
// repeats the report, with the same ID).
func (c *Cursor) ClearOverflow() {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	c.st.sealed = Overflow{}
}

// PendingOverflow returns the overflow not yet cleared: the sealed one and
// the one still counting.
func (c *Cursor) PendingOverflow() (sealed, open Overflow) {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	return c.st.sealed, c.st.ovf
}

// Close closes the cursor (a pending Next returns ErrClosed) and writes its
// position. Records handed out and not acknowledged are handed out again by
// the next Cursor call with this name, so acknowledge what was accepted
// before closing. Closing twice, or after the log, is a no-op.
func (c *Cursor) Close() error {
	if !c.shut() {
		return nil
	}
	c.l.mu.Lock()
	closed := c.l.closed
	c.l.mu.Unlock()
	if closed {
		return nil
	}
	return c.l.checkpoint()
}

// shut closes the cursor's reader and detaches it from its state; it reports
// whether this call did it.
func (c *Cursor) shut() bool {
	first := false
	c.closeOnce.Do(func() {
		first = true
		close(c.done)
	})
	if !first {
		return false
	}
	c.sem <- struct{}{} // wait for a running Next or Drop
	c.r.close()
	c.r, c.seg = nil, nil
	<-c.sem
	c.l.mu.Lock()
	if c.st.open == c {
		c.st.open = nil
	}
	c.l.mu.Unlock()
	return true
}

func (c *Cursor) acquire(ctx context.Context) error {
	select {
	case c.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return ErrClosed
	}
}

func (c *Cursor) release() { <-c.sem }
