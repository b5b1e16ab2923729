package awsbatchtest

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/bridge"
)

// Records returns n key-event records with keys key-0 … key-(n-1), so that
// a body names its record.
func Records(n int) []bridge.Record {
	ids := bridge.NewIDGenerator()
	now := time.Now()
	out := make([]bridge.Record, n)
	for i := range out {
		out[i] = bridge.Record{Type: bridge.TypeKeyEvent, ID: ids.New(now), Time: now, Source: "127.0.0.1:6379",
			DB: i % 2, Event: "expired", Key: fmt.Sprintf("key-%d", i)}
	}
	return out
}

// Body returns the encoding the Relay gives rec.
func Body(rec bridge.Record) string { return string(rec.AppendJSON(nil)) }

// Deliver runs recs through a bridge.Relay around s, as the daemon does but
// with millisecond back-off and a long linger (so that the records form
// full batches), shuts it down once everything is delivered or rejected, and
// returns the relay's metrics. Each record's Time is set to the moment it is
// emitted, in recs.
func Deliver(t testing.TB, s bridge.Sink, recs []bridge.Record) *bridge.Metrics {
	t.Helper()
	return DeliverWith(t, s, recs, bridge.RelayConfig{
		BufferRecords: 1000, BufferBytes: 1 << 20, Overflow: bridge.DropNewest,
		Linger: time.Second, RetryInitial: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond,
		Source: "127.0.0.1:6379",
	}, 20*time.Second)
}

// DeliverWith is Deliver with the relay's configuration and the shutdown
// deadline chosen by the caller.
func DeliverWith(t testing.TB, s bridge.Sink, recs []bridge.Record, cfg bridge.RelayConfig, deadline time.Duration) *bridge.Metrics {
	t.Helper()
	m := bridge.NewMetrics(nil)
	r := bridge.NewRelay(cfg, []bridge.Sink{s},
		slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})), m)
	r.Start()
	for i := range recs {
		// Received now, as the reader stamps a record (the batch linger
		// counts from it), in recs itself: Body(recs[i]) afterwards is
		// what was sent.
		recs[i].Time = time.Now()
		r.Emit(recs[i])
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := r.Shutdown(ctx); err != nil {
		t.Errorf("relay shutdown: %v", err)
	}
	return m
}

// testWriter sends the relay's log lines to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}

// TypicalEntries returns n entries of typical records, as the benchmarks
// send them: a set event from an ElastiCache source, keys keyPrefix and a
// 12-digit number.
func TypicalEntries(n int, keyPrefix string) []*bridge.Entry {
	ids, now := bridge.NewIDGenerator(), time.Now()
	out := make([]*bridge.Entry, n)
	for i := range out {
		rec := bridge.Record{Type: bridge.TypeKeyEvent, ID: ids.New(now), Time: now,
			Source: "my-cache.abc123.ng.0001.use1.cache.amazonaws.com:6379", Event: "set",
			Key: keyPrefix + strconv.Itoa(100000000000+i)}
		out[i] = &bridge.Entry{Record: rec, Body: rec.AppendJSON(nil)}
	}
	return out
}
