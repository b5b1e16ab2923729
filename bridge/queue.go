package bridge

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Overflow is what a full queue drops.
type Overflow string

// Overflow policies.
const (
	DropNewest Overflow = "drop-newest" // keep what is buffered, drop arriving records
	DropOldest Overflow = "drop-oldest" // make room by dropping the oldest buffered records
)

// Decode implements envconfig.Decoder.
func (o *Overflow) Decode(s string) error {
	switch Overflow(s) {
	case DropNewest, DropOldest:
		*o = Overflow(s)
		return nil
	}
	return fmt.Errorf("must be %q or %q", DropNewest, DropOldest)
}

// OverflowEpisode describes records a queue dropped while it was full: a
// window in which a sink misses events, reported as a gap record.
type OverflowEpisode struct {
	Dropped      int64
	Since, Until time.Time // receive times of the first and last dropped record
}

// Queue is the bounded in-memory buffer between the reader and one sink. Push
// never blocks; when the queue is full (by records or by bytes) it drops by
// policy and remembers the episode. It is the seam where a disk-backed spool
// can later take its place. Safe for concurrent use.
type Queue struct {
	maxRecords int
	maxBytes   int64
	policy     Overflow

	mu      sync.Mutex
	buf     arena // the buffered entries, compactly
	n       int
	bytes   int64
	closed  bool
	episode OverflowEpisode // Dropped > 0 while an episode is open
	// batch and batchBytes are the limits of the last Take: a worker
	// lingering on a partial batch needs a wake-up only when it is full.
	batch      int
	batchBytes int64

	notify   chan struct{} // capacity 1: "something changed"
	closedCh chan struct{}
}

// NewQueue returns a queue bounded by maxRecords and maxBytes (sum of body
// lengths).
func NewQueue(maxRecords int, maxBytes int64, policy Overflow) *Queue {
	return &Queue{
		maxRecords: maxRecords,
		maxBytes:   maxBytes,
		policy:     policy,
		notify:     make(chan struct{}, 1),
		closedCh:   make(chan struct{}),
	}
}

// PushResult tells the caller what a Push did beyond appending.
type PushResult struct {
	Dropped int              // entries dropped by this push (the new one, or old ones)
	Ended   *OverflowEpisode // set when this push ended an overflow episode
}

// Push appends e without blocking, dropping by policy when full. Pushing to a
// closed queue drops e (counted in Dropped).
func (q *Queue) Push(e *Entry) PushResult { return q.push(&e.Record, e.Body, e) }

// PushRecord is Push of rec encoded as body. The queue copies what it keeps:
// the caller may reuse body and rec's strings once it returns.
func (q *Queue) PushRecord(rec *Record, body []byte) PushResult { return q.push(rec, body, nil) }

// push is Push of rec and body, which are e's when e is not nil.
func (q *Queue) push(rec *Record, body []byte, e *Entry) PushResult {
	size := int64(len(body))
	var res PushResult
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		res.Dropped = 1
		return res
	}
	switch q.policy {
	case DropOldest:
		// Make room by dropping the oldest key events. Gap records are
		// never evicted: they report losses, and are not losses to count.
		var gaps []*Entry
		for q.n > 0 && q.full(size) {
			old := q.popLocked()
			if old.Record.Type == TypeGap {
				gaps = append(gaps, old)
				continue
			}
			q.noteDrop(old.Record.Time)
			res.Dropped++
		}
		for i := len(gaps) - 1; i >= 0; i-- {
			q.pushFrontLocked(gaps[i])
		}
	default:
		if q.n > 0 && q.full(size) {
			q.noteDrop(rec.Time)
			q.mu.Unlock()
			res.Dropped = 1
			return res
		}
	}
	if res.Dropped == 0 && q.episode.Dropped > 0 && q.drained() {
		ep := q.episode
		res.Ended = &ep
		q.episode = OverflowEpisode{}
	}
	wake := q.pushLocked(rec, body, e)
	q.mu.Unlock()
	if wake {
		q.signal()
	}
	return res
}

// PushForce appends e ignoring the bounds. Used for gap records, which must
// not be lost to the overflow they report. It drops e only when closed.
func (q *Queue) PushForce(e *Entry) bool {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return false
	}
	q.pushLocked(&e.Record, e.Body, e)
	q.mu.Unlock()
	q.signal()
	return true
}

// EndOverflow closes an open overflow episode and returns it (nil if none).
func (q *Queue) EndOverflow() *OverflowEpisode {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.episode.Dropped == 0 {
		return nil
	}
	ep := q.episode
	q.episode = OverflowEpisode{}
	return &ep
}

// EndOverflowIfDrained closes an open overflow episode once the queue has
// drained to half its bounds (a worker just took a batch), so that the gap
// record is not held back until the next record arrives. Ending an episode
// only at half, not at the first free slot, keeps a sink that drains slower
// than records arrive from writing a gap record per slot: one episode, one
// gap record with the total dropped. It returns nil if there is no episode
// or the queue is still above half.
func (q *Queue) EndOverflowIfDrained() *OverflowEpisode {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.episode.Dropped == 0 || !q.drained() {
		return nil
	}
	ep := q.episode
	q.episode = OverflowEpisode{}
	return &ep
}

// drained reports whether the queue is at or below half its bounds.
func (q *Queue) drained() bool {
	return q.n <= q.maxRecords/2 && (q.maxBytes <= 0 || q.bytes <= q.maxBytes/2)
}

