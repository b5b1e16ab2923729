package spool

import (
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestAppendReadAcrossSegments(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testOptions())
	c, err := l.Cursor("sqs")
	if err != nil {
		t.Fatal(err)
	}
	// Batches of 1, 7 and 40 records of 224 bytes against 4 KiB segments.
	appendRecords(t, l, 1, 100, 1)
	appendRecords(t, l, 101, 300, 7)
	appendRecords(t, l, 301, 500, 40)
	if n := len(segFiles(t, dir)); n < 20 {
		t.Fatalf("%d segment files, want rotation into many", n)
	}
	recs := readN(t, c, 500, 37)
	checkRecords(t, recs, 1, 500)
	for i := 1; i < len(recs); i++ {
		if recs[i].Time.Before(recs[i-1].Time) {
			t.Fatalf("record %d: time %v before %v", recs[i].Seq, recs[i].Time, recs[i-1].Time)
		}
	}
	expectNothing(t, c)

	st := l.Stat()
	if st.First != 1 || st.Last != 500 || st.Cursors[0].Lag != 500 || st.Cursors[0].InFlight != 500 {
		t.Fatalf("stat %+v", st)
	}
	if st.Oldest.IsZero() || !st.Newest.After(st.Oldest) || st.Cursors[0].LagTime <= 0 {
		t.Fatalf("stat times: oldest %v newest %v lag %v", st.Oldest, st.Newest, st.Cursors[0].LagTime)
	}
	if err := c.Ack(1, 500); err != nil {
		t.Fatal(err)
	}
	if err := l.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if segs := segFiles(t, dir); len(segs) != 1 {
		t.Fatalf("after acking everything: %v, want only the current segment", segs)
	}
	st = l.Stat()
	if st.Cursors[0].Lag != 0 || st.Cursors[0].Persisted != 500 || st.Cursors[0].LagTime != 0 || st.Files != 1 {
		t.Fatalf("stat after ack: %+v", st)
	}

	// maxBytes bounds a batch; the first record always fits.
	appendRecords(t, l, 501, 510, 10)
	recs, err = c.Next(t.Context(), 100, 450)
	if err != nil || len(recs) != 2 {
		t.Fatalf("Next(maxBytes 450): %d records, %v; want 2", len(recs), err)
	}
	recs, err = c.Next(t.Context(), 100, 1)
	if err != nil || len(recs) != 1 {
		t.Fatalf("Next(maxBytes 1): %d records, %v; want 1", len(recs), err)
	}
}

func TestReopenResumesUnacked(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testOptions())
	c, _ := l.Cursor("sqs")
	appendRecords(t, l, 1, 100, 10)
	readN(t, c, 60, 20)
	if err := c.Ack(1, 30); err != nil {
		t.Fatal(err)
	}
	if err := l.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if err := c.Ack(31, 40); err != nil { // acknowledged, never persisted
		t.Fatal(err)
	}
	crash(l)

	l = openLog(t, dir, testOptions())
	if rec := l.Recovery(); rec.TornBytes != 0 || len(rec.Lost) != 0 || len(rec.Damaged) != 0 {
		t.Fatalf("recovery after a clean crash: %+v", rec)
	}
	c, err := l.Cursor("sqs")
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, readN(t, c, 70, 25), 31, 100)
	appendRecords(t, l, 101, 110, 5)
	checkRecords(t, readN(t, c, 10, 25), 101, 110)
	if err := c.Ack(31, 110); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// A clean Close persists everything.
	l = openLog(t, dir, testOptions())
	c, _ = l.Cursor("sqs")
	expectNothing(t, c)
	if st := l.Stat(); st.Last != 110 || st.Cursors[0].Acked != 110 {
		t.Fatalf("stat %+v", st)
	}
}

