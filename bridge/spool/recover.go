package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Recovery is what Open found and repaired. Nothing in it stopped Open: the
// caller logs it and counts it.
type Recovery struct {
	Segments int // segment files found
	// TornBytes were cut from the end of the last segment: a frame cut short
	// by a crash, a zero-filled or garbage tail. Records in them were never
	// confirmed by an fsync; how many there were is unknowable.
	TornBytes int64
	// Damaged lists segment files in which Open found invalid bytes followed
	// by valid frames. They are read around the damage and quarantined
	// (renamed *.corrupt) once every cursor has passed them. Only the last
	// segment is scanned at Open; damage in older ones is found by the
	// cursors reading them and delivered as LostRange records.
	Damaged []string
	// Lost are the records Open knows to be gone: damage found in the last
	// segment, and records that some cursors had acknowledged but the files
	// no longer hold (an OS crash erased an unsynced tail) while others had
	// not read them yet. Sequence numbers continue after the highest
	// acknowledged one. Each cursor that had not passed a range also
	// receives it as a LostRange record: make gap records from those (per
	// sink, exact), not from this list, which is for logs and metrics.
	Lost []LostRange
	// CursorsReset names cursors whose file was unreadable: they restart at
	// the oldest record on disk (deliveries repeat, nothing is skipped).
	CursorsReset []string
	// Reclaimed counts segment files deleted at Open because every cursor
	// had passed them (a deletion the previous run did not finish).
	Reclaimed int
	// TempRemoved counts leftover temporary cursor files removed.
	TempRemoved int
}

// dirListing is the spool directory's content by kind.
type dirListing struct {
	segs        []segFile // by base
	cursors     []string  // cursor names
	tmps        []string  // file names
	quarantined int
	qBytes      int64
}

type segFile struct {
	base uint64
	size int64
}

func listDir(dir string) (dirListing, error) {
	var d dirListing
	entries, err := os.ReadDir(dir)
	if err != nil {
		return d, fmt.Errorf("spool: read directory: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() {
			continue
		}
		switch {
		case strings.HasSuffix(name, tmpSuffix):
			d.tmps = append(d.tmps, name)
		case strings.HasSuffix(name, corruptSuffix):
			d.quarantined++
			if info, err := e.Info(); err == nil {
				d.qBytes += info.Size()
			}
		case strings.HasPrefix(name, cursorPrefix):
			if n := strings.TrimPrefix(name, cursorPrefix); validCursorName(n) {
				d.cursors = append(d.cursors, n)
			}
		default:
			base, ok := parseSegName(name)
			if !ok {
				continue
			}
			info, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return d, fmt.Errorf("spool: stat %s: %w", name, err)
			}
			d.segs = append(d.segs, segFile{base: base, size: info.Size()})
		}
	}
	slices.SortFunc(d.segs, func(a, b segFile) int {
		switch {
		case a.base < b.base:
			return -1
		case a.base > b.base:
			return 1
		}
		return 0
	})
	return d, nil
}

// readCursorFile returns a cursor's persisted state.
func readCursorFile(dir, name string) (cursorFile, error) {
	b, err := os.ReadFile(filepath.Join(dir, cursorPrefix+name))
	if err != nil {
		return cursorFile{}, err
	}
	cf, ok := decodeCursor(b)
	if !ok {
		return cursorFile{}, fmt.Errorf("spool: cursor file %s: invalid content (%d bytes)", name, len(b))
	}
	return cf, nil
}

// firstFrameTime returns the append time of a segment's first record, 0 if
// it cannot be read.
func firstFrameTime(path string, base uint64, size int64) int64 {
	r, err := openSegReader(path, base)
	if err != nil {
		return 0
	}
	defer r.close()
	fr, st, _ := r.read(size)
	if st != frameOK {
		return 0
	}
	return fr.time
}

