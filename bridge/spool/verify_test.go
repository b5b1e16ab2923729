package spool

import (
	"path/filepath"
	"testing"
)

// TestVerify: a clean spool checks clean; a flipped byte in an older
// segment is one lost record there, garbage after the last frame of the
// last segment is its tail. Nothing is changed: Open then finds the same.
func TestVerify(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testOptions()) // 4 KiB segments: 17 records each
	appendRecords(t, l, 1, 60, 1)
	crash(l)
	segs := segFiles(t, dir)
	if len(segs) < 3 {
		t.Fatalf("%d segments", len(segs))
	}
	checks, err := Verify(dir)
	if err != nil || len(checks) != len(segs) {
		t.Fatalf("Verify: %d checks, %v", len(checks), err)
	}
	var n int64
	for _, c := range checks {
		if c.Damaged() {
			t.Fatalf("clean spool: %+v", c)
		}
		n += c.Records
	}
	if n != 60 || !checks[len(checks)-1].Last || checks[0].Last {
		t.Fatalf("clean spool: %d records, %+v", n, checks)
	}

	older, _ := parseSegName(segs[1])
	modifyFile(t, filepath.Join(dir, segs[1]), func(b []byte) []byte {
		b[frameOffset(older, older+2)+frameHeaderSize+100] ^= 1
		return b
	})
	modifyFile(t, lastSeg(t, dir), func(b []byte) []byte { return append(b, make([]byte, 1000)...) })
	checks, err = Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range checks {
		switch i {
		case 1:
			if len(c.Lost) != 1 || c.Lost[0].First != older+2 || c.Lost[0].Count != 1 || c.TailBytes != 0 || c.Last {
				t.Fatalf("flipped byte: %+v", c)
			}
		case len(checks) - 1:
			if c.TailBytes != 1000 || len(c.Lost) != 0 || !c.Last {
				t.Fatalf("zero-filled tail: %+v", c)
			}
		default:
			if c.Damaged() {
				t.Fatalf("undamaged segment %d: %+v", i, c)
			}
		}
	}
	rec := openLog(t, dir, testOptions()).Recovery()
	if rec.TornBytes != 1000 {
		t.Fatalf("Open found %+v, Verify a 1000-byte tail", rec)
	}
}
