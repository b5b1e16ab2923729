package awsbatch_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/bridge/bridgetest"
	"github.com/keyrelay/keyrelay/sinks/awsbatch"
	"github.com/keyrelay/keyrelay/sinks/awsbatch/awsbatchtest"
)

// fastRead retries attribute reads within milliseconds.
var fastRead = awsbatch.Options{MaxInFlight: 1, ReadRetryInitial: 5 * time.Millisecond, ReadRetryMax: 20 * time.Millisecond}

// envelope is the Limits of a sink whose target could not be read at
// start: those of the largest target AWS allows.
var envelope = bridge.Limits{MaxEntries: 10, MaxBatchBytes: 1 << 20, MaxEntryBytes: 1 << 20, MaxInFlight: 1}

// size is a message's size as the target counts it.
func size(m sentMessage) int {
	n := len(m.Body)
	for name, a := range m.Attrs {
		n += len(name) + len(a[0]) + len(a[1])
	}
	return n
}

// TestLazyLimits: New does no I/O that can fail; a target whose attributes
// cannot be read yet gets messages of at most 1 KiB (the smallest limit AWS
// allows), larger records wait and Healthy names the target; once read,
// the target's own limits hold, enforced by the sink itself.
func TestLazyLimits(t *testing.T) {
	forEachKind(t, func(t *testing.T, k *kind) {
		internal, denied := k.errs["internal"], k.errs["denied"]

		t.Run("a blip at start-up holds back only records over 1 KiB", func(t *testing.T) {
			var f *fakeServer
			f = &fakeServer{attrs: func(int) (map[string]string, *apiError) {
				if len(f.batches()) == 0 { // unreadable until records were sent
					return nil, &internal
				}
				return f.defaultAttrs, nil
			}}
			c, target := k.startFake(t, f)
			s := k.open(t, c, target, fastRead)
			if lim := s.Limits(); lim != envelope {
				t.Errorf("Limits = %+v after a failed read, want %+v", lim, envelope)
			}
			if err := s.Healthy(); err == nil || !strings.Contains(err.Error(), target) || !strings.Contains(err.Error(), "InternalError") {
				t.Errorf("Healthy = %v, want an error naming %s and the cause", err, target)
			}

			recs := awsbatchtest.Records(10)
			recs[0].Key = strings.Repeat("k", 2000)
			m := awsbatchtest.Deliver(t, s, recs)
			big := awsbatchtest.Body(recs[0]) // as sent: Deliver stamps the time
			if got := testutil.ToFloat64(m.Retried.WithLabelValues(k.name)); got < 1 {
				t.Errorf("retried = %v: the large record was not held back", got)
			}
			if got := testutil.ToFloat64(m.Delivered.WithLabelValues(k.name)); got != 10 {
				t.Errorf("delivered = %v, want 10", got)
			}

			f.mu.Lock()
			defer f.mu.Unlock()
			for i, req := range f.requests {
				total := 0
				for _, msg := range req {
					total += size(msg)
					if msg.Body == big && !f.attrsRead[i] {
						t.Errorf("request %d: the %d-byte record was sent before the attributes were read", i, size(msg))
					}
					if !f.attrsRead[i] && size(msg) > awsbatch.MinMessageSize {
						t.Errorf("request %d: a %d-byte message before the attributes were read", i, size(msg))
					}
				}
				if k.name == "sns" && !f.attrsRead[i] && total > awsbatch.MinMessageSize {
					t.Errorf("request %d: %d bytes in one PublishBatch before the topic's limit was read", i, total)
				}
			}
			if err := s.Healthy(); err != nil {
				t.Errorf("Healthy = %v once the attributes were read", err)
			}
		})

		t.Run("a target smaller than the relay's limits: the sink refuses what it cannot take", func(t *testing.T) {
			f := &fakeServer{attrs: func(n int) (map[string]string, *apiError) {
				if n == 0 { // not retried by the SDK
					return nil, &denied
				}
				return map[string]string{"MaximumMessageSize": "2048"}, nil
			}}
			c, target := k.startFake(t, f)
			s := k.open(t, c, target, fastRead)
			if lim := s.Limits(); lim != envelope {
				t.Errorf("Limits = %+v after a failed read, want %+v", lim, envelope)
			}
			waitHealthy(t, s)
			entries := bridgetest.ContractEntries()[:2]
			large := *entries[1]
			large.Record.Key = strings.Repeat("k", 3000)
			large.Body = large.Record.AppendJSON(nil)
			err := s.Publish(context.Background(), []*bridge.Entry{entries[0], &large})
			var pe *bridge.PartialError
			var tl *awsbatch.TooLargeError
			if !errors.As(err, &pe) || len(pe.Failed) != 1 || pe.Failed[0].Index != 1 || !bridge.IsPermanent(pe.Failed[0].Err) ||
				!errors.As(pe.Failed[0].Err, &tl) || tl.Max != 2048 {
				t.Fatalf("Publish = %v, want entry 1 refused for good, over 2048 bytes", err)
			}
			if got := f.bodies(); len(got) != 1 || len(got[0]) != 1 || got[0][0] != string(entries[0].Body) {
				t.Errorf("sent %q, want the small entry alone", got)
			}
		})

		t.Run("an unreadable target: New and Publish work, Close stops reading", func(t *testing.T) {
			f := &fakeServer{attrs: attrsError(internal)}
			c, target := k.startFake(t, f)
			s := k.open(t, c, target, fastRead)
			s.Limits()
			if err := s.Healthy(); err == nil {
				t.Error("Healthy = nil while the attributes cannot be read")
			}
			entries := bridgetest.ContractEntries()
			bridgetest.PublishAll(t, s, entries)
			n := 0
			for _, req := range f.batches() {
				n += len(req)
			}
			if n != len(entries) {
				t.Errorf("%d messages sent for %d records", n, len(entries))
			}
			time.Sleep(50 * time.Millisecond) // a few more reads
			if err := s.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			// A read the client gave up on at Close may still reach the
			// server's handler just after: count from a moment later.
			time.Sleep(30 * time.Millisecond)
			reads := f.attributeReads()
			time.Sleep(100 * time.Millisecond)
			if got := f.attributeReads(); got != reads || reads < 2 {
				t.Errorf("%d attribute reads at Close, %d later: want retries until Close, none after", reads, got)
			}
			if err := s.Publish(context.Background(), entries[:1]); err == nil {
				t.Error("Publish after Close succeeded")
			}
		})
	})
}

// waitHealthy waits until s has read its target's attributes.
func waitHealthy(t *testing.T, s awsSink) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.Healthy() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("attributes still not read: %v", s.Healthy())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
