package bridge

import "unsafe"

// stringSlab makes strings by copying their bytes into shared blocks: one
// allocation per block instead of one per string. A string keeps its whole
// block alive, so a slab suits the strings of records, which the queue or
// the spool copies at once, not strings kept alone for long. Not safe for
// concurrent use.
type stringSlab struct{ buf []byte }

const (
	slabBlock = 16 << 10
	slabMax   = 512 // longer strings are allocated alone
)

// string returns b as a string.
func (s *stringSlab) string(b []byte) string {
	if len(b) == 0 || len(b) > slabMax {
		return string(b)
	}
	if cap(s.buf)-len(s.buf) < len(b) {
		s.buf = make([]byte, 0, slabBlock)
	}
	start := len(s.buf)
	s.buf = append(s.buf, b...)
	return unsafe.String(&s.buf[start], len(b))
}

// spareBlocks keeps up to keep emptied blocks of size bytes for reuse, so
// that a buffer consumed and refilled at full speed does not allocate (and
// the GC free, and the scavenger return) a block every few hundred records.
// Not safe for concurrent use.
type spareBlocks struct {
	size, keep int
	free       [][]byte
}

// get returns an empty block of b.size bytes.
func (b *spareBlocks) get() []byte {
	if n := len(b.free); n > 0 {
		blk := b.free[n-1]
		b.free[n-1] = nil
		b.free = b.free[:n-1]
		return blk
	}
	return make([]byte, 0, b.size)
}

// put keeps blk, emptied, if it is of b.size and there is room.
func (b *spareBlocks) put(blk []byte) {
	if cap(blk) == b.size && len(b.free) < b.keep {
		b.free = append(b.free, blk[:0])
	}
}
