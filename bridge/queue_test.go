package bridge

import (
	"context"
	"testing"
	"time"
)

func entryAt(i int) *Entry {
	return &Entry{Record: Record{ID: string(rune('a' + i%26)), Time: time.Unix(int64(i), 0)}, Body: make([]byte, 10)}
}

func bodySize(e *Entry) int { return len(e.Body) }

func TestQueueDropNewest(t *testing.T) {
	q := NewQueue(3, 0, DropNewest)
	for i := 0; i < 3; i++ {
		if r := q.Push(entryAt(i)); r.Dropped != 0 {
			t.Fatalf("push %d dropped", i)
		}
	}
	for i := 3; i < 6; i++ {
		if r := q.Push(entryAt(i)); r.Dropped != 1 || r.Ended != nil {
			t.Fatalf("push %d into full queue: %+v", i, r)
		}
	}
	batch := q.Take(context.Background(), Limits{MaxEntries: 2}, bodySize, 0)
	if len(batch) != 2 || batch[0].Record.Time.Unix() != 0 {
		t.Fatalf("take: %d entries", len(batch))
	}
	r := q.Push(entryAt(6))
	if r.Dropped != 0 || r.Ended == nil {
		t.Fatalf("push after room: %+v", r)
	}
	if ep := r.Ended; ep.Dropped != 3 || ep.Since.Unix() != 3 || ep.Until.Unix() != 5 {
		t.Fatalf("episode = %+v", ep)
	}
	if q.EndOverflow() != nil {
		t.Fatal("episode reported twice")
	}
}

func TestQueueDropOldest(t *testing.T) {
	q := NewQueue(3, 0, DropOldest)
	for i := 0; i < 5; i++ {
		q.Push(entryAt(i))
	}
	ep := q.EndOverflow()
	if ep == nil || ep.Dropped != 2 || ep.Since.Unix() != 0 || ep.Until.Unix() != 1 {
		t.Fatalf("episode = %+v", ep)
	}
	batch := q.Take(context.Background(), Limits{MaxEntries: 10}, bodySize, 0)
	if len(batch) != 3 || batch[0].Record.Time.Unix() != 2 || batch[2].Record.Time.Unix() != 4 {
		t.Fatalf("kept the wrong entries: %d", len(batch))
	}
}

func TestQueueBytesBound(t *testing.T) {
	q := NewQueue(1000, 25, DropNewest) // room for two 10-byte bodies
	q.Push(entryAt(0))
	q.Push(entryAt(1))
	if r := q.Push(entryAt(2)); r.Dropped != 1 {
		t.Fatalf("bytes bound not enforced: %+v", r)
	}
	if n, b := q.Len(); n != 2 || b != 20 {
		t.Fatalf("len = %d, %d", n, b)
	}
	// Gap records go in regardless of bounds.
	if !q.PushForce(entryAt(3)) {
		t.Fatal("PushForce refused")
	}
	if n, _ := q.Len(); n != 3 {
		t.Fatalf("len after force = %d", n)
	}
}

func TestQueueTakeBatchLimits(t *testing.T) {
	q := NewQueue(100, 0, DropNewest)
	for i := 0; i < 25; i++ {
		q.Push(entryAt(i))
	}
	ctx := context.Background()
	if b := q.Take(ctx, Limits{MaxEntries: 10}, bodySize, time.Hour); len(b) != 10 {
		t.Fatalf("full batch: %d", len(b))
	}
	if b := q.Take(ctx, Limits{MaxEntries: 10, MaxBatchBytes: 35}, bodySize, time.Hour); len(b) != 3 {
		t.Fatalf("byte-limited batch: %d", len(b))
	}
	// An entry larger than the batch limit still comes out, alone.
	if b := q.Take(ctx, Limits{MaxEntries: 10, MaxBatchBytes: 5}, bodySize, time.Hour); len(b) != 1 {
		t.Fatalf("oversized entry: %d", len(b))
	}
	// Fewer than MaxEntries, received more than the linger ago (these
	// entries are dated 1970): no wait.
	if b := q.Take(ctx, Limits{MaxEntries: 100}, bodySize, time.Hour); len(b) != 11 {
		t.Fatalf("batch of old entries: %d", len(b))
	}
	// Fewer than MaxEntries, just received: waits for the linger, counted
	// from the first entry's arrival, then returns what it has.
	start := time.Now()
	for i := range 11 {
		e := entryAt(i)
		e.Record.Time = time.Now()
		q.Push(e)
	}
	if b := q.Take(ctx, Limits{MaxEntries: 100}, bodySize, 30*time.Millisecond); len(b) != 11 {
		t.Fatalf("lingered batch: %d", len(b))
	}
	if time.Since(start) < 30*time.Millisecond-timerSlack {
		t.Fatal("did not linger")
	}
}

