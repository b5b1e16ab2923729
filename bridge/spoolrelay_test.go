package bridge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/bridge/spool"
)

// collectSink accepts every batch once open is closed (or ctx ends).
type collectSink struct {
	mu   sync.Mutex
	open chan struct{}
	got  []Record
}

func (s *collectSink) Name() string                { return "collect" }
func (s *collectSink) Limits() Limits              { return Limits{MaxEntries: 10, MaxInFlight: 2} }
func (s *collectSink) EntrySize(e *Entry) int      { return len(e.Body) }
func (s *collectSink) Check(context.Context) error { return nil }
func (s *collectSink) Close(context.Context) error { return nil }
func (s *collectSink) Publish(ctx context.Context, batch []*Entry) error {
	select {
	case <-s.open:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range batch {
		s.got = append(s.got, e.Record)
	}
	return nil
}

func (s *collectSink) records() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Record(nil), s.got...)
}

func spoolRelay(t *testing.T, l *spool.Log, sink Sink, overflow Overflow) *Relay {
	t.Helper()
	r := NewRelay(RelayConfig{BufferRecords: 10000, Overflow: overflow, RetryInitial: time.Millisecond,
		RetryMax: 5 * time.Millisecond, Source: "test:1", Spool: l},
		[]Sink{sink}, slog.New(slog.NewTextHandler(io.Discard, nil)), NewMetrics(nil))
	r.Start()
	return r
}

func emitSpoolKeys(r *Relay, prefix string, n int) {
	for i := range n {
		now := time.Now()
		r.Emit(Record{Type: TypeKeyEvent, ID: r.IDs().New(now), Time: now, Source: "test:1", Event: "set", Key: fmt.Sprintf("%s%d", prefix, i)})
	}
}

func waitSpool(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSpoolRelayLeftForNextStart: records the sink did not take by the
// shutdown deadline stay in the spool (no error, not counted as lost) and
// the next relay on the same directory delivers them with their ids.
func TestSpoolRelayLeftForNextStart(t *testing.T) {
	dir := t.TempDir()
	l, err := spool.Open(dir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	stuck := &collectSink{open: make(chan struct{})}
	r := spoolRelay(t, l, stuck, DropNewest)
	emitSpoolKeys(r, "k", 100)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := r.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	st, err := spool.Inspect(dir)
	if err != nil || len(st.Cursors) != 1 || st.Cursors[0].Lag != 100 {
		t.Fatalf("after the stop: %+v, %v; want the cursor 100 records behind", st, err)
	}

	l2, err := spool.Open(dir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	open := make(chan struct{})
	close(open)
	sink := &collectSink{open: open}
	r2 := spoolRelay(t, l2, sink, DropNewest)
	waitSpool(t, "100 records", func() bool { return len(sink.records()) >= 100 })
	if err := r2.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, rec := range sink.records() {
		if rec.Type != TypeKeyEvent || rec.ID == "" || rec.Source != "test:1" {
			t.Errorf("record %+v", rec)
		}
		seen[rec.Key] = true
	}
	if len(seen) != 100 {
		t.Errorf("%d distinct keys, want 100", len(seen))
	}
}

// TestSpoolRelayDropOldest: a stuck sink and a spool of two small
// segments: drop-oldest skips the oldest file, and the overflow gap counts
// exactly what was skipped.
func TestSpoolRelayDropOldest(t *testing.T) {
	const n = 2000
	l, err := spool.Open(t.TempDir(), spool.Options{SegmentBytes: 8192, MaxBytes: 16384})
	if err != nil {
		t.Fatal(err)
	}
	sink := &collectSink{open: make(chan struct{})}
	r := spoolRelay(t, l, sink, DropOldest)
	emitSpoolKeys(r, "k", n)
	time.Sleep(100 * time.Millisecond)
	close(sink.open)
	var keys map[string]bool
	var dropped int64
	waitSpool(t, "every record delivered or counted", func() bool {
		keys, dropped = map[string]bool{}, 0
		for _, rec := range sink.records() {
			if rec.Type == TypeGap && rec.Reason == GapOverflow {
				dropped += rec.Dropped
			} else {
				keys[rec.Key] = true
			}
		}
		return int64(len(keys))+dropped >= n
	})
	if dropped == 0 || int64(len(keys))+dropped != n {
		t.Errorf("%d delivered + %d dropped, want %d", len(keys), dropped, n)
	}
	if !keys[fmt.Sprintf("k%d", n-1)] {
		t.Errorf("the newest record was dropped (drop-oldest)")
	}
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestSpoolMarkers: a node's anchor kept in the spool is never delivered,
// and the next start on the same directory finds the newest per node.
func TestSpoolMarkers(t *testing.T) {
	dir := t.TempDir()
	l, err := spool.Open(dir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	open := make(chan struct{})
	close(open)
	sink := &collectSink{open: open}
	r := spoolRelay(t, l, sink, DropNewest)
	t0 := time.Now().Add(-time.Minute).Truncate(time.Microsecond)
	r.SpoolMarker("a:1", t0)
	emitSpoolKeys(r, "k", 10)
	r.SpoolMarker("a:1", t0.Add(time.Second))
	r.SpoolMarker("b:2", t0.Add(2*time.Second))
	emitSpoolKeys(r, "j", 10)
	waitSpool(t, "20 records", func() bool { return len(sink.records()) >= 20 })
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, rec := range sink.records() {
		if rec.Type != TypeKeyEvent {
			t.Errorf("delivered %+v", rec)
		}
	}
	if n := len(sink.records()); n != 20 {
		t.Errorf("%d records delivered, want 20", n)
	}
	l2, err := spool.Open(dir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r2 := spoolRelay(t, l2, sink, DropNewest)
	defer r2.Shutdown(context.Background())
	for src, want := range map[string]time.Time{"a:1": t0.Add(time.Second), "b:2": t0.Add(2 * time.Second)} {
		if got, ok := r2.SpoolAnchor(src); !ok || !got.Equal(want) {
			t.Errorf("anchor of %s = %s %v, want %s", src, got, ok, want)
		}
	}
	if _, ok := r2.SpoolAnchor("c:3"); ok {
		t.Errorf("an anchor for a node never seen")
	}
}
