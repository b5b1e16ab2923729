//go:build integration

package awsbatch_test

import (
	"context"
	"strings"
	"testing"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/bridge/bridgetest"
	"github.com/keyrelay/keyrelay/sinks/awsbatch"
	"github.com/keyrelay/keyrelay/sinks/awsbatch/awsbatchtest"
	"github.com/keyrelay/keyrelay/sinks/sns"
	"github.com/keyrelay/keyrelay/sinks/sqs"
)

// TestFauxqs runs each sink against the fauxqs emulator: the contract on a
// standard and a FIFO target and, packing, on a standard one (an SNS topic
// read back through a queue subscribed with raw message delivery, packed
// messages unpacked as a consumer does); limits read from the target;
// packing refused on FIFO targets; a missing target explained.
func TestFauxqs(t *testing.T) {
	bridgetest.StartFauxqs(t)
	c := fauxqsClients(t)
	ctx := context.Background()

	forEachKind(t, func(t *testing.T, k *kind) {
		for _, tc := range []struct {
			name string
			fifo bool
			opt  awsbatch.Options
			opts []bridgetest.ContractOption
		}{
			{name: "standard"},
			{name: "fifo", fifo: true},
			{name: "packed", opt: awsbatch.Options{Pack: awsbatch.PackNDJSON}, opts: []bridgetest.ContractOption{bridgetest.Packed(awsbatch.Unpack)}},
		} {
			t.Run("contract "+tc.name, func(t *testing.T) {
				bridgetest.RunSinkContract(t, func(t *testing.T) (bridge.Sink, func() [][]byte) {
					target, queue := k.create(t, c, tc.fifo, nil)
					return k.open(t, c, target, tc.opt), awsbatchtest.NewReader(t, c.sqs, queue).Bodies
				}, tc.opts...)
			})
		}

		t.Run("packed limits fill one request", func(t *testing.T) {
			target, _ := k.create(t, c, false, nil)
			lim := k.open(t, c, target, awsbatch.Options{MaxInFlight: 2, Pack: awsbatch.PackNDJSON}).Limits()
			if d := k.defaultMessageBytes; lim.MaxBatchBytes > d || lim.MaxBatchBytes < d-1024 ||
				lim.MaxEntryBytes > lim.MaxBatchBytes || lim.MaxEntries < 1000 || lim.MaxInFlight != 2 {
				t.Errorf("Limits = %+v: want a batch just under the request's %d bytes, many entries", lim, d)
			}
		})

		t.Run("packing is refused on FIFO targets", func(t *testing.T) {
			target, _ := k.create(t, c, true, nil)
			_, err := k.newSink(c, target, awsbatch.Options{Pack: awsbatch.PackNDJSON})
			if err == nil || !strings.Contains(err.Error(), "KEYRELAY_PACK=off") {
				t.Errorf("New(FIFO, packed) = %v, want a refusal naming KEYRELAY_PACK", err)
			}
		})

		t.Run("missing target is explained", func(t *testing.T) {
			target, _ := k.create(t, c, false, nil)
			s := k.open(t, c, k.missing(target), awsbatch.Options{})
			err := s.Check(ctx)
			if err == nil || !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), k.envVar) {
				t.Errorf("Check on a missing target = %v, want an explanation naming %s", err, k.envVar)
			}
			s.Limits()
			if err := s.Healthy(); err == nil || !strings.Contains(err.Error(), k.envVar) {
				t.Errorf("Healthy on a missing target = %v, want an explanation naming %s", err, k.envVar)
			}
		})
	})

	t.Run("limits follow the target", func(t *testing.T) {
		for _, tc := range []struct {
			kind  string
			fifo  bool
			attrs map[string]string
			opt   awsbatch.Options
			want  bridge.Limits
		}{
			{sqs.Name, false, map[string]string{"MaximumMessageSize": "2048"}, awsbatch.Options{MaxInFlight: 3},
				bridge.Limits{MaxEntries: 10, MaxBatchBytes: 1 << 20, MaxEntryBytes: 2048, MaxInFlight: 3}},
			// One batch in flight keeps a FIFO target's group order.
			{sqs.Name, true, nil, awsbatch.Options{MaxInFlight: 8},
				bridge.Limits{MaxEntries: 10, MaxBatchBytes: 1 << 20, MaxEntryBytes: 1 << 20, MaxInFlight: 1}},
			// 256 KiB when the topic sets no MaximumMessageSize.
			{sns.Name, false, nil, awsbatch.Options{MaxInFlight: 2},
				bridge.Limits{MaxEntries: 10, MaxBatchBytes: 262144, MaxEntryBytes: 262144, MaxInFlight: 2}},
			{sns.Name, true, nil, awsbatch.Options{MaxInFlight: 8},
				bridge.Limits{MaxEntries: 10, MaxBatchBytes: 262144, MaxEntryBytes: 262144, MaxInFlight: 1}},
		} {
			k := kindNamed(tc.kind)
			target, _ := k.create(t, c, tc.fifo, tc.attrs)
			if got := k.open(t, c, target, tc.opt).Limits(); got != tc.want {
				t.Errorf("%s %v (FIFO %t): Limits = %+v, want %+v", tc.kind, tc.attrs, tc.fifo, got, tc.want)
			}
		}
	})
}

// fauxqsClients returns clients that reach the fauxqs bridgetest.StartFauxqs
// started.
func fauxqsClients(t *testing.T) clients {
	sqsc, snsc := awsbatchtest.Clients(t)
	return clients{sqsc, snsc}
}

func kindNamed(name string) *kind {
	for i := range kinds {
		if kinds[i].name == name {
			return &kinds[i]
		}
	}
	panic("no kind " + name)
}