func (q *Queue) full(size int64) bool {
	return q.n >= q.maxRecords || (q.maxBytes > 0 && q.bytes+size > q.maxBytes)
}

func (q *Queue) noteDrop(t time.Time) {
	if q.episode.Dropped == 0 || t.Before(q.episode.Since) {
		q.episode.Since = t
	}
	if t.After(q.episode.Until) {
		q.episode.Until = t
	}
	q.episode.Dropped++
}

// pushLocked appends e and reports whether a waiting worker must be woken:
// when the queue stops being empty (a worker waits for a first entry) and
// when it holds a full batch (a worker lingers for one). Waking a worker
// for every entry in between cost a goroutine switch per record
// (BenchmarkEmit).
func (q *Queue) pushLocked(rec *Record, body []byte, e *Entry) (wake bool) {
	q.buf.push(rec, body, e)
	q.n++
	q.bytes += int64(len(body))
	return q.n == 1 || q.n >= q.batch || q.batchFull()
}

// batchFull reports whether the buffered bytes fill a batch of the last
// Take's byte limit (packed batches end on bytes, not entries).
func (q *Queue) batchFull() bool { return q.batchBytes > 0 && q.bytes >= q.batchBytes }

// pushFrontLocked puts e back at the head, ignoring the bounds.
func (q *Queue) pushFrontLocked(e *Entry) {
	q.buf.pushFront(e)
	q.n++
	q.bytes += int64(len(e.Body))
}

// peekLocked returns the entry at the head, the arena bytes it takes (for
// popAfterPeek), and whether it is a view valid until the next push or pop
// (arena.peek).
func (q *Queue) peekLocked() (*Entry, int, bool) { return q.buf.peek() }

// popAfterPeek removes the head entry e that peekLocked returned.
func (q *Queue) popAfterPeek(e *Entry, size int) {
	q.buf.pop(size)
	q.n--
	q.bytes -= int64(len(e.Body))
}

// popLocked removes the head entry and returns it; a view (see peekLocked)
// is valid until the next push or pop.
func (q *Queue) popLocked() *Entry {
	e, size, _ := q.peekLocked()
	q.popAfterPeek(e, size)
	return e
}

func (q *Queue) signal() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// Close stops accepting entries; Take drains what is left and then returns
// nil.
func (q *Queue) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		close(q.closedCh)
	}
}

// Len returns the number of buffered entries and their bytes.
func (q *Queue) Len() (records int, bytes int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n, q.bytes
}

// timerSlack is how late a timer may fire, measured on Linux (Go 1.26):
// 0.7 ms at the median, 1.1 ms at the 99th percentile, for a 20 ms timer.
const timerSlack = time.Millisecond

// Take is TakeInto a new Batch: the entries it returns are the caller's to
// keep.
func (q *Queue) Take(ctx context.Context, lim Limits, size func(*Entry) int, linger time.Duration) []*Entry {
	return q.TakeInto(ctx, lim, size, linger, new(Batch))
}

// TakeInto removes and returns the next batch, rebuilt in b's memory (valid
// until the next TakeInto with b): it waits for a first entry, then
// up to linger for the batch to fill to lim.MaxEntries or lim.MaxBatchBytes
// (measured with size). It returns nil when the queue is closed and empty, or
// when ctx is done. The first entry is always taken whatever its size, so an
// oversized entry cannot stall the queue (the Relay rejects it).
func (q *Queue) TakeInto(ctx context.Context, lim Limits, size func(*Entry) int, linger time.Duration, b *Batch) []*Entry {
	var deadline <-chan time.Time
	for {
		q.mu.Lock()
		q.batch, q.batchBytes = lim.MaxEntries, int64(lim.MaxBatchBytes)
		n, closed, full := q.n, q.closed, q.batchFull()
		q.mu.Unlock()
		if n > 0 && (n >= lim.MaxEntries || full || closed || linger <= 0) {
			break
		}
		if n == 0 && closed {
			return nil
		}
		if n > 0 && deadline == nil {
			// The linger counts from the first record's arrival, not
			// from when this worker noticed it.
			wait := linger
			q.mu.Lock()
			if q.n > 0 {
				if e, _, _ := q.peekLocked(); !e.Record.Time.IsZero() {
					wait = min(linger, linger-time.Since(e.Record.Time))
				}
			}
			q.mu.Unlock()
			// Timers fire late, by up to about a millisecond on Linux (the
			// runtime's poller sleeps in whole milliseconds): set early by
			// that much, a batch waits at most the linger.
			wait -= min(timerSlack, wait/10)
			if wait <= 0 {
				goto take
			}
			t := time.NewTimer(wait)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-ctx.Done():
			return nil
		case <-q.notify:
		case <-q.closedCh:
			if n == 0 {
				// Re-check: entries may have been pushed before closing.
				continue
			}
		case <-deadline:
			goto take
		}
	}
take:
	q.mu.Lock()
	b.reset(lim.MaxEntries)
	total := 0
	for q.n > 0 && len(b.ptrs) < lim.MaxEntries {
		e, n, view := q.peekLocked()
		s := size(e)
		if len(b.ptrs) > 0 && lim.MaxBatchBytes > 0 && total+s > lim.MaxBatchBytes {
			break
		}
		b.add(e, view)
		q.popAfterPeek(e, n)
		total += s
	}
	left := q.n
	q.mu.Unlock()
	if left > 0 {
		q.signal() // another worker may be waiting
	}
	return b.ptrs
}
