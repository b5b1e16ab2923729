package spool

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestTornTail damages the end of the last segment the ways a crash does:
// the log ends at the last good frame, appending continues after it, and a
// second crash loses nothing more.
func TestTornTail(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	garbage := make([]byte, 3000)
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	cases := []struct {
		name   string
		damage func([]byte) []byte
		good   uint64 // last record that survives of 1..10
	}{
		{"short frame", func(b []byte) []byte { return b[:len(b)-100] }, 9},
		{"short header", func(b []byte) []byte { return b[:len(b)-int(frameSize(200))+10] }, 9},
		{"zero-filled tail", func(b []byte) []byte { return append(b, make([]byte, 4096)...) }, 10},
		{"zeroed last frame", func(b []byte) []byte {
			clear(b[len(b)-int(frameSize(200)):])
			return b
		}, 9},
		{"garbage tail", func(b []byte) []byte { return append(b, garbage...) }, 10},
		{"bad crc at the end", func(b []byte) []byte {
			b[len(b)-50] ^= 0x01
			return b
		}, 9},
		{"bad length at the end", func(b []byte) []byte {
			b[len(b)-int(frameSize(200))+1] ^= 0x40
			return b
		}, 9},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			o := testOptions()
			o.SegmentBytes = 1 << 20
			l := openLog(t, dir, o)
			c, _ := l.Cursor("sqs")
			appendRecords(t, l, 1, 10, 3)
			crash(l)
			path := lastSeg(t, dir)
			modifyFile(t, path, tc.damage)

			l = openLog(t, dir, o)
			rec := l.Recovery()
			if rec.TornBytes == 0 || len(rec.Damaged) != 0 || len(rec.Lost) != 0 {
				t.Fatalf("recovery %+v", rec)
			}
			if st := l.Stat(); st.Last != tc.good {
				t.Fatalf("last %d, want %d", st.Last, tc.good)
			}
			if info, _ := os.Stat(path); info.Size() != frameOffset(1, tc.good+1) {
				t.Fatalf("file size %d, want it cut at %d", info.Size(), frameOffset(1, tc.good+1))
			}
			appendRecords(t, l, tc.good+1, 20, 4)
			c, _ = l.Cursor("sqs")
			checkRecords(t, readN(t, c, 20, 7), 1, 20)
			crash(l)

			l = openLog(t, dir, o)
			if rec := l.Recovery(); rec.TornBytes != 0 || len(rec.Damaged) != 0 {
				t.Fatalf("second recovery %+v", rec)
			}
			c, _ = l.Cursor("sqs")
			checkRecords(t, readN(t, c, 20, 100), 1, 20)
		})
	}
}

// TestEmptyLastSegment: a crash right after a segment file was created.
func TestEmptyLastSegment(t *testing.T) {
	for _, size := range []int64{0, 10, segHeaderSize} {
		dir := t.TempDir()
		l := openLog(t, dir, testOptions())
		c, _ := l.Cursor("sqs")
		appendRecords(t, l, 1, 18, 18) // fills the first 4 KiB segment
		crash(l)
		// The next Append had created the next file, and no more.
		if err := os.WriteFile(filepath.Join(dir, segName(19)), encodeSegHeader(19, 0)[:size], 0o640); err != nil {
			t.Fatal(err)
		}

		l = openLog(t, dir, testOptions())
		if st := l.Stat(); st.Last != 18 || st.Newest.IsZero() {
			t.Fatalf("size %d: stat %+v", size, st)
		}
		appendRecords(t, l, 19, 40, 5)
		c, _ = l.Cursor("sqs")
		checkRecords(t, readN(t, c, 40, 100), 1, 40)
	}
}

