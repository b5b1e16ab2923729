package sqs_test

import (
	"context"
	"strings"
	"testing"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/bridge/bridgetest"
	"github.com/keyrelay/keyrelay/sinks/awsbatch"
	"github.com/keyrelay/keyrelay/sinks/awsbatch/awsbatchtest"
	"github.com/keyrelay/keyrelay/sinks/sqs"
)

// TestFauxqs runs the sink against the fauxqs emulator: the contract on a
// standard and a FIFO queue, limits read from the queue, and the errors New
// and Check give for a missing queue.
func TestFauxqs(t *testing.T) {
	bridgetest.StartFauxqs(t)
	client, _ := awsbatchtest.Clients(t)
	ctx := context.Background()

	for _, fifo := range []bool{false, true} {
		name := "standard"
		if fifo {
			name = "fifo"
		}
		t.Run("contract "+name, func(t *testing.T) {
			bridgetest.RunSinkContract(t, func(t *testing.T) (bridge.Sink, func() [][]byte) {
				url, _ := awsbatchtest.CreateQueue(t, client, awsbatchtest.UniqueName("contract", fifo), nil)
				s, err := sqs.New(ctx, sqs.Options{Client: client, QueueURL: url})
				if err != nil {
					t.Fatal(err)
				}
				return s, awsbatchtest.NewReader(t, client, url).Bodies
			})
		})
	}

	t.Run("limits follow the queue", func(t *testing.T) {
		url, _ := awsbatchtest.CreateQueue(t, client, awsbatchtest.UniqueName("small", false),
			map[string]string{"MaximumMessageSize": "2048"})
		s, err := sqs.New(ctx, sqs.Options{Client: client, QueueURL: url, MaxInFlight: 3})
		if err != nil {
			t.Fatal(err)
		}
		want := bridge.Limits{MaxEntries: 10, MaxBatchBytes: 1 << 20, MaxEntryBytes: 2048, MaxInFlight: 3}
		if got := s.Limits(); got != want {
			t.Errorf("Limits = %+v, want %+v", got, want)
		}

		furl, _ := awsbatchtest.CreateQueue(t, client, awsbatchtest.UniqueName("big", true), nil)
		f, err := sqs.New(ctx, sqs.Options{Client: client, QueueURL: furl, MaxInFlight: 8})
		if err != nil {
			t.Fatal(err)
		}
		want = bridge.Limits{MaxEntries: 10, MaxBatchBytes: 1 << 20, MaxEntryBytes: 1 << 20, MaxInFlight: 1}
		if got := f.Limits(); got != want {
			t.Errorf("FIFO Limits = %+v, want %+v (one batch in flight keeps group order)", got, want)
		}
	})

	t.Run("oversize entry is refused by the queue as the sender's fault", func(t *testing.T) {
		// The relay never sends an entry above MaxEntryBytes; this shows that
		// if one reaches the queue anyway, it comes back permanent, not
		// retried for ever.
		url, _ := awsbatchtest.CreateQueue(t, client, awsbatchtest.UniqueName("tiny", false),
			map[string]string{"MaximumMessageSize": "1024"})
		s, err := sqs.New(ctx, sqs.Options{Client: client, QueueURL: url})
		if err != nil {
			t.Fatal(err)
		}
		entries := bridgetest.ContractEntries()[:2]
		big := *entries[1]
		big.Record.Key = strings.Repeat("k", 2000)
		big.Body = big.Record.AppendJSON(nil)
		err = s.Publish(ctx, []*bridge.Entry{entries[0], &big})
		var pe *bridge.PartialError
		if !errorsAs(err, &pe) || len(pe.Failed) != 1 || pe.Failed[0].Index != 1 || !bridge.IsPermanent(pe.Failed[0].Err) {
			t.Fatalf("Publish = %v, want a partial error with entry 1 permanent", err)
		}
	})

	t.Run("missing queue is explained", func(t *testing.T) {
		url, _ := awsbatchtest.CreateQueue(t, client, awsbatchtest.UniqueName("exists", false), nil)
		missing := url[:strings.LastIndex(url, "/")+1] + "no-such-queue"
		_, err := sqs.New(ctx, sqs.Options{Client: client, QueueURL: missing})
		if err == nil || !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), "KEYRELAY_SQS_QUEUE_URL") {
			t.Errorf("New on a missing queue = %v, want an explanation naming KEYRELAY_SQS_QUEUE_URL", err)
		}
	})

	t.Run("required IAM actions", func(t *testing.T) {
		want := []string{"sqs:SendMessage", "sqs:GetQueueAttributes"}
		if strings.Join(sqs.RequiredIAMActions, ",") != strings.Join(want, ",") {
			t.Errorf("RequiredIAMActions = %v, want %v", sqs.RequiredIAMActions, want)
		}
		if sqs.Name != "sqs" || awsbatch.MaxBatchEntries != 10 {
			t.Error("constants changed")
		}
	})
}
