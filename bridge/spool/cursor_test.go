package spool

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestOutOfOrderAcks(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testOptions())
	c, _ := l.Cursor("sqs")
	appendRecords(t, l, 1, 40, 40)
	b1 := readN(t, c, 10, 10)
	b2 := readN(t, c, 10, 10)
	b3 := readN(t, c, 10, 10)
	acked := func() uint64 { return l.Stat().Cursors[0].Acked }

	if err := c.Ack(b3[0].Seq, b3[9].Seq); err != nil {
		t.Fatal(err)
	}
	if acked() != 0 {
		t.Fatalf("acked %d after the third batch alone, want 0", acked())
	}
	if err := c.Ack(b1[0].Seq, b1[9].Seq); err != nil {
		t.Fatal(err)
	}
	if acked() != 10 {
		t.Fatalf("acked %d after batches 3 and 1, want 10", acked())
	}
	// Partial acks of batch 2, out of order and overlapping.
	c.Ack(15, 20)
	c.Ack(13, 16)
	if acked() != 10 {
		t.Fatalf("acked %d with 11..12 missing, want 10", acked())
	}
	if err := c.Ack(11, 12); err != nil {
		t.Fatal(err)
	}
	if acked() != 30 {
		t.Fatalf("acked %d after the gap filled, want 30", acked())
	}
	if got := l.Stat().Cursors[0]; got.InFlight != 0 || got.Lag != 10 || got.AckedTime != b3[9].Time {
		t.Fatalf("cursor stat %+v; acked time want %v", got, b3[9].Time)
	}
	if err := c.Ack(31, 31); err == nil {
		t.Fatal("ack of a record not handed out succeeded")
	}
	if err := c.Ack(5, 3); err == nil {
		t.Fatal("ack of an inverted range succeeded")
	}
	if err := c.Ack(1, 30); err != nil { // again: a no-op
		t.Fatal(err)
	}
	_ = b2
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Ack(1, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ack after Close: %v", err)
	}
	c, err := l.Cursor("sqs")
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, readN(t, c, 10, 100), 31, 40)
}

func TestBackgroundCheckpoint(t *testing.T) {
	dir := t.TempDir()
	o := testOptions()
	o.CheckpointPeriod = 5 * time.Millisecond
	l := openLog(t, dir, o)
	c, _ := l.Cursor("sqs")
	appendRecords(t, l, 1, 100, 10)
	readN(t, c, 100, 100)
	c.Ack(1, 100)
	deadline := time.Now().Add(5 * time.Second)
	for l.Stat().Cursors[0].Persisted != 100 || len(segFiles(t, dir)) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("not persisted in the background: %+v", l.Stat().Cursors[0])
		}
		time.Sleep(2 * time.Millisecond)
	}
	if st, _ := Inspect(dir); st.Cursors[0].Acked != 100 {
		t.Fatalf("cursor file: %+v", st.Cursors[0])
	}
}

func TestTwoCursorsReclaim(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testOptions())
	fast, _ := l.Cursor("fast")
	slow, _ := l.Cursor("slow")
	appendRecords(t, l, 1, 200, 10) // 10 records per 4 KiB segment
	files := len(segFiles(t, dir))

	recs := readN(t, fast, 200, 64)
	fast.Ack(1, 200)
	l.Checkpoint()
	if n := len(segFiles(t, dir)); n != files {
		t.Fatalf("%d files after the fast cursor passed them all, want %d: the slow one needs them", n, files)
	}
	readN(t, slow, 100, 7)
	slow.Ack(1, 100)
	l.Checkpoint()
	segs := segFiles(t, dir)
	if len(segs) >= files || len(segs) == 1 {
		t.Fatalf("%d of %d files left after the slow cursor passed half", len(segs), files)
	}
	if base, _ := parseSegName(segs[0]); base > 101 {
		t.Fatalf("oldest file %s starts after the slow cursor's next record 101", segs[0])
	}
	if base, _ := parseSegName(segs[1]); base <= 101 {
		t.Fatalf("file %s kept though the slow cursor passed it", segs[0])
	}
	checkRecords(t, readN(t, slow, 100, 33), 101, 200)
	slow.Ack(101, 200)
	l.Checkpoint()
	if n := len(segFiles(t, dir)); n != 1 {
		t.Fatalf("%d files after both passed everything", n)
	}
	_ = recs

	// A cursor nobody reads any more holds the log back until removed.
	appendRecords(t, l, 201, 300, 10)
	fast.Ack(1, 1)
	readN(t, fast, 100, 100)
	fast.Ack(201, 300)
	l.Checkpoint()
	if n := len(segFiles(t, dir)); n == 1 {
		t.Fatal("reclaimed past the slow cursor")
	}
	if err := l.RemoveCursor("slow"); !errors.Is(err, ErrCursorBusy) {
		t.Fatalf("RemoveCursor of an open cursor: %v", err)
	}
	slow.Close()
	if err := l.RemoveCursor("slow"); err != nil {
		t.Fatal(err)
	}
	l.Checkpoint()
	if n := len(segFiles(t, dir)); n != 1 {
		t.Fatalf("%d files after removing the slow cursor", n)
	}
}

