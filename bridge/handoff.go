package bridge

import (
	"sync"
	"time"
)

// handoff is the spool path's bounded buffer between Emit (every reader
// goroutine) and the appender. A record is encoded into it as it comes, in
// the spool's form; the appender takes everything waiting at once and
// appends it as one group (and, with SyncEvery, one fsync). A record costs
// the reader a short critical section and no allocation; the appender is
// woken once per group, not per record.
type handoff struct {
	mu     sync.Mutex
	max    int // records
	closed bool
	cur    handBatch
	wake   chan struct{} // capacity 1: records are waiting, or the hand-off closed
	room   chan struct{} // closed (and replaced) whenever the appender takes a group
	spare  spareBlocks   // emptied blocks, for reuse
}

// handBatch is a group of encoded records: payloads[i], with meta[i], in
// blocks of handBlock bytes (a larger record has a block of its own).
// Blocks, not one growing buffer: a burst would copy it again at every
// doubling.
type handBatch struct {
	blocks   [][]byte
	payloads [][]byte
	meta     []handMeta
}

const (
	handBlock      = 256 << 10
	handSpareBlock = 16 // blocks kept for reuse (4 MiB)
)

// handMeta is what the appender needs of a record besides its payload:
// the HA marks (ha.mark) and the accounting of a failed append.
type handMeta struct {
	typ    string
	time   time.Time
	source string
	id     string
	placed bool
	gap    *Entry // a gap record's entry: given to the sinks outside the log if the append fails
}

func newHandoff(max int) *handoff {
	return &handoff{max: max, wake: make(chan struct{}, 1), room: make(chan struct{}),
		spare: spareBlocks{size: handBlock, keep: handSpareBlock}}
}

// put encodes rec (with body, its JSON; nil for a marker) into the hand-off.
// When it is full, put returns false at once unless wait is set; then it
// waits for room. It returns false once the hand-off is closed.
func (h *handoff) put(rec *Record, body []byte, gap *Entry, wait bool) bool {
	h.mu.Lock()
	for !h.closed && len(h.cur.payloads) >= h.max {
		if !wait {
			h.mu.Unlock()
			return false
		}
		room := h.room
		h.mu.Unlock()
		<-room
		h.mu.Lock()
	}
	if h.closed {
		h.mu.Unlock()
		return false
	}
	b := &h.cur
	first := len(b.payloads) == 0
	// At most the encoding's size: its strings and body, and the
	// varints, times and type bytes around them.
	need := len(rec.ID) + len(rec.Source) + len(rec.Event) + len(rec.Key) + len(rec.Reason) + len(body) + 128
	n := len(b.blocks)
	if n == 0 || cap(b.blocks[n-1])-len(b.blocks[n-1]) < need {
		b.blocks = append(b.blocks, h.block(need))
		n++
	}
	blk := b.blocks[n-1]
	start := len(blk)
	blk = encodeSpoolRecord(blk, rec, body)
	b.blocks[n-1] = blk
	b.payloads = append(b.payloads, blk[start:len(blk):len(blk)])
	b.meta = append(b.meta, handMeta{typ: rec.Type, time: rec.Time, source: rec.Source, id: rec.ID,
		placed: rec.placed, gap: gap})
	h.mu.Unlock()
	if first {
		select {
		case h.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// take moves every waiting record into into (emptied first, its memory
// reused) and wakes writers waiting for room. It reports whether the
// hand-off is closed: then no record will follow the ones taken.
func (h *handoff) take(into *handBatch) (closed bool) {
	clear(into.payloads)
	clear(into.meta)
	into.payloads, into.meta = into.payloads[:0], into.meta[:0]
	h.mu.Lock()
	for i, blk := range into.blocks {
		h.spare.put(blk)
		into.blocks[i] = nil
	}
	into.blocks = into.blocks[:0]
	h.cur, *into = *into, h.cur
	closed = h.closed
	close(h.room)
	h.room = make(chan struct{})
	h.mu.Unlock()
	return closed
}

// block returns an empty block for at least need bytes. h.mu is held.
func (h *handoff) block(need int) []byte {
	if need > handBlock {
		return make([]byte, 0, need)
	}
	return h.spare.get()
}

// len returns the records waiting.
func (h *handoff) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.cur.payloads)
}

// close refuses every later put and wakes the appender to take the rest.
func (h *handoff) close() {
	h.mu.Lock()
	h.closed = true
	close(h.room) // writers waiting for room give up
	h.room = make(chan struct{})
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}