func TestSizeBound(t *testing.T) {
	dir := t.TempDir()
	o := testOptions()
	o.MaxBytes = 2 * o.SegmentBytes
	l := openLog(t, dir, o)
	c, _ := l.Cursor("sqs")
	var last uint64
	var full error
	for i := uint64(1); i < 1000; i++ {
		if _, err := l.Append([][]byte{payload(i)}); err != nil {
			full = err
			break
		}
		last = i
	}
	if !errors.Is(full, ErrFull) {
		t.Fatalf("Append beyond MaxBytes: %v, want ErrFull", full)
	}
	st := l.Stat()
	if st.Last != last || st.Bytes > o.MaxBytes {
		t.Fatalf("after ErrFull: last %d (want %d), bytes %d of %d", st.Last, last, st.Bytes, o.MaxBytes)
	}
	// Acknowledging frees space: Append checkpoints and reclaims by itself.
	readN(t, c, int(last), 100)
	if err := c.Ack(1, last); err != nil {
		t.Fatal(err)
	}
	if first, err := l.Append([][]byte{payload(last + 1)}); err != nil || first != last+1 {
		t.Fatalf("Append after ack: %d, %v", first, err)
	}
	if l.Stat().Bytes > o.MaxBytes {
		t.Fatal("over the bound")
	}
}

func TestSizeBoundDropOldest(t *testing.T) {
	dir := t.TempDir()
	o := testOptions()
	o.MaxBytes = 3 * o.SegmentBytes
	l := openLog(t, dir, o)
	fast, _ := l.Cursor("fast")
	slow, _ := l.Cursor("slow")
	var last uint64
	for i := uint64(1); ; i++ {
		if _, err := l.Append([][]byte{payload(i)}); errors.Is(err, ErrFull) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		last = i
		recs := readN(t, fast, 1, 1)
		if err := fast.Ack(recs[0].Seq, recs[0].Seq); err != nil {
			t.Fatal(err)
		}
	}
	// The relay's drop-oldest policy for the slow sink: skip the oldest
	// segment, free it, retry.
	inFlight := readN(t, slow, 3, 3) // 1..3 handed out, still in flight
	end, ok := l.OldestSegmentEnd()
	if !ok {
		t.Fatal("no oldest segment end")
	}
	d, err := slow.Drop(end)
	if err != nil {
		t.Fatal(err)
	}
	if d.First != 4 || d.Last != end || d.Count != int64(end-3) || d.Since.IsZero() || !d.Until.After(d.Since) {
		t.Fatalf("Drop(%d) = %+v; want 4..%d, %d records", end, d, end, end-3)
	}
	if err := slow.Ack(inFlight[0].Seq, inFlight[2].Seq); err != nil { // late ack: a no-op
		t.Fatal(err)
	}
	if err := l.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append([][]byte{payload(last + 1)}); err != nil {
		t.Fatalf("Append after Drop: %v", err)
	}
	recs := readN(t, slow, int(last+1-end), 1000)
	checkRecords(t, recs, end+1, last+1)
	st := l.Stat()
	if st.Cursors[1].Name != "slow" || st.Cursors[1].Acked != end || st.Cursors[1].InFlight != int64(last+1-end) {
		t.Fatalf("slow cursor: %+v", st.Cursors[1])
	}
}

