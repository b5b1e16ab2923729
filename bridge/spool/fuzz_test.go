package spool

import (
	"bytes"
	"os"
	"testing"
)

// FuzzRecover appends arbitrary bytes to a valid last segment, as a crash or
// a bad disk might leave it. Open must not fail or panic, the five valid
// records must come back first and intact, and appending must continue, also
// across a second Open.
func FuzzRecover(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, 100))
	f.Add([]byte("garbage that is not a frame"))
	f.Add(appendFrame(nil, 6, 1, []byte("a valid sixth record")))
	f.Add(appendFrame(nil, 6, 1, []byte("cut short"))[:20])
	f.Add(appendFrame(nil, 9, 1, []byte("a frame with a far sequence number")))
	f.Add(append([]byte("junk"), appendFrame(nil, 6, 1, []byte("after junk"))...))
	f.Add(append(appendFrame(nil, 6, 1, []byte("six")), 0xff, 0xff, 0xff, 0x7f))
	f.Fuzz(func(t *testing.T, tail []byte) {
		dir := t.TempDir()
		o := testOptions()
		o.SegmentBytes = 1 << 20
		l, err := Open(dir, o)
		if err != nil {
			t.Fatal(err)
		}
		appendRecords(t, l, 1, 5, 5)
		l.Close()
		path := lastSeg(t, dir)
		file, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		file.Write(tail)
		file.Close()

		for round := 0; round < 2; round++ {
			l, err := Open(dir, o)
			if err != nil {
				t.Fatalf("Open after appending %d bytes: %v", len(tail), err)
			}
			c, err := l.Cursor("x")
			if err != nil {
				t.Fatal(err)
			}
			after := []byte{'a', 'f', 't', 'e', 'r', byte('0' + round)}
			seq, err := l.Append([][]byte{after})
			if err != nil {
				t.Fatal(err)
			}
			var recs []Record
			for len(recs) == 0 || recs[len(recs)-1].Last() < seq {
				recs = append(recs, readN(t, c, 1, 1000)...)
			}
			checkRecords(t, recs[:5], 1, 5)
			if got := recs[len(recs)-1]; got.Seq != seq || !bytes.Equal(got.Data, after) {
				t.Fatalf("round %d: last record %d %q, want %d %q", round, got.Seq, got.Data, seq, after)
			}
			l.Close() // the cursor stays at 0: round 2 reads everything again
		}
	})
}
