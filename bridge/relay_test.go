package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// scriptedSink is a pure-logic sink for relay unit tests: each Publish call
// is answered by the next script step, and every call's ids are recorded.
type scriptedSink struct {
	mu       sync.Mutex
	calls    [][]string
	script   []func(batch []*Entry) error
	lim      Limits
	block    chan struct{} // if set, Publish waits on it (or ctx)
	accepted []string
}

func (s *scriptedSink) Name() string           { return "scripted" }
func (s *scriptedSink) Limits() Limits         { return s.lim }
func (s *scriptedSink) EntrySize(e *Entry) int { return len(e.Body) }
func (s *scriptedSink) Check(context.Context) error {
	return nil
}
func (s *scriptedSink) Close(context.Context) error { return nil }
func (s *scriptedSink) Publish(ctx context.Context, batch []*Entry) error {
	if s.block != nil {
		select {
		case <-s.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, len(batch))
	for i, e := range batch {
		ids[i] = strings.Clone(e.Record.Key) // a batch's memory is reused after Publish
	}
	s.calls = append(s.calls, ids)
	var err error
	if len(s.script) > 0 {
		err = s.script[0](batch)
		s.script = s.script[1:]
	}
	failed := map[int]bool{}
	var pe *PartialError
	if errors.As(err, &pe) {
		for _, f := range pe.Failed {
			failed[f.Index] = true
		}
	} else if err != nil {
		return err
	}
	for i, e := range batch {
		if !failed[i] {
			s.accepted = append(s.accepted, strings.Clone(e.Record.Key))
		}
	}
	return err
}

func testRelay(sink Sink, cfg RelayConfig) (*Relay, *Metrics) {
	if cfg.BufferRecords == 0 {
		cfg.BufferRecords = 1000
	}
	if cfg.Overflow == "" {
		cfg.Overflow = DropNewest
	}
	cfg.RetryInitial, cfg.RetryMax = time.Millisecond, 5*time.Millisecond
	m := NewMetrics(nil)
	r := NewRelay(cfg, []Sink{sink}, slog.New(slog.NewTextHandler(io.Discard, nil)), m)
	r.Start()
	return r, m
}

func emitKeys(r *Relay, keys ...string) {
	for _, k := range keys {
		r.Emit(Record{Type: TypeKeyEvent, ID: r.IDs().New(time.Now()), Time: time.Now(), Event: "set", Key: k})
	}
}

func TestRelayRetriesOnlyFailedEntries(t *testing.T) {
	sink := &scriptedSink{lim: Limits{MaxEntries: 4, MaxInFlight: 1}, script: []func([]*Entry) error{
		func(b []*Entry) error {
			return &PartialError{Failed: []EntryError{
				{Index: 1, Err: errors.New("InternalError")},
				{Index: 2, Err: Permanent(errors.New("InvalidMessageContents"))},
				{Index: 3, Err: errors.New("ServiceUnavailable")},
			}}
		},
		func(b []*Entry) error { return errors.New("throttled") }, // whole call fails
		func(b []*Entry) error { return nil },
	}}
	r, m := testRelay(sink, RelayConfig{Linger: 50 * time.Millisecond})
	emitKeys(r, "a", "b", "c", "d")
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"a", "b", "c", "d"}, {"b", "d"}, {"b", "d"}}
	if fmt.Sprint(sink.calls) != fmt.Sprint(want) {
		t.Fatalf("calls = %v, want %v", sink.calls, want)
	}
	if fmt.Sprint(sink.accepted) != "[a b d]" {
		t.Fatalf("accepted = %v", sink.accepted)
	}
	if v := testutil.ToFloat64(m.Rejected.WithLabelValues("scripted", "refused")); v != 1 {
		t.Fatalf("rejected = %v", v)
	}
	if v := testutil.ToFloat64(m.Delivered.WithLabelValues("scripted")); v != 3 {
		t.Fatalf("delivered = %v", v)
	}
	if v := testutil.ToFloat64(m.Retried.WithLabelValues("scripted")); v != 4 {
		t.Fatalf("retried = %v", v)
	}
}

