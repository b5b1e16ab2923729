package bridgetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/bridge"
)

// NewSinkFunc makes a fresh sink on a fresh, empty target for one subtest and
// a readBack function that returns every message body the target has
// received since, in arrival order (cumulative: each call returns all of
// them, not only the new ones).
type NewSinkFunc func(t *testing.T) (sink bridge.Sink, readBack func() [][]byte)

// ContractOption adapts RunSinkContract to a kind of sink.
type ContractOption func(*contractConfig)

type contractConfig struct {
	unpack func(message []byte) [][]byte
}

// Packed declares a sink that packs several records into one message:
// unpack splits a message body, as readBack returns it, into the bodies of
// its records. The contract then checks the records as they come out of
// unpack (each exactly once, byte-identical) and also that packing happened:
// fewer messages than records.
func Packed(unpack func(message []byte) [][]byte) ContractOption {
	return func(c *contractConfig) { c.unpack = unpack }
}

// RunSinkContract runs the contract every sink passes: records are delivered
// complete and each exactly once (bodies byte-identical), including binary
// keys and keys with newlines and quotes; Limits and EntrySize are sane; an
// empty Publish is harmless; Check passes; Close after use is fine.
func RunSinkContract(t *testing.T, newSink NewSinkFunc, opts ...ContractOption) {
	t.Helper()
	var cfg contractConfig
	for _, o := range opts {
		o(&cfg)
	}
	// open makes a sink and two readers: of records and of messages (the
	// same unless the sink packs).
	open := func(t *testing.T) (bridge.Sink, func() [][]byte, func() [][]byte) {
		s, messages := newSink(t)
		if cfg.unpack == nil {
			return s, messages, messages
		}
		return s, func() [][]byte {
			var records [][]byte
			for _, m := range messages() {
				records = append(records, cfg.unpack(m)...)
			}
			return records
		}, messages
	}
	t.Run("limits are sane", func(t *testing.T) {
		s, _, _ := open(t)
		lim := s.Limits()
		if lim.MaxEntries < 1 {
			t.Errorf("MaxEntries = %d, want at least 1", lim.MaxEntries)
		}
		if lim.MaxInFlight < 0 || lim.MaxBatchBytes < 0 || lim.MaxEntryBytes < 0 {
			t.Errorf("negative limit: %+v", lim)
		}
		if lim.MaxBatchBytes > 0 && lim.MaxEntryBytes > lim.MaxBatchBytes {
			t.Errorf("MaxEntryBytes %d > MaxBatchBytes %d: a largest entry could never be sent", lim.MaxEntryBytes, lim.MaxBatchBytes)
		}
		if lim.MaxEntryBytes > 0 && lim.MaxEntryBytes < 1024 {
			t.Errorf("MaxEntryBytes = %d: too small for a record", lim.MaxEntryBytes)
		}
		for _, e := range ContractEntries() {
			if n := s.EntrySize(e); n < len(e.Body) {
				t.Errorf("EntrySize = %d < body length %d for %s", n, len(e.Body), e.Body)
			}
		}
		if s.Name() == "" {
			t.Error("Name is empty")
		}
	})

	t.Run("delivers each record once, byte-identical", func(t *testing.T) {
		s, readBack, messages := open(t)
		want := ContractEntries()
		PublishAll(t, s, want)
		got := WaitBodies(t, readBack, len(want), 15*time.Second)
		AssertSameBodies(t, got, want)
		if n := len(messages()); cfg.unpack != nil && n >= len(want) {
			t.Errorf("%d records arrived in %d messages: the sink does not pack", len(want), n)
		}
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("Close after use: %v", err)
		}
	})

	t.Run("keeps nothing of a batch past Publish", func(t *testing.T) {
		// The Relay rebuilds the next batch in the same memory: a sink
		// that kept a body would send another record's bytes.
		s, readBack, _ := open(t)
		want := ContractEntries()
		batch := make([]*bridge.Entry, len(want))
		for i, e := range want {
			c := *e
			c.Body = bytes.Clone(e.Body)
			batch[i] = &c
		}
		PublishAll(t, s, batch)
		for _, e := range batch {
			for i := range e.Body {
				e.Body[i] = 'X'
			}
			e.Record = bridge.Record{}
		}
		got := WaitBodies(t, readBack, len(want), 15*time.Second)
		AssertSameBodies(t, got, want)
	})

	t.Run("empty publish is harmless", func(t *testing.T) {
		s, readBack, _ := open(t)
		ctx := context.Background()
		if err := s.Publish(ctx, nil); err != nil {
			t.Fatalf("Publish(nil) = %v", err)
		}
		if err := s.Publish(ctx, []*bridge.Entry{}); err != nil {
			t.Fatalf("Publish(empty) = %v", err)
		}
		one := ContractEntries()[:1]
		PublishAll(t, s, one)
		AssertSameBodies(t, WaitBodies(t, readBack, 1, 15*time.Second), one)
		if err := s.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})

	t.Run("a cancelled context returns promptly", func(t *testing.T) {
		s, _, _ := open(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		done := make(chan error, 1)
		go func() { done <- s.Publish(ctx, ContractEntries()[:2]) }()
		select {
		case <-done: // delivered or not, either is allowed; returning is not optional
		case <-time.After(5 * time.Second):
			t.Fatal("Publish with a cancelled context did not return within 5 s")
		}
		_ = s.Close(context.Background())
	})

	t.Run("close twice, publish after close", func(t *testing.T) {
		s, _, _ := open(t)
		ctx := context.Background()
		if err := s.Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := s.Close(ctx); err != nil {
			t.Errorf("second Close = %v, want nil", err)
		}
		if err := s.Publish(ctx, ContractEntries()[:1]); err == nil {
			t.Error("Publish after Close succeeded, want an error")
		}
	})

	t.Run("check passes on a working target", func(t *testing.T) {
		s, _, _ := open(t)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := s.Check(ctx); err != nil {
			t.Errorf("Check = %v", err)
		}
		if err := s.Close(ctx); err != nil {
			t.Errorf("Close without use: %v", err)
		}
	})
}

