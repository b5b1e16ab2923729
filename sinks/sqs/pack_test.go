package sqs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/bridge/bridgetest"
	"github.com/keyrelay/keyrelay/sinks/awsbatch"
	"github.com/keyrelay/keyrelay/sinks/awsbatch/awsbatchtest"
	"github.com/keyrelay/keyrelay/sinks/sqs"
)

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

// TestPackedFauxqs runs the packing sink against fauxqs: the sink contract
// with the consumer's unpacking (NDJSON lines) as readBack; then the same
// records through a packed and an unpacked sink, counting SendMessageBatch
// requests and billed 64 KiB chunks, and a consumer that unpacks the packed
// queue and finds every record exactly once, each in a message whose
// attributes are its own.
func TestPackedFauxqs(t *testing.T) {
	bridgetest.StartFauxqs(t)
	client, _ := awsbatchtest.Clients(t)
	ctx := context.Background()

	t.Run("contract", func(t *testing.T) {
		bridgetest.RunSinkContract(t, func(t *testing.T) (bridge.Sink, func() [][]byte) {
			url, _ := awsbatchtest.CreateQueue(t, client, awsbatchtest.UniqueName("packed", false), nil)
			s, err := sqs.New(ctx, sqs.Options{Client: client, QueueURL: url, Pack: awsbatch.PackNDJSON})
			if err != nil {
				t.Fatal(err)
			}
			return s, awsbatchtest.NewReader(t, client, url).Bodies
		}, bridgetest.Packed(awsbatch.Unpack))
	})

	t.Run("FIFO queue is refused", func(t *testing.T) {
		url, _ := awsbatchtest.CreateQueue(t, client, awsbatchtest.UniqueName("packed", true), nil)
		_, err := sqs.New(ctx, sqs.Options{Client: client, QueueURL: url, Pack: awsbatch.PackNDJSON})
		if err == nil || !strings.Contains(err.Error(), "KEYRELAY_PACK=off") {
			t.Errorf("New(FIFO, packed) = %v, want a refusal naming KEYRELAY_PACK", err)
		}
	})

	t.Run("cost and exactly once", func(t *testing.T) {
		const n = 20000
		recs := costRecords(n)
		bodyBytes := 0
		for _, r := range recs {
			bodyBytes += len(awsbatchtest.Body(r))
		}
		cost := map[string]*meteredSQS{}
		var packedURL string
		for _, pack := range []awsbatch.Packing{awsbatch.PackOff, awsbatch.PackNDJSON} {
			url, _ := awsbatchtest.CreateQueue(t, client, awsbatchtest.UniqueName("cost", false), nil)
			api := &meteredSQS{Client: client}
			s, err := sqs.New(ctx, sqs.Options{Client: api, QueueURL: url, Pack: pack})
			if err != nil {
				t.Fatal(err)
			}
			m := relayAll(t, s, recs)
			if got := testutil.ToFloat64(m.Delivered.WithLabelValues(sqs.Name)); got != n {
				t.Errorf("%s: delivered %v, want %d", pack, got, n)
			}
			cost[string(pack)] = api
			if pack == awsbatch.PackNDJSON {
				packedURL = url
			}
		}
		perMillion := func(v int) int { return v * 1000000 / n }
		off, on := cost["off"], cost["ndjson"]
		t.Logf("%d records, %.0f bytes each on average, limits %+v", n, float64(bodyBytes)/n, mustLimits(t, client, packedURL))
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
				var r struct {
					Type, ID, Event string
					DB              int
				}
				if err := json.Unmarshal([]byte(line), &r); err != nil {
					t.Fatalf("line %q: %v", line, err)
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

func mustLimits(t *testing.T, client *awssqs.Client, url string) bridge.Limits {
	s, err := sqs.New(context.Background(), sqs.Options{Client: client, QueueURL: url, Pack: awsbatch.PackNDJSON})
	if err != nil {
		t.Fatal(err)
	}
	return s.Limits()
}

// TestPackedFaults: one packed batch of three messages (one per event)
// where the server fails one message retryably and refuses another as the
// sender's fault. Exactly the records of the retryable message are sent
// again (repacked into one message); none of the accepted message; the
// refused message's records are rejected, counted, not resent.
func TestPackedFaults(t *testing.T) {
	ids := bridge.NewIDGenerator()
	now := time.Now()
	var recs []bridge.Record
	byEvent := map[string][]string{}
	for i := range 30 {
		ev := []string{"expired", "set", "del"}[i%3]
		rec := bridge.Record{Type: bridge.TypeKeyEvent, ID: ids.New(now), Time: now, Source: "127.0.0.1:6379",
			Event: ev, Key: fmt.Sprintf("key-%d", i)}
		recs = append(recs, rec)
		byEvent[ev] = append(byEvent[ev], awsbatchtest.Body(rec))
	}
	fake := &fakeSQS{respond: func(n int, entries []sentEntry, w http.ResponseWriter, _ *http.Request) {
		if n > 0 {
			batchResponse(w, entries)
			return
		}
		batchResponse(w, entries,
			failure{"1", false, "InternalError", "internal error"},
			failure{"2", true, "InvalidParameterValue", "refused"})
	}}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "")),
		config.WithBaseEndpoint(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	s, err := sqs.New(context.Background(), sqs.Options{Client: awssqs.NewFromConfig(cfg),
		QueueURL: srv.URL + "/000000000000/q", MaxInFlight: 1, Pack: awsbatch.PackNDJSON})
	if err != nil {
		t.Fatal(err)
	}
	m := awsbatchtest.Deliver(t, s, recs)

	fake.mu.Lock()
	defer fake.mu.Unlock()
	got := make([][][]string, len(fake.requests)) // request -> message -> records
	for i, req := range fake.requests {
		for j, e := range req {
			if e.ID != fmt.Sprint(j) {
				t.Errorf("request %d: message %d has Id %q", i, j, e.ID)
			}
			got[i] = append(got[i], strings.Split(e.MessageBody, "\n"))
			want := map[string]string{"type": "String:keyevent", "db": "Number:0",
				"event": "String:" + eventOf(t, e.MessageBody), "count": fmt.Sprintf("Number:%d", len(got[i][j]))}
			have := map[string]string{}
			for name, a := range e.MessageAttributes {
				have[name] = a.DataType + ":" + a.StringValue
			}
			if fmt.Sprint(have) != fmt.Sprint(want) {
				t.Errorf("request %d message %d: attributes %v, want %v", i, j, have, want)
			}
		}
	}
	want := [][][]string{{byEvent["expired"], byEvent["set"], byEvent["del"]}, {byEvent["set"]}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("requests (messages of records):\n%v\nwant:\n%v", got, want)
	}
	for name, w := range map[string]float64{
		"delivered": testutil.ToFloat64(m.Delivered.WithLabelValues(sqs.Name)) - 20,
		"rejected":  testutil.ToFloat64(m.Rejected.WithLabelValues(sqs.Name, "refused")) - 10,
		"retried":   testutil.ToFloat64(m.Retried.WithLabelValues(sqs.Name)) - 10,
		"dropped":   testutil.ToFloat64(m.Dropped.WithLabelValues(sqs.Name, bridge.GapShutdown)),
	} {
		if w != 0 {
			t.Errorf("%s metric off by %v (want delivered 20, rejected 10, retried 10, dropped 0)", name, w)
		}
	}
}

// eventOf returns the event of the first record of a packed body.
func eventOf(t *testing.T, body string) string {
	var r struct{ Event string }
	first, _, _ := strings.Cut(body, "\n")
	if err := json.Unmarshal([]byte(first), &r); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	return r.Event
}
