package sns_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awssns "github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/bridge/bridgetest"
	"github.com/keyrelay/keyrelay/sinks/awsbatch"
	"github.com/keyrelay/keyrelay/sinks/awsbatch/awsbatchtest"
	"github.com/keyrelay/keyrelay/sinks/sns"
)

// TestPackedFauxqs runs the packing sink against fauxqs: the sink contract
// read back through a queue subscribed with raw message delivery and
// unpacked as a consumer does (NDJSON lines); the limits of a default topic,
// whose 256 KiB bound holds for the whole PublishBatch; and the refusal of a
// FIFO topic.
func TestPackedFauxqs(t *testing.T) {
	bridgetest.StartFauxqs(t)
	sqsc, snsc := awsbatchtest.Clients(t)
	ctx := context.Background()

	t.Run("contract", func(t *testing.T) {
		bridgetest.RunSinkContract(t, func(t *testing.T) (bridge.Sink, func() [][]byte) {
			arn, url := awsbatchtest.CreateTopicToQueue(t, sqsc, snsc, awsbatchtest.UniqueName("packed", false))
			s, err := sns.New(ctx, sns.Options{Client: snsc, TopicARN: arn, Pack: awsbatch.PackNDJSON})
			if err != nil {
				t.Fatal(err)
			}
			return s, awsbatchtest.NewReader(t, sqsc, url).Bodies
		}, bridgetest.Packed(awsbatch.Unpack))
	})

	t.Run("limits of a default topic", func(t *testing.T) {
		arn, _ := awsbatchtest.CreateTopicToQueue(t, sqsc, snsc, awsbatchtest.UniqueName("packed", false))
		s, err := sns.New(ctx, sns.Options{Client: snsc, TopicARN: arn, MaxInFlight: 2, Pack: awsbatch.PackNDJSON})
		if err != nil {
			t.Fatal(err)
		}
		lim := s.Limits()
		if lim.MaxBatchBytes > sns.DefaultMaxMessageSize || lim.MaxBatchBytes < sns.DefaultMaxMessageSize-1024 ||
			lim.MaxEntryBytes > lim.MaxBatchBytes || lim.MaxEntries < 1000 || lim.MaxInFlight != 2 {
			t.Errorf("Limits = %+v: want a batch just under the topic's 256 KiB, many entries", lim)
		}
	})

	t.Run("FIFO topic is refused", func(t *testing.T) {
		arn, _ := awsbatchtest.CreateTopicToQueue(t, sqsc, snsc, awsbatchtest.UniqueName("packed", true))
		_, err := sns.New(ctx, sns.Options{Client: snsc, TopicARN: arn, Pack: awsbatch.PackNDJSON})
		if err == nil || !strings.Contains(err.Error(), "KEYRELAY_PACK=off") {
			t.Errorf("New(FIFO, packed) = %v, want a refusal naming KEYRELAY_PACK", err)
		}
	})
}

// TestPackedFaults: one packed batch of three messages (one per event)
// where the server fails one message retryably and refuses another as the
// sender's fault. Exactly the records of the retryable message are published
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
			DB: 3, Event: ev, Key: fmt.Sprintf("key-%d", i)}
		recs = append(recs, rec)
		byEvent[ev] = append(byEvent[ev], awsbatchtest.Body(rec))
	}
	fake := &fakeSNS{respond: func(n int, entries []sentEntry, w http.ResponseWriter, _ *http.Request) {
		if n > 0 {
			batchResponse(w, entries)
			return
		}
		batchResponse(w, entries,
			failure{"1", false, "InternalError", "internal error"},
			failure{"2", true, "InvalidParameter", "Invalid parameter: Message too long"})
	}}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "")),
		config.WithBaseEndpoint(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	s, err := sns.New(context.Background(), sns.Options{Client: awssns.NewFromConfig(cfg),
		TopicARN: "arn:aws:sns:us-east-1:000000000000:keyrelay", MaxInFlight: 1, Pack: awsbatch.PackNDJSON})
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
			got[i] = append(got[i], strings.Split(e.Message, "\n"))
			var first struct{ Event string }
			if err := json.Unmarshal([]byte(got[i][j][0]), &first); err != nil {
				t.Fatal(err)
			}
			want := map[string][2]string{"type": {"String", "keyevent"}, "db": {"Number", "3"},
				"event": {"String", first.Event}, "count": {"Number", fmt.Sprint(len(got[i][j]))}}
			if fmt.Sprint(e.Attributes) != fmt.Sprint(want) {
				t.Errorf("request %d message %d: attributes %v, want %v", i, j, e.Attributes, want)
			}
		}
	}
	want := [][][]string{{byEvent["expired"], byEvent["set"], byEvent["del"]}, {byEvent["set"]}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("requests (messages of records):\n%v\nwant:\n%v", got, want)
	}
	for name, off := range map[string]float64{
		"delivered": testutil.ToFloat64(m.Delivered.WithLabelValues(sns.Name)) - 20,
		"rejected":  testutil.ToFloat64(m.Rejected.WithLabelValues(sns.Name, "refused")) - 10,
		"retried":   testutil.ToFloat64(m.Retried.WithLabelValues(sns.Name)) - 10,
		"dropped":   testutil.ToFloat64(m.Dropped.WithLabelValues(sns.Name, bridge.GapShutdown)),
	} {
		if off != 0 {
			t.Errorf("%s metric off by %v (want delivered 20, rejected 10, retried 10, dropped 0)", name, off)
		}
	}
}