func TestQueueCloseDrains(t *testing.T) {
	q := NewQueue(10, 0, DropNewest)
	q.Push(entryAt(0))
	q.Close()
	if r := q.Push(entryAt(1)); r.Dropped != 1 {
		t.Fatal("push after close accepted")
	}
	if b := q.Take(context.Background(), Limits{MaxEntries: 10}, bodySize, time.Hour); len(b) != 1 {
		t.Fatalf("drain after close: %d (must not linger)", len(b))
	}
	if b := q.Take(context.Background(), Limits{MaxEntries: 10}, bodySize, time.Hour); b != nil {
		t.Fatal("closed empty queue returned a batch")
	}
}

func TestQueueTakeWakes(t *testing.T) {
	q := NewQueue(10, 0, DropNewest)
	got := make(chan int)
	go func() { got <- len(q.Take(context.Background(), Limits{MaxEntries: 1}, bodySize, 0)) }()
	time.Sleep(10 * time.Millisecond)
	q.Push(entryAt(0))
	select {
	case n := <-got:
		if n != 1 {
			t.Fatalf("took %d", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Take did not wake on Push")
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { got <- len(q.Take(ctx, Limits{MaxEntries: 1}, bodySize, 0)) }()
	cancel()
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("Take did not return on cancel")
	}
}

// A sink that drains slower than records arrive keeps one overflow episode
// (one gap record) until its queue is down to half, not one per free slot.
func TestQueueOverflowEpisodeEndsAtHalf(t *testing.T) {
	q := NewQueue(10, 0, DropNewest)
	ctx := context.Background()
	for i := 0; i < 15; i++ {
		q.Push(entryAt(i)) // 5 dropped
	}
	q.Take(ctx, Limits{MaxEntries: 2}, bodySize, 0)
	for i := 15; i < 18; i++ {
		if r := q.Push(entryAt(i)); r.Ended != nil {
			t.Fatalf("push %d ended the episode above half: %+v", i, r)
		}
	}
	if q.EndOverflowIfDrained() != nil {
		t.Fatal("episode ended above half")
	}
	q.Take(ctx, Limits{MaxEntries: 5}, bodySize, 0) // 10 -> 5
	ep := q.EndOverflowIfDrained()
	if ep == nil || ep.Dropped != 6 || ep.Since.Unix() != 10 || ep.Until.Unix() != 17 {
		t.Fatalf("episode = %+v, want 6 dropped from 10 to 17", ep)
	}
}

// A batch limited by bytes does not wait for the linger once the buffered
// bytes fill it.
func TestQueueTakeStopsAtBatchBytes(t *testing.T) {
	q := NewQueue(1000, 0, DropNewest)
	for i := 0; i < 10; i++ {
		q.Push(entryAt(i)) // 10 bytes each
	}
	start := time.Now()
	b := q.Take(context.Background(), Limits{MaxEntries: 1000, MaxBatchBytes: 50}, bodySize, time.Minute)
	if len(b) != 5 {
		t.Fatalf("took %d entries, want 5", len(b))
	}
	if time.Since(start) > 30*time.Second {
		t.Fatal("waited for the linger although the bytes filled the batch")
	}
}

// TestQueueDropOldestKeepsGapRecords: drop-oldest makes room by dropping key
// events only. A buffered gap record survives however many records push
// past it, and the overflow counts exactly the key events dropped.
func TestQueueDropOldestKeepsGapRecords(t *testing.T) {
	q := NewQueue(3, 0, DropOldest)
	gap := entryAt(100)
	gap.Record.Type = TypeGap
	q.Push(entryAt(0))
	q.PushForce(gap)
	for i := 1; i <= 10; i++ {
		q.Push(entryAt(i))
	}
	ep := q.EndOverflow()
	batch := q.Take(context.Background(), Limits{MaxEntries: 100}, bodySize, 0)
	var kept []int64
	gaps := 0
	for _, e := range batch {
		if e.Record.Type == TypeGap {
			gaps++
			continue
		}
		kept = append(kept, e.Record.Time.Unix())
	}
	if gaps != 1 {
		t.Fatalf("gap record lost: batch of %d holds %d gap records", len(batch), gaps)
	}
	if ep == nil || ep.Dropped != int64(11-len(kept)) {
		t.Fatalf("episode %+v, kept %v: the overflow must count the dropped key events only", ep, kept)
	}
	if len(kept) == 0 || kept[len(kept)-1] != 10 {
		t.Fatalf("kept %v, want the newest key events", kept)
	}
}