func TestRelayResendsEntriesUnchanged(t *testing.T) {
	var first, second []*Entry
	sink := &scriptedSink{lim: Limits{MaxEntries: 2, MaxInFlight: 1}, script: []func([]*Entry) error{
		func(b []*Entry) error { first = append(first, b...); return errors.New("timeout") },
		func(b []*Entry) error { second = append(second, b...); return nil },
	}}
	r, _ := testRelay(sink, RelayConfig{Linger: 50 * time.Millisecond})
	emitKeys(r, "x", "y")
	_ = r.Shutdown(context.Background())
	if len(first) != 2 || len(second) != 2 {
		t.Fatalf("calls: %d, %d", len(first), len(second))
	}
	for i := range first {
		if first[i] != second[i] || string(first[i].Body) != string(second[i].Body) {
			t.Fatalf("entry %d changed between attempts", i)
		}
	}
}

func TestRelayRejectsOversizedEntries(t *testing.T) {
	sink := &scriptedSink{lim: Limits{MaxEntries: 10, MaxEntryBytes: 200, MaxInFlight: 1}}
	r, m := testRelay(sink, RelayConfig{})
	emitKeys(r, "small", string(make([]byte, 500)))
	_ = r.Shutdown(context.Background())
	if fmt.Sprint(sink.accepted) != "[small]" {
		t.Fatalf("accepted = %v", sink.accepted)
	}
	if v := testutil.ToFloat64(m.Rejected.WithLabelValues("scripted", "too_large")); v != 1 {
		t.Fatalf("too_large = %v", v)
	}
}

func TestRelayOverflowGap(t *testing.T) {
	sink := &scriptedSink{lim: Limits{MaxEntries: 100, MaxInFlight: 1}, block: make(chan struct{})}
	r, m := testRelay(sink, RelayConfig{BufferRecords: 5})
	emitKeys(r, "0") // taken by the worker, which blocks
	time.Sleep(20 * time.Millisecond)
	for i := 1; i <= 20; i++ {
		emitKeys(r, fmt.Sprint(i))
	}
	close(sink.block)
	_ = r.Shutdown(context.Background())
	dropped := testutil.ToFloat64(m.Dropped.WithLabelValues("scripted", GapOverflow))
	if dropped != 15 {
		t.Fatalf("dropped = %v, want 15", dropped)
	}
	if testutil.ToFloat64(m.Gaps.WithLabelValues(GapOverflow)) != 1 {
		t.Fatal("no overflow gap counted")
	}
	// received = delivered + dropped (the gap record is one extra delivery).
	if got := len(sink.accepted); got != 21-15+1 {
		t.Fatalf("delivered %d: %v", got, sink.accepted)
	}
}

func TestRelayShutdownDeadlineAccountsForEverything(t *testing.T) {
	sink := &scriptedSink{lim: Limits{MaxEntries: 2, MaxInFlight: 1}, block: make(chan struct{})}
	r, m := testRelay(sink, RelayConfig{})
	emitKeys(r, "a", "b", "c", "d", "e")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := r.Shutdown(ctx)
	if err == nil {
		t.Fatal("Shutdown with undelivered records returned nil")
	}
	if v := testutil.ToFloat64(m.Dropped.WithLabelValues("scripted", GapShutdown)); v != 5 {
		t.Fatalf("dropped at shutdown = %v, want 5 (%v)", v, err)
	}
}

func TestBackoff(t *testing.T) {
	for n := 1; n < 20; n++ {
		d := Backoff(100*time.Millisecond, 10*time.Second, n)
		hi := min(100*time.Millisecond<<(n-1), 10*time.Second)
		if d < hi/2 || d > hi {
			t.Fatalf("Backoff(%d) = %v, want in [%v, %v]", n, d, hi/2, hi)
		}
	}
}

func TestNewEntryBody(t *testing.T) {
	for _, key := range oddKeys {
		rec := Record{Type: TypeKeyEvent, ID: "01JDQ3S4X4M5Q0S8E6D2C9K1ZB", Time: time.Now(), Source: "h:1", Event: "set", Key: key}
		if got, want := string(newEntry(&rec).Body), string(rec.AppendJSON(nil)); got != want {
			t.Errorf("key %q: body %s, want %s", key, got, want)
		}
	}
}