// recover loads the directory into l.
func (l *Log) recover() error {
	rec := &l.recovery
	d, err := listDir(l.dir)
	if err != nil {
		return err
	}
	for _, name := range d.tmps {
		if os.Remove(filepath.Join(l.dir, name)) == nil {
			rec.TempRemoved++
		}
	}
	l.quarantined, l.qBytes = d.quarantined, d.qBytes
	rec.Segments = len(d.segs)
	for _, sf := range d.segs {
		l.segs = append(l.segs, &segment{base: sf.base, path: filepath.Join(l.dir, segName(sf.base)), size: sf.size, sealed: true})
		l.bytes += sf.size
	}
	if n := len(l.segs); n > 0 {
		l.segs[n-1].sealed = false
		if err := l.recoverLast(rec); err != nil {
			return err
		}
		l.newestBefore()
		for _, seg := range l.segs[:n-1] {
			seg.firstTime = firstFrameTime(seg.path, seg.base, seg.size)
		}
		l.bytes = 0
		for _, seg := range l.segs {
			l.bytes += seg.size
		}
	}
	// Cursors. A cursor ahead of the log means an OS crash erased records it
	// had acknowledged (cursor files are written more often than segments
	// are fsynced): never give their sequence numbers again. Only cursors
	// behind them lost them.
	maxAcked, minAcked := uint64(0), uint64(math.MaxUint64)
	for _, name := range d.cursors {
		st := &cursorState{name: name}
		cf, err := readCursorFile(l.dir, name)
		if err != nil {
			l.opts.Logger.Warn("spool: unreadable cursor file, restarting it at the oldest record", "cursor", name, "err", err)
			rec.CursorsReset = append(rec.CursorsReset, name)
			cf, st.invalid, st.unsaved = cursorFile{acked: l.firstLocked() - 1}, true, true
		}
		acked, at := cf.acked, cf.ackedTime
		st.acked, st.ackedTime, st.persisted, st.persistedTime, st.handed = acked, at, acked, at, acked
		st.ovf, st.sealed, st.savedOvf, st.savedSealed, st.savedLimbo = cf.open, cf.sealed, cf.open, cf.sealed, cf.limbo
		// Records in flight when a Drop passed them, and never
		// acknowledged: lost with the process.
		st.ovf.add(cf.limbo)
		l.cursors[name] = st
		maxAcked, minAcked = max(maxAcked, acked), min(minAcked, acked)
	}
	if maxAcked >= l.next {
		l.opts.Logger.Info("spool: cursors passed records an OS crash erased; numbering continues after them",
			"first", l.next, "last", maxAcked)
		if first := max(l.next, minAcked+1); first <= maxAcked {
			lr := newLostRange(first, maxAcked, l.newest, 0)
			rec.Lost = append(rec.Lost, lr)
			l.opts.Logger.Warn("spool: records lost before every cursor read them", "first", lr.First, "last", lr.Last)
		}
		l.next = maxAcked + 1
		l.retire = true
		if l.active != nil {
			l.active.Close()
			l.active = nil
		}
	}
	if l.active != nil {
		l.activePath = l.segs[len(l.segs)-1].path
	}
	gone := l.reclaimLocked()
	rec.Reclaimed = len(gone)
	if err := errors.Join(l.removeSegments(gone)...); err != nil {
		l.opts.Logger.Warn("spool: cannot delete acknowledged segments", "err", err)
	}
	return nil
}

