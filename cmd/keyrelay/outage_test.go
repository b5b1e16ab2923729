//go:build integration

package main

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/bridge/bridgetest"
	"github.com/keyrelay/keyrelay/sinks/awsbatch/awsbatchtest"
)

// TestSQSOutageDuringStream: the SQS endpoint is unreachable for 10 s while
// Redis keeps publishing. The reader keeps reading, records wait in the
// buffer, and after recovery every event is in the queue; none that SQS
// had accepted is sent again.
func TestSQSOutageDuringStream(t *testing.T) {
	rs := bridgetest.StartRedis(t)
	fq := bridgetest.StartFauxqs(t)
	sqsc, _ := awsbatchtest.Clients(t) // straight to the emulator
	queueURL, _ := awsbatchtest.CreateQueue(t, sqsc, awsbatchtest.UniqueName("outage", false), nil)
	reader := awsbatchtest.NewReader(t, sqsc, queueURL)

	// keyrelay reaches SQS through a forwarder the test can take down.
	u, _ := url.Parse(fq.Endpoint)
	fwd := bridgetest.StartForwarder(t, u.Host)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", bridgetest.FreePort(t))
	startDaemon(t, map[string]string{
		"KEYRELAY_REDIS_URL": "redis://" + rs.Addr, "KEYRELAY_SINKS": "sqs", "KEYRELAY_SQS_QUEUE_URL": queueURL,
		"AWS_ENDPOINT_URL": "http://" + fwd.Addr, "KEYRELAY_RETRY_MAX": "500ms", "KEYRELAY_HTTP_ADDR": httpAddr,
		"KEYRELAY_LOG_LEVEL": "info",
	})

	// A steady stream: 20 writes every 10 ms (about 2 000 events/s) for 14 s.
	ctx := context.Background()
	c := rs.Client(0)
	var wg sync.WaitGroup
	written := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		end := time.Now().Add(14 * time.Second)
		for time.Now().Before(end) {
			pipe := c.Pipeline()
			for range 20 {
				pipe.Set(ctx, fmt.Sprintf("k:%d", written), "v", 0)
				written++
			}
			if _, err := pipe.Exec(ctx); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	time.Sleep(2 * time.Second)
	fwd.SetTarget("127.0.0.1:1") // connection refused from now on
	cut := fwd.Cut()
	time.Sleep(5 * time.Second)
	samples := scrapeMetrics(t, httpAddr)
	if up, _ := metricValue(samples, "keyrelay_sink_up", "sink=sqs"); up != 0 {
		t.Errorf("keyrelay_sink_up{sink=sqs} = %v during the outage, want 0", up)
	}
	if buffered, _ := metricValue(samples, "keyrelay_buffer_records", "sink=sqs"); buffered < 1000 {
		t.Errorf("only %v records buffered during the outage", buffered)
	}
	time.Sleep(5 * time.Second)
	fwd.SetTarget(u.Host)
	wg.Wait()

	// Wait for every key, not for a count of messages: duplicates (allowed,
	// below) would reach the count while records are still on their way.
	var seen, ids map[string]int
	missing := written
	for deadline := time.Now().Add(60 * time.Second); missing > 0 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		seen, ids = map[string]int{}, map[string]int{}
		for _, m := range reader.Poll() {
			rec, err := bridgetest.ParseRecord([]byte(m.Body))
			if err != nil {
				t.Fatal(err)
			}
			if rec.Type != "keyevent" {
				t.Fatalf("unexpected record %s", m.Body)
			}
			seen[*rec.Key]++
			ids[rec.ID]++
		}
		missing = 0
		for i := 0; i < written; i++ {
			if seen[fmt.Sprintf("k:%d", i)] == 0 {
				missing++
			}
		}
	}
	dups := 0
	for _, n := range ids {
		dups += n - 1
	}
	if missing > 0 {
		t.Fatalf("%d of %d events missing after recovery", missing, written)
	}
	// A duplicate is possible only for a request that was in flight when the
	// connections were cut (SQS may have accepted it before the cut): at most
	// SINK_MAX_IN_FLIGHT batches of 10. Entries SQS had answered for are never
	// resent.
	if dups > 4*10 || (dups > 0 && cut == 0) {
		t.Fatalf("%d duplicates (connections cut: %d)", dups, cut)
	}
	t.Logf("%d events, all delivered after a 10 s outage; %d duplicates from %d cut connections", written, dups, cut)
}
