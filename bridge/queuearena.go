package bridge

import (
	"bytes"
	"encoding/binary"
	"time"
	"unsafe"
)

// arena holds a queue's buffered records, in order, compactly: a key event
// is a 24-byte header and its encoded body (and its key, when the body does
// not hold it verbatim) appended to a chunk of bytes without pointers,
// instead of an Entry (a Record of eleven fields plus its strings, and the
// body) per record. A record that does not fit this form (a gap record, or
// a field the form cannot hold) is kept as its *Entry, in order.
//
// What peek returns of a compact record is a view into its chunk, valid
// until the next push or pop: Take copies what it takes into the worker's
// Batch. A consumed chunk is therefore free at once, and is kept for reuse
// (up to spareChunks of them, 4 MiB) instead of being left to the GC: at
// full speed a queue goes through a chunk every few hundred records and
// holds thousands of records at times; chunks the GC freed were returned
// to the OS by the scavenger and faulted back in (with 4 spare chunks,
// madvise and the page faults of fresh chunks were 9 % of the CPU of a
// full-speed run).
//
// The arena is not safe for concurrent use: the Queue's mutex guards it.
type arena struct {
	chunks [][]byte // FIFO; chunks[0] is read from off, the last one appended to
	off    int
	spare  spareBlocks // consumed chunks, for reuse
	front  []*Entry    // entries put back before everything else (pushFront)
	ptrs   []*Entry    // entries kept by pointer, FIFO, in the order of their markers
	ptrOff int
	view   Entry // what peek returns of a compact record
	// interned (Source, Event) pairs of key events, by header index.
	pairs   []pair
	pairIdx map[pair]uint16
}

type pair struct{ source, event string }

const (
	arenaChunk  = 64 << 10
	arenaHeader = 24
	maxPairs    = 1 << 16
	spareChunks = 64

	flagPointer   = 1 // the record is the next of ptrs; nothing else follows
	flagKeyInBody = 2 // the key is the body's bytes at len(body)-2-keyLen
)

// idOffset is where a key event's id starts in its body (AppendJSON).
var idOffset = len(`{"type":"keyevent","id":"`)

// push appends the record r encoded as body. e, when not nil, is r and body
// as an Entry, kept by pointer if the compact form cannot hold it (else one
// is made, with a copy of body: the caller may reuse body and r's strings
// once push returns).
func (a *arena) push(r *Record, body []byte, e *Entry) {
	hdr, ok := a.header(r, body)
	if !ok {
		if e == nil {
			e = &Entry{Record: *r, Body: bytes.Clone(body)}
		}
		a.ptrs = append(a.ptrs, e)
		var marker [arenaHeader]byte
		marker[23] = flagPointer
		a.append(marker[:], nil, nil)
		return
	}
	var key []byte
	if hdr[23]&flagKeyInBody == 0 {
		key = unsafe.Slice(unsafe.StringData(r.Key), len(r.Key))
	}
	a.append(hdr[:], body, key)
}

// header returns the header of the compact form of r encoded as body, or
// false when it must be kept by pointer.
func (a *arena) header(r *Record, body []byte) (hdr [arenaHeader]byte, ok bool) {
	if r.Type != TypeKeyEvent || !r.Since.IsZero() || !r.Until.IsZero() || r.Reason != "" || r.Dropped != 0 ||
		int(int32(r.DB)) != r.DB || len(r.ID) > 255 || arenaHeader+len(body)+len(r.Key) > arenaChunk {
		return hdr, false
	}
	if end := idOffset + len(r.ID); len(body) <= end || string(body[idOffset:end]) != r.ID || body[end] != '"' {
		return hdr, false
	}
	p := pair{r.Source, r.Event}
	idx, found := a.pairIdx[p]
	if !found {
		if len(a.pairs) == maxPairs {
			return hdr, false
		}
		if a.pairIdx == nil {
			a.pairIdx = map[pair]uint16{}
		}
		idx = uint16(len(a.pairs))
		a.pairs = append(a.pairs, p)
		a.pairIdx[p] = idx
	}
	flags := byte(0)
	if k := len(body) - 2 - len(r.Key); k >= 0 && string(body[k:k+len(r.Key)]) == r.Key && string(body[len(body)-2:]) == `"}` &&
		k >= len(`,"key":"`) && string(body[k-len(`,"key":"`):k]) == `,"key":"` {
		flags |= flagKeyInBody
	}
	binary.LittleEndian.PutUint32(hdr[0:], uint32(len(body)))
	binary.LittleEndian.PutUint32(hdr[4:], uint32(len(r.Key)))
	binary.LittleEndian.PutUint64(hdr[8:], uint64(r.Time.UnixNano()))
	binary.LittleEndian.PutUint32(hdr[16:], uint32(int32(r.DB)))
	binary.LittleEndian.PutUint16(hdr[20:], idx)
	hdr[22] = byte(len(r.ID))
	hdr[23] = flags
	return hdr, true
}

// append writes hdr, body and key contiguously, in the last chunk or a new
// one.
func (a *arena) append(hdr, body, key []byte) {
	n := len(hdr) + len(body) + len(key)
	last := len(a.chunks) - 1
	if last < 0 || cap(a.chunks[last])-len(a.chunks[last]) < n {
		if last == 0 && a.off == len(a.chunks[0]) { // consumed
			a.dropChunk()
			last--
		}
		a.chunks = append(a.chunks, a.newChunk())
		last++
	}
	c := append(a.chunks[last], hdr...)
	c = append(c, body...)
	a.chunks[last] = append(c, key...)
}

func (a *arena) newChunk() []byte {
	if a.spare.size == 0 {
		a.spare = spareBlocks{size: arenaChunk, keep: spareChunks}
	}
	return a.spare.get()
}