// recoverLast scans the last segment at Open, cuts a torn tail and sets up
// the writer: l.segs holds every segment (the last one unsealed), l.next the
// next sequence number. Nothing it finds in the file is fatal; only failing to
// open it for writing is.
func (l *Log) recoverLast(rec *Recovery) error {
	seg := l.segs[len(l.segs)-1]
	f, err := os.OpenFile(seg.path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("spool: open %s: %w", seg.path, err)
	}
	r := newSegReader(f, seg.path, seg.base)
	res, err := r.scan(seg.size)
	if err != nil {
		// Unreadable: never reuse a sequence number it might hold, write
		// elsewhere, and let the cursors read what they can.
		f.Close()
		l.opts.Logger.Warn("spool: last segment unreadable, starting a new one", "file", seg.path, "err", err)
		seg.damaged = true
		l.next = max(l.next, seg.base+uint64(seg.size/frameHeaderSize)+1)
		l.retire = true
		rec.Damaged = append(rec.Damaged, seg.path)
		return nil
	}
	seg.firstTime, seg.lastTime = res.firstTime, res.lastTime
	if res.lastTime != 0 {
		l.newest = res.lastTime
	}
	l.next = max(l.next, res.last+1)
	if res.frames == 0 && !res.headerOK {
		// Torn at creation: write the header again.
		err = rewriteHeader(f, seg.base, unixNano(l.opts.Now()))
		if err == nil {
			res.end, res.headerOK = segHeaderSize, true
			seg.size = segHeaderSize
		}
	}
	if res.end < seg.size && err == nil {
		rec.TornBytes += seg.size - res.end
		l.opts.Logger.Warn("spool: cut torn tail", "file", seg.path, "offset", res.end, "bytes", seg.size-res.end)
		if err = f.Truncate(res.end); err == nil {
			err = datasync(f)
		}
		if err == nil {
			seg.size = res.end
		}
	}
	f.Close()
	if err != nil {
		l.opts.Logger.Warn("spool: cannot repair last segment, starting a new one", "file", seg.path, "err", err)
		l.retire = true
	}
	if res.damaged || !res.headerOK {
		seg.damaged = true
		l.retire = true
		rec.Damaged = append(rec.Damaged, seg.path)
		rec.Lost = append(rec.Lost, res.lost...)
		l.opts.Logger.Warn("spool: damaged segment, reading around the damage", "file", seg.path, "lost", res.lost)
	}
	if !l.retire {
		l.active, err = os.OpenFile(seg.path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return fmt.Errorf("spool: open %s for writing: %w", seg.path, err)
		}
	}
	return nil
}

func rewriteHeader(f *os.File, base uint64, created int64) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.WriteAt(encodeSegHeader(base, created), 0); err != nil {
		return err
	}
	return datasync(f)
}

// newestBefore finds the append time of the newest record when the last
// segment has none, scanning older segments from the newest (normally one:
// an empty last segment follows a full one).
func (l *Log) newestBefore() {
	for i := len(l.segs) - 2; i >= 0 && l.newest == 0; i-- {
		seg := l.segs[i]
		r, err := openSegReader(seg.path, seg.base)
		if err != nil {
			return
		}
		res, _ := r.scan(seg.size)
		r.close()
		seg.lastTime = res.lastTime
		l.newest = res.lastTime
	}
}

// Inspect reports the state of the spool in dir without opening it: it takes
// no lock and changes nothing, so it can run beside the daemon that owns the
// directory (`keyrelay spool`). Positions are those last written to the
// cursor files; a tail being written at that moment may be left out.
func Inspect(dir string) (Stat, error) {
	d, err := listDir(dir)
	if err != nil {
		return Stat{}, err
	}
	st := Stat{Dir: dir, Files: len(d.segs), Quarantined: d.quarantined, QuarantinedBytes: d.qBytes, First: 1}
	var newest int64
	for i, sf := range d.segs {
		path := filepath.Join(dir, segName(sf.base))
		st.Bytes += sf.size
		st.Segments = append(st.Segments, SegmentStat{Name: segName(sf.base), Base: sf.base, Bytes: sf.size})
		if i == 0 {
			st.First = sf.base
			st.Oldest = fromUnixNano(firstFrameTime(path, sf.base, sf.size))
		}
	}
	st.Last = st.First - 1
	for i := len(d.segs) - 1; i >= 0; i-- {
		sf := d.segs[i]
		r, err := openSegReader(filepath.Join(dir, segName(sf.base)), sf.base)
		if err != nil {
			continue
		}
		res, _ := r.scan(sf.size)
		r.close()
		st.Last = max(st.Last, sf.base-1)
		if res.frames > 0 {
			st.Last, newest = res.last, res.lastTime
			break
		}
	}
	st.Newest = fromUnixNano(newest)
	for _, name := range d.cursors {
		cf, err := readCursorFile(dir, name)
		cs := CursorStat{Name: name, Acked: cf.acked, AckedTime: fromUnixNano(cf.ackedTime), Persisted: cf.acked,
			Overflow: cf.open.Count + cf.sealed.Count + cf.limbo.Count}
		if err != nil {
			cs = CursorStat{Name: name, Acked: st.First - 1, Persisted: st.First - 1, Invalid: true}
		}
		st.Last = max(st.Last, cs.Acked)
		st.Cursors = append(st.Cursors, cs)
	}
	for i := range st.Cursors {
		st.Cursors[i].lagFrom(st.Last, st.Newest, st.Oldest)
	}
	return st, nil
}
