//go:build integration

package main

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/bridge/bridgetest"
)

// TestSIGTERMDeliversEverythingReceived runs this test binary as the
// keyrelay command (see TestMain) against a real redis-server: after a burst
// of writes and a real SIGTERM, every event Redis published is on stdout,
// once, and the exit status is 0.
func TestSIGTERMDeliversEverythingReceived(t *testing.T) {
	rs := bridgetest.StartRedis(t)
	var stdout, stderr syncBuffer
	cmd := command(t, map[string]string{"KEYRELAY_REDIS_URL": "redis://" + rs.Addr, "KEYRELAY_HTTP_ADDR": "",
		"KEYRELAY_BATCH_LINGER": "200ms"}, "run")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), `"msg":"subscribed"`) {
		if time.Now().After(deadline) {
			t.Fatalf("not subscribed:\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A burst of writes, then SIGTERM as soon as Redis has published them all.
	ctx := context.Background()
	c := rs.Client(0)
	const n = 5000
	pipe := c.Pipeline()
	for i := 0; i < n; i++ {
		pipe.Set(ctx, fmt.Sprintf("burst:%d", i), "v", 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if code := exitStatus(err); code != 0 {
		t.Fatalf("exit status %d:\n%s", code, stderr.String())
	}
	recs := parseRecords(t, strings.NewReader(stdout.String()))
	// Redis published every event before it answered the pipeline, so
	// before the signal; keyrelay drains its subscription on stop
	// (PUNSUBSCRIBE is answered after everything already queued), so every
	// one of them is received and must be on stdout, once.
	seen := map[string]bool{}
	for _, r := range recs {
		if seen[*r.Key] {
			t.Fatalf("duplicate %s", *r.Key)
		}
		seen[*r.Key] = true
	}
	for i := 0; i < n; i++ {
		if !seen[fmt.Sprintf("burst:%d", i)] {
			t.Fatalf("burst:%d missing; %d of %d delivered:\n%s", i, len(recs), n, stderr.String())
		}
	}
	if !strings.Contains(stderr.String(), `"msg":"stopped"`) {
		t.Fatalf("no clean stop:\n%s", stderr.String())
	}
}
