package bridge

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
)

// Micro-benchmarks of the reader's hot path; `make bench` runs them with
// -benchmem. The figures are in docs/performance.md.

// discardSink accepts every batch without looking at it.
type discardSink struct{ lim Limits }

func (s discardSink) Name() string                            { return "discard" }
func (s discardSink) Limits() Limits                          { return s.lim }
func (s discardSink) EntrySize(e *Entry) int                  { return len(e.Body) }
func (s discardSink) Check(context.Context) error             { return nil }
func (s discardSink) Close(context.Context) error             { return nil }
func (s discardSink) Publish(context.Context, []*Entry) error { return nil }

// benchRelay returns a started relay with n discarding sinks, stopped when
// the benchmark ends.
func benchRelay(b *testing.B, n int) *Relay {
	sinks := make([]Sink, n)
	for i := range sinks {
		sinks[i] = discardSink{lim: Limits{MaxEntries: 1024, MaxInFlight: 1}}
	}
	r := NewRelay(RelayConfig{BufferRecords: 100000, BufferBytes: 64 << 20, Overflow: DropNewest,
		Linger: 20 * time.Millisecond, RetryInitial: time.Millisecond, RetryMax: time.Millisecond, Source: "h:1"},
		sinks, slog.New(slog.NewTextHandler(io.Discard, nil)), NewMetrics(nil))
	r.Start()
	b.Cleanup(func() { _ = r.Shutdown(context.Background()) })
	return r
}

func BenchmarkEmit(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(strconv.Itoa(n)+"sinks", func(b *testing.B) {
			r := benchRelay(b, n)
			rec := Record{Type: TypeKeyEvent, ID: "01JDQ3S4X4M5Q0S8E6D2C9K1ZB", Time: time.Now(),
				Source: "127.0.0.1:6379", Event: "set", Key: "key:000000123456"}
			b.ReportAllocs()
			for b.Loop() {
				r.Emit(rec)
			}
			b.StopTimer()
			b.ReportMetric(testutil.ToFloat64(r.metrics.Dropped.WithLabelValues("discard", GapOverflow))/float64(b.N)/float64(n), "dropped/op")
		})
	}
}

// BenchmarkQueueTakePush is the queue's cost per record: a push by the
// reader and its share of a worker's Take of a batch of 1024 (taken every
// 1024 pushes, on the same goroutine, so the figure does not depend on
// scheduling).
func BenchmarkQueueTakePush(b *testing.B) {
	q := NewQueue(100000, 64<<20, DropNewest)
	e := &Entry{Body: make([]byte, 160)}
	lim := Limits{MaxEntries: 1024}
	var batch Batch // a worker's, reused
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		q.Push(e)
		if i++; i%1024 == 0 {
			q.TakeInto(context.Background(), lim, bodySize, 0, &batch)
		}
	}
}

// BenchmarkSubscriberHandle is the reader's work per message after the
// network read: decode, filter, count, id, encode, push to the sink's queue.
func BenchmarkSubscriberHandle(b *testing.B) {
	r := benchRelay(b, 1)
	s := NewSubscriber(SubscriberConfig{Options: &redis.Options{}, Source: "127.0.0.1:6379"},
		r, slog.New(slog.NewTextHandler(io.Discard, nil)), r.metrics)
	msgs := make([]*redis.Message, 1024)
	for i := range msgs {
		msgs[i] = &redis.Message{Channel: "__keyevent@0__:set", Pattern: "__keyevent@*__:*",
			Payload: "key:" + strconv.Itoa(100000000+i)}
	}
	st := s.newReadState()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s.handle(msgs[i&1023], time.Now(), st)
		i++
	}
}
