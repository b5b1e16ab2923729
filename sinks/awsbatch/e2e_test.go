//go:build integration

package awsbatch_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/bridge/bridgetest"
	"github.com/keyrelay/keyrelay/sinks/awsbatch"
	"github.com/keyrelay/keyrelay/sinks/awsbatch/awsbatchtest"
	"github.com/keyrelay/keyrelay/sinks/sns"
	"github.com/keyrelay/keyrelay/sinks/sqs"
)

// renamed gives a second sink of one kind its own name in the relay's
// metrics.
type renamed struct {
	bridge.Sink
	name string
}

func (r renamed) Name() string { return r.name }

// nineAtATime works around a fauxqs 1.9.2 bug: it orders PublishBatch
// entries by the text of their "member.N" parameter names, which the SDK
// sends sorted, so member.10 is published before member.2 and a FIFO topic's
// order breaks in the emulator (real SNS uses N). Batches of at most nine
// entries keep the names in numeric order.
type nineAtATime struct{ renamed }

func (n nineAtATime) Limits() bridge.Limits {
	lim := n.renamed.Limits()
	lim.MaxEntries = min(lim.MaxEntries, 9)
	return lim
}

// testLog sends the relay's warnings (retries, rejections) to the test log.
type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}

// TestEndToEnd writes keys to a real redis-server and checks that every
// record arrives, complete and once, with its message attributes: in an SQS
// queue (sqs sink), in a queue subscribed to an SNS topic (sns sink), and in
// FIFO queues directly and through a FIFO topic, where each key's events
// must also arrive in the order they happened.
func TestEndToEnd(t *testing.T) {
	bridgetest.StartFauxqs(t)
	rds := bridgetest.StartRedis(t)
	sqsc, snsc := awsbatchtest.Clients(t)
	ctx := context.Background()

	stdURL, _ := awsbatchtest.CreateQueue(t, sqsc, awsbatchtest.UniqueName("e2e", false), nil)
	fifoURL, _ := awsbatchtest.CreateQueue(t, sqsc, awsbatchtest.UniqueName("e2e", true), nil)
	topicARN, topicQueue := awsbatchtest.CreateTopicToQueue(t, sqsc, snsc, awsbatchtest.UniqueName("e2e", false))
	fifoTopicARN, fifoTopicQueue := awsbatchtest.CreateTopicToQueue(t, sqsc, snsc, awsbatchtest.UniqueName("e2e", true))

	sqsStd, err := sqs.New(sqsc, stdURL, awsbatch.Options{MaxInFlight: 4})
	if err != nil {
		t.Fatal(err)
	}
	sqsFIFO, err := sqs.New(sqsc, fifoURL, awsbatch.Options{MaxInFlight: 4})
	if err != nil {
		t.Fatal(err)
	}
	snsStd, err := sns.New(snsc, topicARN, awsbatch.Options{MaxInFlight: 4})
	if err != nil {
		t.Fatal(err)
	}
	snsFIFO, err := sns.New(snsc, fifoTopicARN, awsbatch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sinks := []bridge.Sink{sqsStd, renamed{sqsFIFO, "sqs-fifo"}, snsStd, nineAtATime{renamed{snsFIFO, "sns-fifo"}}}
	queues := map[string]string{"sqs": stdURL, "sqs-fifo": fifoURL, "sns": topicQueue, "sns-fifo": fifoTopicQueue}
	fifo := map[string]bool{"sqs-fifo": true, "sns-fifo": true}

	// Wired as cmd/keyrelay/daemon.go wires them.
	log := slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	metrics := bridge.NewMetrics(nil)
	relay := bridge.NewRelay(bridge.RelayConfig{
		BufferRecords: 10000, BufferBytes: 16 << 20, Overflow: bridge.DropNewest,
		Linger: 5 * time.Millisecond, RetryInitial: 10 * time.Millisecond, RetryMax: 100 * time.Millisecond,
		Source: rds.Addr,
	}, sinks, log, metrics)
	relay.Start()
	sub := bridge.NewSubscriber(bridge.SubscriberConfig{
		Options:  &redis.Options{Addr: rds.Addr},
		Source:   rds.Addr,
		Patterns: bridge.Patterns(bridge.KeyEvent, nil, nil),
		Filter:   bridge.NewFilter(nil, nil, nil),
	}, relay, log, metrics)
	subCtx, stopSub := context.WithCancel(ctx)
	subDone := make(chan error, 1)
	go func() { subDone <- sub.Run(subCtx) }()
	for deadline := time.Now().Add(10 * time.Second); !sub.Connected(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("subscriber did not connect")
		}
	}

	// 100 keys in two databases, each set, appended to and given a TTL: 300
	// events, three per key in a known order. Some keys are binary or carry
	// spaces, quotes and newlines.
	const nKeys = 100
	keyName := func(i int) string {
		switch i % 10 {
		case 3:
			return fmt.Sprintf("bin\xff\x00%d", i)
		case 7:
			return fmt.Sprintf("odd key \"%d\"\nline", i)
		}
		return fmt.Sprintf("user:%d", i)
	}
	dbs := []*redis.Client{rds.Client(0), rds.Client(1)}
	for i := range nKeys {
		c, k := dbs[i%2], keyName(i)
		if err := c.Set(ctx, k, "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.Append(ctx, k, "w").Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.Expire(ctx, k, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	relay.EmitGap(rds.Addr, bridge.GapReconnect, now.Add(-time.Second), now)
	const want = 3*nKeys + 1

	for name, url := range queues {
		t.Run(name, func(t *testing.T) {
			msgs := awsbatchtest.NewReader(t, sqsc, url).Wait(want, 30*time.Second)
			if len(msgs) != want {
				t.Errorf("received %d messages, want %d", len(msgs), want)
			}
			seen := map[string]bool{}
			events := map[string][]string{} // key -> events in arrival order
			lastID := map[string]string{}
			gaps := 0
			for _, m := range msgs {
				r, err := bridgetest.ParseRecord([]byte(m.Body))
				if err != nil {
					t.Fatal(err)
				}
				if seen[r.ID] {
					t.Errorf("record %s delivered twice", r.ID)
				}
				seen[r.ID] = true
				checkAttributes(t, m, r)
				if r.Type == bridge.TypeGap {
					gaps++
					continue
				}
				k := r.KeyString(t)
				if fifo[name] {
					if r.ID <= lastID[k] {
						t.Errorf("key %q: record %s arrived after %s", k, r.ID, lastID[k])
					}
					lastID[k] = r.ID
					rec := bridge.Record{Type: r.Type, Key: k}
					if g := (awsbatch.GroupBy{}).GroupID(&rec); m.GroupID != g {
						t.Errorf("key %q: MessageGroupId %q, want %q", k, m.GroupID, g)
					}
				}
				if r.DB != keyIndexDB(t, k, keyName, nKeys) {
					t.Errorf("key %q: db %d", k, r.DB)
				}
				events[k] = append(events[k], r.Event)
			}
			if gaps != 1 {
				t.Errorf("%d gap records, want 1", gaps)
			}
			for i := range nKeys {
				k := keyName(i)
				got := events[k]
				if len(got) != 3 {
					t.Errorf("key %q: events %v, want set, append, expire", k, got)
					continue
				}
				if fifo[name] && (got[0] != "set" || got[1] != "append" || got[2] != "expire") {
					t.Errorf("key %q: events in order %v, want [set append expire]", k, got)
				}
			}
		})
	}

	stopSub()
	if err := <-subDone; err != nil {
		t.Errorf("subscriber: %v", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := relay.Shutdown(sctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	for name := range queues {
		if got := testutil.ToFloat64(metrics.Delivered.WithLabelValues(name)); got != want {
			t.Errorf("%s: delivered metric %v, want %d", name, got, want)
		}
	}
}

// keyIndexDB returns the database key k was written to.
func keyIndexDB(t *testing.T, k string, keyName func(int) string, n int) int {
	for i := range n {
		if keyName(i) == k {
			return i % 2
		}
	}
	t.Fatalf("unknown key %q", k)
	return -1
}

// checkAttributes checks the message attributes against the body: type and
// event (String), db (Number); gap records carry type only.
func checkAttributes(t *testing.T, m awsbatchtest.Message, r bridgetest.Record) {
	t.Helper()
	attr := func(name, typ string) (string, bool) {
		v, ok := m.Attributes[name]
		if !ok {
			return "", false
		}
		if aws.ToString(v.DataType) != typ {
			t.Errorf("record %s: attribute %s has type %q, want %q", r.ID, name, aws.ToString(v.DataType), typ)
		}
		return aws.ToString(v.StringValue), true
	}
	if v, _ := attr("type", "String"); v != r.Type {
		t.Errorf("record %s: attribute type = %q, want %q", r.ID, v, r.Type)
	}
	ev, hasEvent := attr("event", "String")
	db, hasDB := attr("db", "Number")
	if r.Type == bridge.TypeGap {
		if hasEvent || hasDB {
			t.Errorf("gap record %s carries event/db attributes", r.ID)
		}
		return
	}
	if ev != r.Event {
		t.Errorf("record %s: attribute event = %q, want %q", r.ID, ev, r.Event)
	}
	if db != fmt.Sprint(r.DB) {
		t.Errorf("record %s: attribute db = %q, want %d", r.ID, db, r.DB)
	}
}
