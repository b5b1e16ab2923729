//go:build integration

package awsbatch_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/bridge/bridgetest"
	"github.com/keyrelay/keyrelay/sinks/awsbatch"
	"github.com/keyrelay/keyrelay/sinks/awsbatch/awsbatchtest"
	"github.com/keyrelay/keyrelay/sinks/sqs"
)

// claimsLarger is an SQS client whose queue claims a MaximumMessageSize of
// 1 MiB, whatever the queue's own.
type claimsLarger struct{ *awssqs.Client }

func (claimsLarger) GetQueueAttributes(context.Context, *awssqs.GetQueueAttributesInput, ...func(*awssqs.Options)) (*awssqs.GetQueueAttributesOutput, error) {
	return &awssqs.GetQueueAttributesOutput{Attributes: map[string]string{"MaximumMessageSize": "1048576"}}, nil
}

// meteredSQS passes every call to the real client and counts the
// SendMessageBatch requests and what AWS bills for them: each started 64 KiB
// of a request's payload (message bodies and attributes) is one request.
type meteredSQS struct {
	*awssqs.Client
	mu       sync.Mutex
	requests int
	billed   int
	payload  int
	maxMsgs  int
}

func (m *meteredSQS) SendMessageBatch(ctx context.Context, in *awssqs.SendMessageBatchInput, opts ...func(*awssqs.Options)) (*awssqs.SendMessageBatchOutput, error) {
	size := 0
	for _, e := range in.Entries {
		size += len(aws.ToString(e.MessageBody))
		for name, a := range e.MessageAttributes {
			size += len(name) + len(aws.ToString(a.DataType)) + len(aws.ToString(a.StringValue))
		}
	}
	m.mu.Lock()
	m.requests++
	m.billed += max(1, (size+65535)/65536)
	m.payload += size
	m.maxMsgs = max(m.maxMsgs, len(in.Entries))
	m.mu.Unlock()
	return m.Client.SendMessageBatch(ctx, in, opts...)
}

// costRecords are n key events as ElastiCache produces them: a realistic
// source, session keys, mostly expirations; every 1000th is a gap record.
func costRecords(n int) []bridge.Record {
	ids := bridge.NewIDGenerator()
	now := time.Now()
	out := make([]bridge.Record, n)
	for i := range out {
		out[i] = bridge.Record{Type: bridge.TypeKeyEvent, ID: ids.New(now), Time: now,
			Source: "my-cache.abc123.ng.0001.use1.cache.amazonaws.com:6379", DB: i % 2,
			Event: []string{"expired", "expired", "expired", "set", "del"}[i%5], Key: fmt.Sprintf("session:%08d", i)}
		if i%1000 == 999 {
			out[i] = bridge.Record{Type: bridge.TypeGap, ID: ids.New(now), Time: now, Source: out[i-1].Source,
				Since: now.Add(-time.Second), Until: now, Reason: bridge.GapReconnect}
		}
	}
	return out
}

// relayAll runs recs through a bridge.Relay around s as the daemon wires it
// (default linger and in-flight batches, a buffer that holds them all) and
// shuts it down once everything is delivered.
func relayAll(t *testing.T, s bridge.Sink, recs []bridge.Record) *bridge.Metrics {
	t.Helper()
	return awsbatchtest.DeliverWith(t, s, recs, bridge.RelayConfig{
		BufferRecords: len(recs) + 10, BufferBytes: 1 << 30, Overflow: bridge.DropNewest,
		Linger: 20 * time.Millisecond, RetryInitial: 5 * time.Millisecond, RetryMax: 50 * time.Millisecond,
		Source: "127.0.0.1:6379",
	}, 2*time.Minute)
}

