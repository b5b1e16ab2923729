package spool

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// openFull opens a log bounded at three segments in dir, with a cursor
// "slow" that reads nothing, and fills it until the bound refuses a record.
// It returns the options (to reopen with), the log, the cursor and the end
// of the oldest segment.
func openFull(t *testing.T, dir string) (Options, *Log, *Cursor, uint64) {
	t.Helper()
	o := testOptions()
	o.MaxBytes = 3 * o.SegmentBytes
	l, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := l.Cursor("slow")
	fillToFull(t, l)
	end, _ := l.OldestSegmentEnd()
	return o, l, c, end
}

// fillToFull appends records until the bound refuses one; it returns the
// last appended.
func fillToFull(t *testing.T, l *Log) uint64 {
	t.Helper()
	for i := uint64(1); ; i++ {
		if _, err := l.Append([][]byte{payload(i)}); errors.Is(err, ErrFull) {
			return i - 1
		} else if err != nil {
			t.Fatal(err)
		}
	}
}

// TestOverflowSurvivesCrash: a Drop's count is written by the checkpoint
// that writes the position it moved; a crash keeps both, and the reopened
// cursor hands the overflow out again (same ID) until it is cleared.
func TestOverflowSurvivesCrash(t *testing.T) {
	dir := t.TempDir()
	o, l, c, end := openFull(t, dir)
	d, err := c.Drop(end)
	if err != nil || d.Count != int64(end) {
		t.Fatalf("Drop(%d) = %+v, %v", end, d, err)
	}
	if err := c.AddOverflow(Overflow{Count: 5, Since: d.Since.Add(-time.Second), Until: d.Until.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := l.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	crash(l)

	l = openLog(t, dir, o)
	if st := l.Stat(); st.Cursors[0].Acked != end || st.Cursors[0].Overflow != int64(end)+5 {
		t.Fatalf("after the crash: cursor %+v; want acked %d, overflow %d", st.Cursors[0], end, end+5)
	}
	c, _ = l.Cursor("slow")
	want := Overflow{Count: int64(end) + 5, Since: d.Since.Add(-time.Second), Until: d.Until.Add(time.Hour), ID: "gap-1"}
	got, ok := c.TakeOverflow("gap-1")
	if !ok || got != want {
		t.Fatalf("TakeOverflow = %+v, %v; want %+v", got, ok, want)
	}
	// Counted after the seal: waits for the next report.
	c.AddOverflow(Overflow{Count: 2, Since: want.Until, Until: want.Until.Add(time.Second)})
	if again, _ := c.TakeOverflow("gap-2"); again != want {
		t.Fatalf("TakeOverflow again = %+v; want the sealed one %+v", again, want)
	}
	if err := l.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	crash(l)

	// The sealed report is repeated with its ID; the rest stays apart.
	l = openLog(t, dir, o)
	c, _ = l.Cursor("slow")
	if sealed, open := c.PendingOverflow(); sealed != want || open.Count != 2 {
		t.Fatalf("pending after the second crash: sealed %+v open %+v", sealed, open)
	}
	if got, _ := c.TakeOverflow("gap-3"); got != want {
		t.Fatalf("TakeOverflow after the crash = %+v; want %+v", got, want)
	}
	c.ClearOverflow()
	next, ok := c.TakeOverflow("gap-3")
	if !ok || next.Count != 2 || next.ID != "gap-3" || !next.Since.Equal(want.Until) {
		t.Fatalf("next TakeOverflow = %+v, %v", next, ok)
	}
	c.ClearOverflow()
	if _, ok := c.TakeOverflow("gap-4"); ok {
		t.Fatal("TakeOverflow after every report was cleared returned one")
	}
	l.Close()
	l = openLog(t, dir, o)
	if st := l.Stat(); st.Cursors[0].Overflow != 0 {
		t.Fatalf("overflow %d after the clears were written", st.Cursors[0].Overflow)
	}
}

// TestDropWithoutCheckpoint: a crash before the checkpoint keeps neither the
// moved position nor the count: the records are read again.
func TestDropWithoutCheckpoint(t *testing.T) {
	dir := t.TempDir()
	o, l, c, end := openFull(t, dir)
	if _, err := c.Drop(end); err != nil {
		t.Fatal(err)
	}
	crash(l)
	l = openLog(t, dir, o)
	if st := l.Stat(); st.Cursors[0].Acked != 0 || st.Cursors[0].Overflow != 0 || st.First != 1 {
		t.Fatalf("after the crash: %+v, first %d", st.Cursors[0], st.First)
	}
}

// TestDropFuncTimes: the times inspect gives replace the append times in
// the window.
func TestDropFuncTimes(t *testing.T) {
	l := openLog(t, t.TempDir(), testOptions())
	c, _ := l.Cursor("slow")
	appendRecords(t, l, 1, 10, 10)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d, err := c.DropFunc(10, func(data []byte, at time.Time) (bool, time.Time) {
		if bytes.Equal(data, payload(10)) {
			return true, time.Time{}
		}
		return false, base.Add(time.Duration(data[len("record 0000000")]-'0') * time.Second)
	})
	if err != nil {
		t.Fatal(err)
	}
	if d.Count != 9 || len(d.Kept) != 1 || !d.Since.Equal(base.Add(time.Second)) || !d.Until.Equal(base.Add(9*time.Second)) {
		t.Fatalf("DropFunc = %+v", d)
	}
	if _, open := c.PendingOverflow(); open.Count != 9 || !open.Since.Equal(d.Since) || !open.Until.Equal(d.Until) {
		t.Fatalf("overflow %+v", open)
	}
}

// TestCursorFileVersion1: a cursor file written before cursors kept their
// overflow (32 bytes, version 1) reads as the same position and no overflow;
// the next checkpoint writes version 2.
func TestCursorFileVersion1(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testOptions())
	c, _ := l.Cursor("sqs")
	appendRecords(t, l, 1, 30, 10)
	l.Close()
	at := time.Date(2026, 11, 23, 18, 0, 0, 20e6, time.UTC).UnixNano()
	v1 := make([]byte, cursorFileSizeV1)
	copy(v1, cursorMagic)
	v1[7] = 1
	le.PutUint64(v1[8:], 20)
	le.PutUint64(v1[16:], uint64(at))
	le.PutUint32(v1[28:], checksum(v1[:28]))
	path := filepath.Join(dir, cursorPrefix+"sqs")
	if err := os.WriteFile(path, v1, 0o640); err != nil {
		t.Fatal(err)
	}
	if st, err := Inspect(dir); err != nil || st.Cursors[0].Acked != 20 || st.Cursors[0].Invalid {
		t.Fatalf("Inspect: %+v, %v", st.Cursors, err)
	}
	l = openLog(t, dir, testOptions())
	if rec := l.Recovery(); len(rec.CursorsReset) != 0 {
		t.Fatalf("recovery %+v", rec)
	}
	c, _ = l.Cursor("sqs")
	if sealed, open := c.PendingOverflow(); sealed.Count != 0 || open.Count != 0 {
		t.Fatalf("overflow from a version 1 file: %+v %+v", sealed, open)
	}
	if st := l.Stat(); st.Cursors[0].Acked != 20 || !st.Cursors[0].AckedTime.Equal(fromUnixNano(at)) {
		t.Fatalf("cursor %+v", st.Cursors[0])
	}
	checkRecords(t, readN(t, c, 10, 100), 21, 30)
	c.Ack(21, 22)
	c.AddOverflow(Overflow{Count: 1})
	l.Close()
	b, _ := os.ReadFile(path)
	if len(b) != cursorFileSize || b[7] != cursorVersion {
		t.Fatalf("cursor file after a checkpoint: %d bytes, version %d", len(b), b[7])
	}
	// A version 1 file with a bad CRC is torn: reset as before.
	v1[9] ^= 1
	os.WriteFile(path, v1, 0o640)
	l = openLog(t, dir, testOptions())
	if rec := l.Recovery(); len(rec.CursorsReset) != 1 {
		t.Fatalf("recovery of a torn version 1 file: %+v", rec)
	}
}

// TestCursorFileRoundTrip: encode and decode agree; every bit flip is
// refused.
func TestCursorFileRoundTrip(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 18, 0, 0, 123, time.UTC)
	cf := cursorFile{acked: 77, ackedTime: t0.UnixNano(),
		open:   Overflow{Count: 3, Since: t0, Until: t0.Add(time.Second)},
		sealed: Overflow{Count: 9, Since: t0.Add(-time.Hour), Until: t0, ID: "01KB0000000000000000000000"}}
	b := encodeCursor(cf)
	got, ok := decodeCursor(b)
	if !ok || got != cf {
		t.Fatalf("decode = %+v, %v; want %+v", got, ok, cf)
	}
	for i := 0; i < len(b)*8; i++ {
		c := bytes.Clone(b)
		c[i/8] ^= 1 << (i % 8)
		if _, ok := decodeCursor(c); ok {
			t.Fatalf("bit %d flipped: accepted", i)
		}
	}
}