// TestFlippedByteInOldSegment: damage in the middle of an older segment is
// read around, reported to each cursor as the exact lost range, and the file
// is quarantined once every cursor has passed it.
func TestFlippedByteInOldSegment(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   int64 // offset within the damaged frame
	}{
		{"payload", frameHeaderSize + 100},
		{"crc", 5},
		{"length", 1},
		{"sequence number", framePrefixSize + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLog(t, dir, testOptions())
			a, _ := l.Cursor("a")
			l.Cursor("b")
			appendRecords(t, l, 1, 100, 1) // 18 records per segment
			times := map[uint64]int64{}
			for _, r := range readN(t, a, 100, 100) {
				times[r.Seq] = unixNano(r.Time)
			}
			crash(l)
			// Segment 2 holds 19..36: damage record 25 in its middle.
			path := filepath.Join(dir, segName(19))
			modifyFile(t, path, func(buf []byte) []byte {
				buf[frameOffset(19, 25)+tc.at] ^= 0x10
				return buf
			})

			l = openLog(t, dir, testOptions())
			if rec := l.Recovery(); len(rec.Damaged) != 0 || rec.TornBytes != 0 {
				t.Fatalf("recovery %+v: only the last segment is scanned at Open", rec)
			}
			for _, name := range []string{"a", "b"} {
				c, _ := l.Cursor(name)
				recs := readN(t, c, 100, 30) // 99 records and one lost run
				checkRecords(t, recs[:24], 1, 24)
				lost := recs[24].Lost
				want := LostRange{First: 25, Last: 25, Count: 1,
					Since: fromUnixNano(times[24]), Until: fromUnixNano(times[26])}
				if lost == nil || *lost != want || recs[24].Seq != 25 || recs[24].Data != nil || recs[24].Last() != 25 {
					t.Fatalf("cursor %s: record 25 = %+v (lost %+v), want lost %+v", name, recs[24], lost, want)
				}
				checkRecords(t, recs[25:], 26, 100)
				if err := c.Ack(1, 100); err != nil {
					t.Fatal(err)
				}
				if err := l.Checkpoint(); err != nil {
					t.Fatal(err)
				}
			}
			if q := filesWith(t, dir, corruptSuffix); len(q) != 1 || q[0] != segName(19)+corruptSuffix {
				t.Fatalf("quarantined %v", q)
			}
			if st := l.Stat(); st.Quarantined != 1 || st.Files != 1 {
				t.Fatalf("stat %+v", st)
			}
			l.Close()
			l = openLog(t, dir, testOptions())
			if st := l.Stat(); st.Quarantined != 1 || st.First != 91 {
				t.Fatalf("after reopen: %+v", st)
			}
		})
	}
}

// TestDamageInLastSegment: damage followed by valid frames in the last
// segment is found at Open, reported in Recovery with the exact range, and
// writing moves to a new segment.
func TestDamageInLastSegment(t *testing.T) {
	dir := t.TempDir()
	o := testOptions()
	o.SegmentBytes = 1 << 20
	l := openLog(t, dir, o)
	appendRecords(t, l, 1, 30, 10)
	crash(l)
	path := lastSeg(t, dir)
	modifyFile(t, path, func(b []byte) []byte {
		// Wipe records 10 to 12 with garbage of the same length.
		for i := frameOffset(1, 10); i < frameOffset(1, 13); i++ {
			b[i] = byte(i * 7)
		}
		return b
	})
	l = openLog(t, dir, o)
	rec := l.Recovery()
	if len(rec.Damaged) != 1 || len(rec.Lost) != 1 || rec.Lost[0].First != 10 || rec.Lost[0].Last != 12 || rec.Lost[0].Count != 3 {
		t.Fatalf("recovery %+v", rec)
	}
	appendRecords(t, l, 31, 35, 5)
	if n := len(segFiles(t, dir)); n != 2 {
		t.Fatalf("%d segments: writing must continue in a new one", n)
	}
	c, _ := l.Cursor("sqs")
	recs := readN(t, c, 33, 100)
	checkRecords(t, recs[:9], 1, 9)
	if lr := recs[9].Lost; lr == nil || lr.First != 10 || lr.Last != 12 || lr.Since.IsZero() || lr.Until.IsZero() {
		t.Fatalf("lost run %+v", recs[9])
	}
	checkRecords(t, recs[10:], 13, 35)
}

// TestCursorAheadOfLog: an OS crash erased records a cursor had already
// acknowledged. Their sequence numbers are never reused, and a cursor that
// had not passed them is told they are lost.
func TestCursorAheadOfLog(t *testing.T) {
	dir := t.TempDir()
	o := testOptions()
	o.SegmentBytes = 1 << 20
	l := openLog(t, dir, o)
	fast, _ := l.Cursor("fast")
	slow, _ := l.Cursor("slow")
	appendRecords(t, l, 1, 50, 10)
	readN(t, fast, 50, 100)
	fast.Ack(1, 50)
	readN(t, slow, 10, 100)
	slow.Ack(1, 10)
	l.Checkpoint()
	crash(l)
	// The page cache lost everything after record 30.
	modifyFile(t, lastSeg(t, dir), func(b []byte) []byte { return b[:frameOffset(1, 31)] })

	l = openLog(t, dir, o)
	rec := l.Recovery()
	if len(rec.Lost) != 1 || rec.Lost[0].First != 31 || rec.Lost[0].Last != 50 {
		t.Fatalf("recovery %+v", rec)
	}
	if first, err := l.Append([][]byte{payload(51)}); err != nil || first != 51 {
		t.Fatalf("Append after the loss: %d, %v; want 51", first, err)
	}
	slow, _ = l.Cursor("slow")
	recs := readN(t, slow, 22, 100)
	checkRecords(t, recs[:20], 11, 30)
	if lr := recs[20].Lost; lr == nil || lr.First != 31 || lr.Last != 50 || lr.Count != 20 {
		t.Fatalf("slow cursor: %+v, want lost 31..50", recs[20])
	}
	checkRecords(t, recs[21:], 51, 51)
	fast, _ = l.Cursor("fast")
	checkRecords(t, readN(t, fast, 1, 100), 51, 51)
}

