package spool

import "time"

// ScanBack reads the log's segments newest first, each from its first
// record to its end, calling fn for every valid record (data is valid only
// during the call); after each segment it stops if enough returns true. It
// reads what is on disk when it is called and stops at the first damaged
// frame of a segment. For the newest records of a kind (keyrelay: its
// continuity markers) without reading the whole log.
func (l *Log) ScanBack(fn func(seq uint64, at time.Time, data []byte), enough func() bool) error {
	l.mu.Lock()
	type seg struct {
		path string
		base uint64
		size int64
	}
	segs := make([]seg, 0, len(l.segs))
	for _, s := range l.segs {
		segs = append(segs, seg{s.path, s.base, s.size})
	}
	l.mu.Unlock()
	for i := len(segs) - 1; i >= 0; i-- {
		s := segs[i]
		r, err := openSegReader(s.path, s.base)
		if err != nil {
			return err
		}
		for {
			fr, st, err := r.read(s.size)
			if err != nil {
				r.close()
				return err
			}
			if st != frameOK {
				break
			}
			fn(fr.seq, fromUnixNano(fr.time), fr.data)
			r.consume(fr)
		}
		r.close()
		if enough() {
			return nil
		}
	}
	return nil
}
