package spool

import (
	"bytes"
	"errors"
	"testing"
)

// TestDropExcept: the records keep selects are handed back, not counted,
// and acknowledged with the rest; Since and Until leave them out.
func TestDropExcept(t *testing.T) {
	o := testOptions()
	o.MaxBytes = 3 * o.SegmentBytes
	l := openLog(t, t.TempDir(), o)
	c, _ := l.Cursor("slow")
	for i := uint64(1); ; i++ {
		if _, err := l.Append([][]byte{payload(i)}); errors.Is(err, ErrFull) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	end, ok := l.OldestSegmentEnd()
	if !ok || end < 4 {
		t.Fatalf("OldestSegmentEnd = %d, %v", end, ok)
	}
	keep := func(b []byte) bool { return bytes.Equal(b, payload(1)) || bytes.Equal(b, payload(3)) }
	d, err := c.DropExcept(end, keep)
	if err != nil {
		t.Fatal(err)
	}
	if d.First != 1 || d.Last != end || d.Count != int64(end-2) {
		t.Fatalf("DropExcept(%d) = %+v; want 1..%d, %d records", end, d, end, end-2)
	}
	if len(d.Kept) != 2 || d.Kept[0].Seq != 1 || d.Kept[1].Seq != 3 ||
		!bytes.Equal(d.Kept[0].Data, payload(1)) || !bytes.Equal(d.Kept[1].Data, payload(3)) {
		t.Fatalf("kept %+v, want records 1 and 3", d.Kept)
	}
	if !d.Since.After(d.Kept[0].Time) {
		t.Fatalf("since %s is the time of a kept record (%s), not of the first dropped one", d.Since, d.Kept[0].Time)
	}
	if st := l.Stat(); st.Cursors[0].Acked != end {
		t.Fatalf("acked %d, want %d", st.Cursors[0].Acked, end)
	}
}
