package spool

import (
	"slices"
	"strings"
	"time"
)

// Stat is a snapshot of the spool, for `keyrelay spool` and metrics.
type Stat struct {
	Dir      string
	Files    int   // segment files
	Bytes    int64 // their total size
	MaxBytes int64 // the bound (0 from Inspect)
	// First is the sequence number of the oldest record on disk, Last that
	// of the newest appended; Last < First when the log is empty.
	First, Last uint64
	// Append times of the oldest and newest records (zero if unknown).
	Oldest, Newest time.Time
	// Quarantined damaged segment files (*.corrupt) and their size, not
	// counted in Bytes.
	Quarantined      int
	QuarantinedBytes int64
	// Syncs counts fsyncs of segment files, SyncErrors the failed ones,
	// WriteErrors failed writes (0 from Inspect).
	Syncs, SyncErrors, WriteErrors int64
	Segments                       []SegmentStat
	Cursors                        []CursorStat // by name
}

// SegmentStat describes one segment file.
type SegmentStat struct {
	Name    string
	Base    uint64 // sequence number of its first record
	Bytes   int64
	Damaged bool // found damaged; quarantined when every cursor has passed it
}

// CursorStat describes one cursor, open or not.
type CursorStat struct {
	Name      string
	Open      bool
	Invalid   bool      // its file was unreadable at Open; it restarted at the oldest record
	Acked     uint64    // every record up to this one is acknowledged
	AckedTime time.Time // append time of record Acked (zero if unknown)
	Persisted uint64    // Acked as last written to the cursor file
	InFlight  int64     // records handed out and not yet in the acknowledged prefix
	// Overflow counts records lost to the bound and not yet reported
	// (Cursor.TakeOverflow, ClearOverflow); from Inspect, as last written.
	Overflow int64
	// Lag is the number of records after Acked; LagTime how much older the
	// oldest of them is than the newest record (approximated from the time
	// of record Acked), 0 when Lag is 0.
	Lag     int64
	LagTime time.Duration
}

func (cs *CursorStat) lagFrom(last uint64, newest, oldest time.Time) {
	cs.Lag, cs.LagTime = 0, 0
	if last <= cs.Acked {
		return
	}
	cs.Lag = int64(last - cs.Acked)
	from := cs.AckedTime
	if from.IsZero() {
		from = oldest
	}
	if !from.IsZero() && newest.After(from) {
		cs.LagTime = newest.Sub(from)
	}
}

// Stat returns a snapshot of the spool.
func (l *Log) Stat() Stat {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := Stat{
		Dir: l.dir, Files: len(l.segs), Bytes: l.bytes, MaxBytes: l.opts.MaxBytes,
		First: l.firstLocked(), Last: l.next - 1, Newest: fromUnixNano(l.newest),
		Quarantined: l.quarantined, QuarantinedBytes: l.qBytes,
		Syncs: l.counters.syncs, SyncErrors: l.counters.syncErrors, WriteErrors: l.counters.writeErrors,
	}
	for _, seg := range l.segs {
		if st.Oldest.IsZero() && seg.firstTime != 0 {
			st.Oldest = fromUnixNano(seg.firstTime)
		}
		st.Segments = append(st.Segments, SegmentStat{
			Name: segName(seg.base), Base: seg.base, Bytes: seg.size, Damaged: seg.damaged,
		})
	}
	for _, cst := range l.cursors {
		cs := CursorStat{
			Name: cst.name, Open: cst.open != nil, Invalid: cst.invalid,
			Acked: cst.acked, AckedTime: fromUnixNano(cst.ackedTime), Persisted: cst.persisted,
			InFlight: int64(cst.handed - cst.acked), Overflow: cst.ovf.Count + cst.sealed.Count + cst.limboOvf.Count,
		}
		cs.lagFrom(st.Last, st.Newest, st.Oldest)
		st.Cursors = append(st.Cursors, cs)
	}
	slices.SortFunc(st.Cursors, func(a, b CursorStat) int { return strings.Compare(a.Name, b.Name) })
	return st
}
