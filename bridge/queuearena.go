package bridge

import (
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
// Chunks are appended to, never rewritten: an Entry that peek rebuilds
// shares its chunk's bytes (Body, ID and Key), which therefore never change.
// A chunk is dropped once it is full and consumed, and freed by the GC when
// no entry rebuilt from it is referenced any more.
//
// The arena is not safe for concurrent use: the Queue's mutex guards it.
type arena struct {
	chunks [][]byte // FIFO; chunks[0] is read from off, the last one appended to
	off    int
	front  []*Entry // entries put back before everything else (pushFront)
	ptrs   []*Entry // entries kept by pointer, FIFO, in the order of their markers
	ptrOff int
	// interned (Source, Event) pairs of key events, by header index.
	pairs   []pair
	pairIdx map[pair]uint16
}

type pair struct{ source, event string }

const (
	arenaChunk  = 64 << 10
	arenaHeader = 24
	maxPairs    = 1 << 16

	flagPointer   = 1 // the record is the next of ptrs; nothing else follows
	flagKeyInBody = 2 // the key is the body's bytes at len(body)-2-keyLen
)

// idOffset is where a key event's id starts in its body (AppendJSON).
var idOffset = len(`{"type":"keyevent","id":"`)

// push appends e.
func (a *arena) push(e *Entry) {
	hdr, ok := a.header(e)
	if !ok {
		a.ptrs = append(a.ptrs, e)
		var marker [arenaHeader]byte
		marker[23] = flagPointer
		a.append(marker[:], nil, nil)
		return
	}
	var key []byte
	if hdr[23]&flagKeyInBody == 0 {
		key = unsafe.Slice(unsafe.StringData(e.Record.Key), len(e.Record.Key))
	}
	a.append(hdr[:], e.Body, key)
}

// header returns the header of e's compact form, or false when e must be
// kept by pointer.
func (a *arena) header(e *Entry) (hdr [arenaHeader]byte, ok bool) {
	r := &e.Record
	if r.Type != TypeKeyEvent || !r.Since.IsZero() || !r.Until.IsZero() || r.Reason != "" || r.Dropped != 0 ||
		int(int32(r.DB)) != r.DB || len(r.ID) > 255 || arenaHeader+len(e.Body)+len(r.Key) > arenaChunk {
		return hdr, false
	}
	body := e.Body
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
		a.chunks = append(a.chunks, make([]byte, 0, arenaChunk))
		last++
	}
	c := append(a.chunks[last], hdr...)
	c = append(c, body...)
	a.chunks[last] = append(c, key...)
}

// peek returns the first entry, rebuilt, and the arena bytes it takes (0
// for a front entry). The queue must not be empty.
func (a *arena) peek() (*Entry, int) {
	if len(a.front) > 0 {
		return a.front[0], 0
	}
	c, start := a.chunks[0], a.off
	h := c[start : start+arenaHeader]
	if h[23]&flagPointer != 0 {
		return a.ptrs[a.ptrOff], arenaHeader
	}
	bodyLen := int(binary.LittleEndian.Uint32(h[0:]))
	keyLen := int(binary.LittleEndian.Uint32(h[4:]))
	p := a.pairs[binary.LittleEndian.Uint16(h[20:])]
	b := start + arenaHeader
	body := c[b : b+bodyLen : b+bodyLen]
	size := arenaHeader + bodyLen
	var key []byte
	if h[23]&flagKeyInBody != 0 {
		key = body[bodyLen-2-keyLen : bodyLen-2]
	} else {
		key = c[b+bodyLen : b+bodyLen+keyLen]
		size += keyLen
	}
	id := body[idOffset : idOffset+int(h[22])]
	e := &Entry{Body: body, Record: Record{
		Type: TypeKeyEvent, ID: unsafe.String(unsafe.SliceData(id), len(id)),
		Time:   time.Unix(0, int64(binary.LittleEndian.Uint64(h[8:]))),
		Source: p.source, DB: int(int32(binary.LittleEndian.Uint32(h[16:]))), Event: p.event,
		Key: unsafe.String(unsafe.SliceData(key), len(key)),
	}}
	return e, size
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

func (a *arena) dropChunk() {
	a.chunks[0] = nil
	a.chunks = a.chunks[1:]
	a.off = 0
}

// pushFront puts e before everything else.
func (a *arena) pushFront(e *Entry) {
	a.front = append([]*Entry{e}, a.front...)
}