func TestSyncPolicies(t *testing.T) {
	var hook atomic.Int64
	onSync := func(d time.Duration, err error) { hook.Add(1) }

	t.Run("every", func(t *testing.T) {
		hook.Store(0)
		o := testOptions()
		o.SegmentBytes, o.Sync, o.OnSync = 1<<20, SyncEvery, onSync
		l := openLog(t, t.TempDir(), o)
		appendRecords(t, l, 1, 50, 5) // 10 Appends
		if s := l.Stat().Syncs; s != 10 || hook.Load() != 10 {
			t.Fatalf("SyncEvery: %d fsyncs (hook %d) for 10 appends", s, hook.Load())
		}
		if err := l.Sync(); err != nil || l.Stat().Syncs != 10 {
			t.Fatalf("Sync with nothing new: %v, %d fsyncs", err, l.Stat().Syncs)
		}
	})
	t.Run("interval", func(t *testing.T) {
		hook.Store(0)
		o := testOptions()
		o.OnSync = onSync
		dir := t.TempDir()
		l := openLog(t, dir, o)
		appendRecords(t, l, 1, 50, 5) // 4 KiB segments: rotations
		files := len(segFiles(t, dir))
		if s := l.Stat().Syncs; s != 0 || files < 3 {
			t.Fatalf("SyncInterval (1 h): %d fsyncs after 10 appends and %d segments, want 0: Append never waits for the disk", s, files)
		}
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
		if s := l.Stat().Syncs; s != int64(files) || hook.Load() != int64(files) {
			t.Fatalf("two Syncs: %d fsyncs (hook %d), want %d: each sealed segment and the current one once", s, hook.Load(), files)
		}
	})
	t.Run("ticker", func(t *testing.T) {
		o := testOptions()
		o.SegmentBytes, o.SyncPeriod = 1<<20, 10*time.Millisecond
		l := openLog(t, t.TempDir(), o)
		appendRecords(t, l, 1, 10, 1)
		deadline := time.Now().Add(5 * time.Second)
		for l.Stat().Syncs == 0 {
			if time.Now().After(deadline) {
				t.Fatal("no background fsync")
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond) // idle: nothing to fsync
		if s := l.Stat().Syncs; s > 2 {
			t.Fatalf("%d fsyncs for one burst: the ticker fsyncs while idle", s)
		}
	})
}

func TestWriteErrorLeavesLogUsable(t *testing.T) {
	dir := t.TempDir()
	o := testOptions()
	var fail atomic.Bool
	o.faults = &faults{write: func(n int) (int, error) {
		if fail.Load() {
			return n / 2, syscall.ENOSPC // half of the batch reaches the file
		}
		return 0, nil
	}}
	l := openLog(t, dir, o)
	c, _ := l.Cursor("sqs")
	appendRecords(t, l, 1, 10, 5)
	fail.Store(true)
	_, err := l.Append([][]byte{payload(11), payload(12)})
	var ioe *IOError
	if !errors.As(err, &ioe) || ioe.Op != "write" || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Append on a full disk: %v, want *IOError wrapping ENOSPC", err)
	}
	if st := l.Stat(); st.Last != 10 || st.WriteErrors != 1 {
		t.Fatalf("after a failed write: last %d, write errors %d", st.Last, st.WriteErrors)
	}
	fail.Store(false)
	appendRecords(t, l, 11, 20, 5) // the same sequence numbers, once space is back
	checkRecords(t, readN(t, c, 20, 100), 1, 20)
	crash(l)

	l = openLog(t, dir, o)
	if rec := l.Recovery(); rec.TornBytes != 0 || len(rec.Damaged) != 0 {
		t.Fatalf("the failed write left bytes behind: %+v", rec)
	}
	c, _ = l.Cursor("sqs")
	checkRecords(t, readN(t, c, 20, 100), 1, 20)
}

// TestCheckpointOnFullDisk: with no room for a temporary cursor file, the
// position is written in place, so that acknowledged segments can still be
// deleted to make room.
func TestCheckpointOnFullDisk(t *testing.T) {
	dir := t.TempDir()
	o := testOptions()
	var full atomic.Bool
	o.faults = &faults{cursorTmp: func() error {
		if full.Load() {
			return syscall.ENOSPC
		}
		return nil
	}}
	l := openLog(t, dir, o)
	c, _ := l.Cursor("sqs")
	appendRecords(t, l, 1, 100, 10)
	full.Store(true)
	readN(t, c, 100, 100)
	c.Ack(1, 100)
	if err := l.Checkpoint(); err != nil {
		t.Fatalf("Checkpoint on a full disk: %v", err)
	}
	if n := len(segFiles(t, dir)); n != 1 {
		t.Fatalf("%d segments left", n)
	}
	if tmp := filesWith(t, dir, tmpSuffix); len(tmp) != 0 {
		t.Fatalf("temporary files left: %v", tmp)
	}
	l.Close()
	if st, _ := Inspect(dir); st.Cursors[0].Acked != 100 {
		t.Fatalf("cursor file: %+v", st.Cursors[0])
	}
}

