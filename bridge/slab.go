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