// TestCursorAheadOfLogAlone: when every cursor had passed the erased
// records, they were delivered: nothing is reported lost.
func TestCursorAheadOfLogAlone(t *testing.T) {
	dir := t.TempDir()
	o := testOptions()
	o.SegmentBytes = 1 << 20
	l := openLog(t, dir, o)
	c, _ := l.Cursor("sqs")
	appendRecords(t, l, 1, 50, 10)
	readN(t, c, 50, 100)
	c.Ack(1, 50)
	l.Checkpoint()
	crash(l)
	modifyFile(t, lastSeg(t, dir), func(b []byte) []byte { return b[:frameOffset(1, 31)] })

	l = openLog(t, dir, o)
	if rec := l.Recovery(); len(rec.Lost) != 0 {
		t.Fatalf("recovery %+v: nothing was lost", rec)
	}
	if first, err := l.Append([][]byte{payload(51)}); err != nil || first != 51 {
		t.Fatalf("Append: %d, %v; want 51", first, err)
	}
	c, _ = l.Cursor("sqs")
	checkRecords(t, readN(t, c, 1, 100), 51, 51)
}

// TestMissingSegment: a segment file deleted behind the log's back (an
// operator, or a reclaim the cursor files do not reflect).
func TestMissingSegment(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testOptions())
	l.Cursor("sqs")
	appendRecords(t, l, 1, 60, 1) // 18 records per segment
	l.Close()
	os.Remove(filepath.Join(dir, segName(19))) // 19..36
	os.Remove(filepath.Join(dir, segName(1)))  // 1..18

	l = openLog(t, dir, testOptions())
	c, _ := l.Cursor("sqs")
	recs := readN(t, c, 25, 100)
	if lr := recs[0].Lost; lr == nil || lr.First != 1 || lr.Last != 36 || lr.Count != 36 {
		t.Fatalf("first record %+v, want lost 1..36", recs[0])
	}
	checkRecords(t, recs[1:], 37, 60)
}

// TestCorruptCursorFile: an unreadable cursor file restarts the cursor at the
// oldest record (repeats, never skips).
func TestCorruptCursorFile(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testOptions())
	c, _ := l.Cursor("sqs")
	appendRecords(t, l, 1, 30, 10)
	readN(t, c, 20, 100)
	c.Ack(1, 20)
	l.Close()
	for _, content := range [][]byte{nil, []byte("garbage"), bytes.Repeat([]byte{0}, cursorFileSize)} {
		os.WriteFile(filepath.Join(dir, cursorPrefix+"sqs"), content, 0o640)
		l = openLog(t, dir, testOptions())
		if rec := l.Recovery(); len(rec.CursorsReset) != 1 || rec.CursorsReset[0] != "sqs" {
			t.Fatalf("recovery %+v", rec)
		}
		if st := l.Stat(); !st.Cursors[0].Invalid {
			t.Fatalf("stat %+v", st.Cursors[0])
		}
		// Segments up to record 20 were deleted once it was acknowledged.
		first := l.Stat().First
		if first <= 1 || first > 21 {
			t.Fatalf("first record on disk %d", first)
		}
		c, _ = l.Cursor("sqs")
		checkRecords(t, readN(t, c, int(31-first), 100), first, 30)
		l.Close()
	}
	// Leftover temporary files are removed.
	os.WriteFile(filepath.Join(dir, cursorPrefix+"sqs"+tmpSuffix), []byte("x"), 0o640)
	l = openLog(t, dir, testOptions())
	if rec := l.Recovery(); rec.TempRemoved != 1 {
		t.Fatalf("recovery %+v", rec)
	}
}

// TestOpenSurvivesGarbage: files full of garbage under segment names never
// stop Open.
func TestOpenSurvivesGarbage(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 20; i++ {
		dir := t.TempDir()
		for base := uint64(1); base < 100; base += uint64(1 + rng.IntN(40)) {
			b := make([]byte, rng.IntN(3000))
			for j := range b {
				b[j] = byte(rng.Uint32())
			}
			if rng.IntN(2) == 0 {
				copy(b, encodeSegHeader(base, 0))
			}
			os.WriteFile(filepath.Join(dir, segName(base)), b, 0o640)
		}
		os.WriteFile(filepath.Join(dir, cursorPrefix+"x"), []byte("nope"), 0o640)
		l, err := Open(dir, testOptions())
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		c, _ := l.Cursor("x")
		first, err := l.Append([][]byte{payload(1)})
		if err != nil {
			t.Fatal(err)
		}
		// Everything readable ends with the record just appended.
		var last Record
		for last.Seq != first {
			recs := readN(t, c, 1, 1000)
			last = recs[0]
		}
		if !bytes.Equal(last.Data, payload(1)) {
			t.Fatalf("last record %q", last.Data)
		}
		l.Close()
	}
}
