package spool

// item is what a cursor can hand out next: a frame, or a lost run before it.
type item struct {
	fr   frame      // the next frame; its data aliases the reader's buffer
	lost *LostRange // set: records c.next..lost.Last are missing before fr
}

// peek returns the next item at the cursor's position without consuming it,
// or false when nothing more is available now. It skips frames below c.next,
// moves from a sealed segment to its successor and reads around damage.
// Called with sem held.
func (c *Cursor) peek() (item, bool, error) {
	fresh := false // c.limit and c.sealed were read since the last frame
	for {
		if c.r == nil {
			ok, err := c.position()
			if err != nil || !ok {
				return item{}, false, err
			}
			fresh = true
		}
		limit, sealed := c.limit, c.sealed
		fr, st, err := c.r.read(limit)
		if err != nil {
			return item{}, false, err
		}
		if st != frameOK && !fresh {
			// The writer may have added frames or sealed the segment
			// since: look again before concluding.
			c.refresh()
			fresh = true
			continue
		}
		switch {
		case st == frameOK && fr.seq < c.next:
			c.r.consume(fr) // before the position: skip
		case st == frameOK && fr.seq > c.next:
			lr := newLostRange(c.next, fr.seq-1, c.lastTime, fr.time)
			return item{fr: fr, lost: &lr}, true, nil
		case st == frameOK:
			return item{fr: fr}, true, nil
		case st == frameEnd && !sealed:
			return item{}, false, nil // the end of what the writer published
		case st == frameEnd && c.r.off >= limit:
			c.leave()
		default:
			// Invalid bytes, or a frame cut short at the end of a sealed
			// segment. Records the damage swallowed show up as a gap in
			// sequence numbers at the next valid frame.
			c.markDamaged()
			found, err := c.r.resync(limit)
			if err != nil {
				return item{}, false, err
			}
			if !found {
				if !sealed {
					return item{}, false, nil
				}
				c.leave()
			}
		}
	}
}

// consume moves past it, which peek returned. A lost run is consumed alone:
// its frame is peeked again.
func (c *Cursor) consume(it item) {
	if it.lost != nil {
		c.next = it.lost.Last + 1
		return
	}
	c.r.consume(it.fr)
	c.next = it.fr.seq + 1
	c.lastTime = it.fr.time
}

// refresh reads how far the current segment is written and whether it is
// sealed.
func (c *Cursor) refresh() {
	c.l.mu.Lock()
	c.limit, c.sealed = c.seg.size, c.seg.sealed
	c.l.mu.Unlock()
}

// leave finishes the current (sealed) segment.
func (c *Cursor) leave() {
	c.r.close()
	c.r, c.after, c.seg = nil, c.seg, nil
}

// position opens the segment to read next: the successor of the one just
// finished, else the one that holds c.next (the oldest if c.next is older
// than every file). It returns false if there is none yet.
func (c *Cursor) position() (bool, error) {
	l := c.l
	l.mu.Lock()
	var seg *segment
	for _, s := range l.segs {
		if c.after != nil {
			// A segment deleted for holding no record may be replaced by
			// one with the same base.
			if s != c.after && s.base >= c.after.base {
				seg = s
				break
			}
			continue
		}
		if seg == nil || s.base <= c.next {
			seg = s
		}
	}
	if seg != nil {
		c.limit, c.sealed = seg.size, seg.sealed
	}
	l.mu.Unlock()
	if seg == nil {
		return false, nil
	}
	r, err := openSegReader(seg.path, seg.base)
	if err != nil {
		return false, err
	}
	c.r, c.seg, c.after = r, seg, nil
	if ok, err := r.headerOK(c.limit); err == nil && !ok && c.limit >= segHeaderSize {
		c.markDamaged()
	}
	return true, nil
}

// markDamaged flags the current segment for quarantine and logs it once.
func (c *Cursor) markDamaged() {
	l := c.l
	l.mu.Lock()
	first := !c.seg.damaged
	c.seg.damaged = true
	l.mu.Unlock()
	if first {
		l.opts.Logger.Warn("spool: damaged segment, reading around the damage", "file", c.seg.path, "cursor", c.name)
	}
}

// noteLost logs a lost run once, whichever cursor finds it first.
func (l *Log) noteLost(cursor string, lr LostRange) {
	l.mu.Lock()
	seen := l.lostSeen[lr.First]
	l.lostSeen[lr.First] = true
	l.mu.Unlock()
	if !seen {
		l.opts.Logger.Warn("spool: records lost", "cursor", cursor, "first", lr.First, "last", lr.Last, "count", lr.Count)
	}
}