func TestNewCursorStartsAtOldest(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testOptions())
	a, _ := l.Cursor("a")
	appendRecords(t, l, 1, 100, 10)
	readN(t, a, 50, 50)
	a.Ack(1, 50)
	l.Checkpoint()
	first := l.Stat().First
	if first == 1 {
		t.Fatal("nothing reclaimed")
	}
	b, err := l.Cursor("b")
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, readN(t, b, int(101-first), 100), first, 100)
	if _, err := l.Cursor("b"); !errors.Is(err, ErrCursorBusy) {
		t.Fatalf("second Cursor(b): %v", err)
	}
	for _, bad := range []string{"", ".hidden", "a.tmp", "a/b", "x y", string(make([]byte, 65))} {
		if _, err := l.Cursor(bad); err == nil {
			t.Fatalf("Cursor(%q) succeeded", bad)
		}
	}
}

func TestNextBlocks(t *testing.T) {
	l := openLog(t, t.TempDir(), testOptions())
	c, _ := l.Cursor("sqs")

	got := make(chan []Record)
	go func() {
		recs, _ := c.Next(context.Background(), 10, 0)
		got <- recs
	}()
	time.Sleep(20 * time.Millisecond)
	appendRecords(t, l, 1, 3, 3)
	select {
	case recs := <-got:
		checkRecords(t, recs, 1, 3)
	case <-time.After(5 * time.Second):
		t.Fatal("Next did not wake on Append")
	}

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() {
		_, err := c.Next(ctx, 10, 0)
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Next after cancel: %v", err)
	}

	go func() {
		_, err := c.Next(context.Background(), 10, 0)
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	c.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Cursor.Close: %v", err)
	}

	c, _ = l.Cursor("sns")
	readN(t, c, 3, 10)
	go func() {
		_, err := c.Next(context.Background(), 10, 0)
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	l.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Log.Close: %v", err)
	}
}

// TestConcurrent runs an appender, several readers on one cursor acking out
// of order, a second cursor and background checkpoints together (go test
// -race).
func TestConcurrent(t *testing.T) {
	dir := t.TempDir()
	o := testOptions()
	o.CheckpointPeriod, o.SyncPeriod = 2*time.Millisecond, 3*time.Millisecond
	o.MaxBytes = 64 << 20
	l := openLog(t, dir, o)
	const total = 3000
	cursors := []*Cursor{}
	for _, name := range []string{"a", "b"} {
		c, _ := l.Cursor(name)
		cursors = append(cursors, c)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := uint64(1); i <= total; i += 10 {
			ps := make([][]byte, 0, 10)
			for j := i; j < i+10; j++ {
				ps = append(ps, payload(j))
			}
			if _, err := l.Append(ps); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for _, c := range cursors {
		seen := make([]bool, total+1)
		var mu sync.Mutex
		for w := 0; w < 4; w++ { // four workers, batches in flight
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				for {
					mu.Lock()
					done := true
					for _, s := range seen[1:] {
						done = done && s
					}
					mu.Unlock()
					if done {
						return
					}
					short, cancelShort := context.WithTimeout(ctx, 20*time.Millisecond)
					recs, err := c.Next(short, 17, 0)
					cancelShort()
					if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					for _, r := range recs {
						if seen[r.Seq] || string(r.Data) != string(payload(r.Seq)) {
							t.Errorf("cursor %s: record %d twice or wrong", c.Name(), r.Seq)
						}
						seen[r.Seq] = true
					}
					mu.Unlock()
					if err := c.Ack(recs[0].Seq, recs[len(recs)-1].Seq); err != nil {
						t.Error(err)
					}
					l.Stat()
				}
			}()
		}
	}
	wg.Wait()
	if err := l.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	st := l.Stat()
	for _, cs := range st.Cursors {
		if cs.Acked != total || cs.Persisted != total {
			t.Fatalf("cursor %+v, want acked %d", cs, total)
		}
	}
	if st.Files != 1 {
		t.Fatalf("%d files left", st.Files)
	}
}