// ContractEntries returns the records of the contract: ordinary keys, a
// binary (non-UTF-8) key, keys with newlines, quotes, backslashes, spaces,
// glob characters and non-ASCII text, several databases, and a gap record.
func ContractEntries() []*bridge.Entry {
	ids := bridge.NewIDGenerator()
	now := time.Date(2026, 11, 23, 18, 16, 53, 458622000, time.UTC)
	keys := []string{
		"session:42",
		"bin:\xff\xfe\x00\x01end",
		"line\nbreak\r\nand \"quotes\" and \\back\\slash",
		"spaces and * ? [glob] chars",
		"ключ:日本語:ü", // no astral-plane characters: fauxqs 1.9.2 refuses them, real SQS does not
		"tab\there\u2028sep",
		"",
	}
	var out []*bridge.Entry
	for i := range 15 {
		rec := bridge.Record{Type: bridge.TypeKeyEvent, ID: ids.New(now), Time: now.Add(time.Duration(i) * time.Microsecond),
			Source: "127.0.0.1:6379", DB: i % 3, Event: []string{"set", "expired", "del"}[i%3], Key: keys[i%len(keys)]}
		if i >= len(keys) {
			rec.Key = fmt.Sprintf("%s#%d", rec.Key, i)
		}
		out = append(out, &bridge.Entry{Record: rec, Body: rec.AppendJSON(nil)})
	}
	gap := bridge.Record{Type: bridge.TypeGap, ID: ids.New(now), Time: now, Source: "127.0.0.1:6379",
		Since: now.Add(-time.Second), Until: now, Reason: bridge.GapReconnect}
	return append(out, &bridge.Entry{Record: gap, Body: gap.AppendJSON(nil)})
}

// PublishAll publishes entries through s in batches shaped by s.Limits, as
// the Relay does, and fails the test on any error: the contract's targets
// accept every entry.
func PublishAll(t testing.TB, s bridge.Sink, entries []*bridge.Entry) {
	t.Helper()
	lim := s.Limits()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for len(entries) > 0 {
		n, size := 0, 0
		for n < len(entries) && n < max(lim.MaxEntries, 1) {
			es := s.EntrySize(entries[n])
			if n > 0 && lim.MaxBatchBytes > 0 && size+es > lim.MaxBatchBytes {
				break
			}
			size += es
			n++
		}
		if err := s.Publish(ctx, entries[:n]); err != nil {
			var pe *bridge.PartialError
			if errors.As(err, &pe) {
				t.Fatalf("Publish: %v (failed entries: %+v)", err, pe.Failed)
			}
			t.Fatalf("Publish: %v", err)
		}
		entries = entries[n:]
	}
}

// WaitBodies calls readBack until it returns at least n bodies or timeout
// passes, then once more after a short pause so that duplicates arriving late
// are seen too.
func WaitBodies(t testing.TB, readBack func() [][]byte, n int, timeout time.Duration) [][]byte {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var got [][]byte
	for {
		got = readBack()
		if len(got) >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	return readBack()
}

// AssertSameBodies fails unless got holds exactly the bodies of want, each
// once, byte for byte (in any order).
func AssertSameBodies(t testing.TB, got [][]byte, want []*bridge.Entry) {
	t.Helper()
	count := map[string]int{}
	for _, b := range got {
		count[string(b)]++
	}
	for _, e := range want {
		switch c := count[string(e.Body)]; c {
		case 1:
		case 0:
			t.Errorf("missing: %s", e.Body)
		default:
			t.Errorf("delivered %d times: %s", c, e.Body)
		}
		delete(count, string(e.Body))
	}
	for b := range count {
		if !slices.ContainsFunc(want, func(e *bridge.Entry) bool { return bytes.Equal(e.Body, []byte(b)) }) {
			t.Errorf("unexpected body: %q", b)
		}
	}
}