// peek returns the first entry and the arena bytes it takes (0 for a front
// entry), and whether the entry is a view of a compact record (valid until
// the next push or pop) rather than a kept *Entry. The queue must not be
// empty.
func (a *arena) peek() (e *Entry, size int, view bool) {
	if len(a.front) > 0 {
		return a.front[0], 0, false
	}
	c, start := a.chunks[0], a.off
	h := c[start : start+arenaHeader]
	if h[23]&flagPointer != 0 {
		return a.ptrs[a.ptrOff], arenaHeader, false
	}
	bodyLen := int(binary.LittleEndian.Uint32(h[0:]))
	keyLen := int(binary.LittleEndian.Uint32(h[4:]))
	p := a.pairs[binary.LittleEndian.Uint16(h[20:])]
	b := start + arenaHeader
	body := c[b : b+bodyLen : b+bodyLen]
	size = arenaHeader + bodyLen
	var key []byte
	if h[23]&flagKeyInBody != 0 {
		key = body[bodyLen-2-keyLen : bodyLen-2]
	} else {
		key = c[b+bodyLen : b+bodyLen+keyLen]
		size += keyLen
	}
	id := body[idOffset : idOffset+int(h[22])]
	a.view = Entry{Body: body, Record: Record{
		Type: TypeKeyEvent, ID: unsafe.String(unsafe.SliceData(id), len(id)),
		Time:   time.Unix(0, int64(binary.LittleEndian.Uint64(h[8:]))),
		Source: p.source, DB: int(int32(binary.LittleEndian.Uint32(h[16:]))), Event: p.event,
		Key: unsafe.String(unsafe.SliceData(key), len(key)),
	}}
	return &a.view, size, true
}

// pop removes the first entry, which peek returned with its size.
func (a *arena) pop(size int) {
	if len(a.front) > 0 {
		a.front[0] = nil
		a.front = a.front[1:]
		return
	}
	if a.chunks[0][a.off+23]&flagPointer != 0 {
		a.ptrs[a.ptrOff] = nil
		a.ptrOff++
		if a.ptrOff == len(a.ptrs) {
			a.ptrs, a.ptrOff = a.ptrs[:0], 0
		} else if a.ptrOff >= 1024 && a.ptrOff > len(a.ptrs)/2 {
			a.ptrs, a.ptrOff = append(a.ptrs[:0], a.ptrs[a.ptrOff:]...), 0
		}
	}
	a.off += size
	if a.off == len(a.chunks[0]) && len(a.chunks) > 1 {
		a.dropChunk()
	}
}

// dropChunk removes the consumed first chunk, keeping it for reuse.
func (a *arena) dropChunk() {
	a.spare.put(a.chunks[0])
	a.chunks[0] = nil
	a.chunks = a.chunks[1:]
	a.off = 0
}

// pushFront puts e before everything else.
func (a *arena) pushFront(e *Entry) {
	a.front = append([]*Entry{e}, a.front...)
}

// Batch is the memory a worker's batches are rebuilt in (Queue.TakeInto),
// reused from one batch to the next: the entries of a batch are valid until
// the worker's next TakeInto. Its zero value is ready to use.
type Batch struct {
	entries []Entry
	ptrs    []*Entry
	bytes   []byte
}

// reset empties b for a batch of up to n entries.
func (b *Batch) reset(n int) {
	if cap(b.entries) < n {
		b.entries = make([]Entry, 0, n)
		b.ptrs = make([]*Entry, 0, n)
	}
	clear(b.entries)
	b.entries, b.ptrs, b.bytes = b.entries[:0], b.ptrs[:0], b.bytes[:0]
}

// add appends e, copying a view into b's own memory.
func (b *Batch) add(e *Entry, view bool) {
	if !view {
		b.ptrs = append(b.ptrs, e)
		return
	}
	r := &e.Record
	// Body, then the key when it is not inside the body, copied together
	// when they are adjacent (as in the arena).
	keyInBody := len(r.Key) > 0 && inside(r.Key, e.Body)
	need := len(e.Body)
	if !keyInBody {
		need += len(r.Key)
	}
	if cap(b.bytes)-len(b.bytes) < need {
		// A new buffer: entries already added keep the old one alive.
		b.bytes = make([]byte, 0, max(2*cap(b.bytes), need, 64<<10))
	}
	start := len(b.bytes)
	b.bytes = append(b.bytes, e.Body...)
	body := b.bytes[start:len(b.bytes):len(b.bytes)]
	var key []byte
	if keyInBody {
		off := int(uintptr(unsafe.Pointer(unsafe.StringData(r.Key))) - uintptr(unsafe.Pointer(unsafe.SliceData(e.Body))))
		key = body[off : off+len(r.Key)]
	} else {
		k := len(b.bytes)
		b.bytes = append(b.bytes, r.Key...)
		key = b.bytes[k:len(b.bytes):len(b.bytes)]
	}
	id := body[idOffset : idOffset+len(r.ID)]
	b.entries = append(b.entries, Entry{Body: body, Record: *r})
	n := &b.entries[len(b.entries)-1]
	n.Record.ID = unsafe.String(unsafe.SliceData(id), len(id))
	n.Record.Key = unsafe.String(unsafe.SliceData(key), len(key))
	b.ptrs = append(b.ptrs, n)
}

// inside reports whether s lies within b's memory.
func inside(s string, b []byte) bool {
	if len(b) == 0 {
		return false
	}
	sp := uintptr(unsafe.Pointer(unsafe.StringData(s)))
	bp := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return sp >= bp && sp+uintptr(len(s)) <= bp+uintptr(len(b))
}