// TestDropInFlight: records handed out and not acknowledged when a Drop
// passes them are counted as in flight: acknowledged later, they leave the
// count; a crash first makes them overflow at the next Open.
func TestDropInFlight(t *testing.T) {
	dir := t.TempDir()
	o := testOptions()
	l, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := l.Cursor("slow")
	appendRecords(t, l, 1, 40, 10)
	readN(t, c, 20, 10) // 1..20 in flight
	c.Ack(1, 5)
	c.Ack(11, 12)
	d, err := c.Drop(30)
	if err != nil || d.Count != 10 || d.First != 21 {
		t.Fatalf("Drop = %+v, %v", d, err)
	}
	if st := l.Stat(); st.Cursors[0].Overflow != 10+13 {
		t.Fatalf("overflow %d, want 10 dropped + 13 in flight", st.Cursors[0].Overflow)
	}
	c.Ack(6, 10) // the sink accepted these after all
	if err := l.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	crash(l)
	l = openLog(t, dir, o)
	c, _ = l.Cursor("slow")
	sealed, open := c.PendingOverflow()
	if sealed.Count != 0 || open.Count != 10+8 || open.Since.IsZero() || open.Until.IsZero() {
		t.Fatalf("after the crash: sealed %+v open %+v; want 18 (13..20 lost in flight)", sealed, open)
	}
	checkRecords(t, readN(t, c, 10, 100), 31, 40)
}