// TestSQSFauxqs is what only SQS shows on fauxqs: a message over the queue's
// size that reaches it anyway comes back permanent; and packing's cost,
// with a consumer that unpacks the packed queue and finds every record
// exactly once, each in a message whose attributes are its own.
func TestSQSFauxqs(t *testing.T) {
	bridgetest.StartFauxqs(t)
	client, _ := awsbatchtest.Clients(t)
	ctx := context.Background()
	open := func(t *testing.T, api sqs.API, url string, opt awsbatch.Options) *sqs.Sink {
		s, err := sqs.New(api, url, opt)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close(ctx) })
		return s
	}

	t.Run("oversize entry is refused by the queue as the sender's fault", func(t *testing.T) {
		// The sink never sends an entry above the queue's
		// MaximumMessageSize; this shows that if one reaches the queue
		// anyway (the limit lowered since it was read), it comes back
		// permanent, not retried for ever.
		url, _ := awsbatchtest.CreateQueue(t, client, awsbatchtest.UniqueName("tiny", false),
			map[string]string{"MaximumMessageSize": "1024"})
		s := open(t, claimsLarger{client}, url, awsbatch.Options{})
		s.Limits() // the (claimed) limit is read
		entries := bridgetest.ContractEntries()[:2]
		big := *entries[1]
		big.Record.Key = strings.Repeat("k", 2000)
		big.Body = big.Record.AppendJSON(nil)
		err := s.Publish(ctx, []*bridge.Entry{entries[0], &big})
		var pe *bridge.PartialError
		if !errors.As(err, &pe) || len(pe.Failed) != 1 || pe.Failed[0].Index != 1 || !bridge.IsPermanent(pe.Failed[0].Err) {
			t.Fatalf("Publish = %v, want a partial error with entry 1 permanent", err)
		}
		var tl *awsbatch.TooLargeError
		if errors.As(pe.Failed[0].Err, &tl) {
			t.Errorf("entry 1 was refused by the sink (%v), not by the queue", tl)
		}
	})

	t.Run("packing: cost and exactly once", func(t *testing.T) {
		const n = 20000
		recs := costRecords(n)
		bodyBytes := 0
		for _, r := range recs {
			bodyBytes += len(awsbatchtest.Body(r))
		}
		cost := map[awsbatch.Packing]*meteredSQS{}
		var packedURL string
		var packedLimits bridge.Limits
		for _, pack := range []awsbatch.Packing{awsbatch.PackOff, awsbatch.PackNDJSON} {
			url, _ := awsbatchtest.CreateQueue(t, client, awsbatchtest.UniqueName("cost", false), nil)
			api := &meteredSQS{Client: client}
			s := open(t, api, url, awsbatch.Options{Pack: pack})
			if pack == awsbatch.PackNDJSON {
				packedURL, packedLimits = url, s.Limits()
			}
			m := relayAll(t, s, recs)
			if got := testutil.ToFloat64(m.Delivered.WithLabelValues(sqs.Name)); got != n {
				t.Errorf("%s: delivered %v, want %d", pack, got, n)
			}
			cost[pack] = api
		}
		perMillion := func(v int) int { return v * 1000000 / n }
		off, on := cost[awsbatch.PackOff], cost[awsbatch.PackNDJSON]
		t.Logf("%d records, %.0f bytes each on average, limits %+v", n, float64(bodyBytes)/n, packedLimits)
		for name, c := range cost {
			t.Logf("pack=%s: %d SendMessageBatch requests (%d per million records), %d billed (%d per million), payload %d bytes, up to %d messages per request",
				name, c.requests, perMillion(c.requests), c.billed, perMillion(c.billed), c.payload, c.maxMsgs)
		}
		if perMillion(off.billed) > 100000 || off.requests != n/10 {
			t.Errorf("unpacked: %d requests, %d billed per million; want %d and at most 100000", off.requests, perMillion(off.billed), n/10)
		}
		if perMillion(on.billed) > 5000 {
			t.Errorf("packed: %d billed requests per million, want at most 5000", perMillion(on.billed))
		}
		if on.requests*50 > off.requests || on.maxMsgs > 10 {
			t.Errorf("packed: %d requests (up to %d messages), unpacked %d: want at least 50 times fewer", on.requests, on.maxMsgs, off.requests)
		}

		// The consumer: split each body on "\n"; each line is a record.
		msgs := awsbatchtest.NewReader(t, client, packedURL).Wait(on.requests, 30*time.Second)
		seen := make(map[string]int, n)
		for _, m := range msgs {
			lines := strings.Split(m.Body, "\n")
			attr := func(name string) string { return aws.ToString(m.Attributes[name].StringValue) }
			if attr("count") != fmt.Sprint(len(lines)) || aws.ToString(m.Attributes["count"].DataType) != "Number" {
				t.Errorf("message of %d records has count attribute %q", len(lines), attr("count"))
			}
			for _, line := range lines {
				r, err := bridgetest.ParseRecord([]byte(line))
				if err != nil {
					t.Fatal(err)
				}
				seen[r.ID]++
				if attr("type") != r.Type || (r.Type == bridge.TypeKeyEvent && (attr("event") != r.Event || attr("db") != fmt.Sprint(r.DB))) ||
					(r.Type == bridge.TypeGap && (attr("event") != "" || attr("db") != "")) {
					t.Fatalf("record %+v in a message with attributes type=%q event=%q db=%q", r, attr("type"), attr("event"), attr("db"))
				}
			}
		}
		for _, r := range recs {
			if seen[r.ID] != 1 {
				t.Errorf("record %s received %d times", r.ID, seen[r.ID])
			}
		}
		if len(seen) != n {
			t.Errorf("received %d distinct records, want %d", len(seen), n)
		}
	})
}