func TestFsyncErrorRetiresSegment(t *testing.T) {
	for _, policy := range []SyncPolicy{SyncEvery, SyncInterval} {
		t.Run(policy.String(), func(t *testing.T) {
			dir := t.TempDir()
			o := testOptions()
			o.SegmentBytes, o.Sync = 1<<20, policy
			var fail atomic.Bool
			o.faults = &faults{sync: func() error {
				if fail.Load() {
					return syscall.EIO
				}
				return nil
			}}
			l := openLog(t, dir, o)
			c, _ := l.Cursor("sqs")
			appendRecords(t, l, 1, 10, 5)
			fail.Store(true)
			var err error
			next := uint64(11)
			if policy == SyncEvery {
				_, err = l.Append([][]byte{payload(11)}) // taken back
			} else {
				appendRecords(t, l, 11, 12, 2) // written; the fsync fails later
				next = 13
				err = l.Sync()
			}
			var ioe *IOError
			if !errors.As(err, &ioe) || ioe.Op != "fsync" || !errors.Is(err, syscall.EIO) {
				t.Fatalf("fsync failure: %v", err)
			}
			if st := l.Stat(); st.Last != next-1 || st.SyncErrors != 1 {
				t.Fatalf("after failed fsync: last %d (want %d), sync errors %d", st.Last, next-1, st.SyncErrors)
			}
			fail.Store(false)
			appendRecords(t, l, next, 30, 5)
			if n := len(segFiles(t, dir)); n != 2 {
				t.Fatalf("%d segments: the failed one must be retired", n)
			}
			checkRecords(t, readN(t, c, 30, 100), 1, 30)
		})
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	openLog(t, dir, testOptions())
	if _, err := Open(dir, testOptions()); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o640)
	if _, err := Open(filepath.Join(file, "spool"), testOptions()); err == nil {
		t.Fatal("Open under a regular file succeeded")
	}
	o := testOptions()
	o.MaxBytes = o.SegmentBytes
	if _, err := Open(t.TempDir(), o); err == nil {
		t.Fatal("Open with MaxBytes < 2 segments succeeded")
	}
	l := openLog(t, t.TempDir(), testOptions())
	if _, err := l.Append([][]byte{make([]byte, MaxRecordBytes+1)}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized record: %v", err)
	}
	l.Close()
	if _, err := l.Append([][]byte{payload(1)}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
}

func TestFreeBytes(t *testing.T) {
	n, err := FreeBytes(t.TempDir())
	if err != nil || n <= 0 {
		t.Fatalf("FreeBytes: %d, %v", n, err)
	}
	if _, err := FreeBytes(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("FreeBytes of a missing directory succeeded")
	}
}

func TestInspect(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testOptions())
	c, _ := l.Cursor("sqs")
	l.Cursor("sns")
	appendRecords(t, l, 1, 100, 10)
	readN(t, c, 40, 40)
	c.Ack(1, 40)
	l.Checkpoint()
	live := l.Stat()
	st, err := Inspect(dir) // beside the running log
	if err != nil {
		t.Fatal(err)
	}
	if st.First != live.First || st.Last != 100 || st.Files != live.Files || st.Bytes != live.Bytes ||
		!st.Oldest.Equal(live.Oldest) || !st.Newest.Equal(live.Newest) || len(st.Cursors) != 2 {
		t.Fatalf("Inspect %+v\nStat %+v", st, live)
	}
	for i, cs := range st.Cursors {
		lc := live.Cursors[i]
		if cs.Name != lc.Name || cs.Acked != lc.Persisted || cs.Lag != lc.Lag {
			t.Fatalf("cursor %d: Inspect %+v, Stat %+v", i, cs, lc)
		}
	}
	if st.Cursors[1].Name != "sqs" || st.Cursors[1].Lag != 60 || st.Cursors[1].LagTime <= 0 {
		t.Fatalf("sqs cursor: %+v", st.Cursors[1])
	}
}
