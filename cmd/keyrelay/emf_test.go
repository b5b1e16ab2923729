//go:build integration

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/bridge/bridgetest"
)

// TestEMFLinesAddUp runs keyrelay against a real redis-server with the
// stdout sink and KEYRELAY_EMF_INTERVAL=1s: every line on stderr that
// carries _aws is a valid embedded-metric-format document, periodic lines
// come at least once a second, a final line follows the last delivery, and
// the lines' Received and Delivered deltas add up to the writes.
func TestEMFLinesAddUp(t *testing.T) {
	rs := bridgetest.StartRedis(t)
	d := startDaemon(t, map[string]string{
		"KEYRELAY_REDIS_URL":    "redis://" + rs.Addr,
		"KEYRELAY_SINKS":        "stdout",
		"KEYRELAY_NAME":         "emftest",
		"KEYRELAY_EMF_INTERVAL": "1s",
		"KEYRELAY_LOG_LEVEL":    "info",
	})
	ctx := context.Background()
	const n = 2000
	c := rs.Client(0)
	for batch := 0; batch < 4; batch++ {
		pipe := c.Pipeline()
		for i := batch * n / 4; i < (batch+1)*n/4; i++ {
			pipe.Set(ctx, fmt.Sprintf("emf:%d", i), "v", 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	d.waitRecords(10*time.Second, func(recs []testRecord) bool { return len(keysOf(recs, "set")) == n })
	// At least two periodic lines before the stop.
	waitUntil(t, 10*time.Second, "two EMF lines", func() bool { return len(emfLines(d.Stderr.String())) >= 2 })
	if err := d.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}

	stderr := d.Stderr.String()
	lines := emfLines(stderr)
	var received, delivered, dropped, rejected, gaps float64
	var last time.Time
	for i, line := range lines {
		root, ts := bridgetest.CheckEMF(t, []byte(line+"\n"))
		if ts.Before(last) {
			t.Errorf("line %d: timestamp %v before the previous line's %v", i, ts, last)
		}
		last = ts
		if root["Service"] != "emftest" {
			t.Errorf("line %d: Service = %v, want KEYRELAY_NAME emftest", i, root["Service"])
		}
		if _, has := root["Leader"]; has {
			t.Errorf("line %d: Leader without high availability: %s", i, line)
		}
		received += emfNum(t, root, "Received")
		delivered += emfNum(t, root, "Delivered")
		dropped += emfNum(t, root, "Dropped")
		rejected += emfNum(t, root, "Rejected")
		gaps += emfNum(t, root, "Gaps")
	}
	// A fresh redis-server: no alive key, so no restart gap, and nothing
	// else interrupted the subscription.
	if received != n || delivered != n || dropped != 0 || rejected != 0 || gaps != 0 {
		t.Errorf("over %d lines: Received %v, Delivered %v, Dropped %v, Rejected %v, Gaps %v; want %d, %d, 0, 0, 0",
			len(lines), received, delivered, dropped, rejected, gaps, n, n)
	}
	// The final line: after the stop's delivery, before "stopped".
	final := lines[len(lines)-1]
	iStopping := strings.Index(stderr, `"msg":"stopping: delivering buffered records"`)
	iFinal := strings.LastIndex(stderr, final)
	iStopped := strings.Index(stderr, `"msg":"stopped"`)
	if iStopping < 0 || iStopped < 0 || !(iStopping < iFinal && iFinal < iStopped) {
		t.Errorf("the final EMF line is not between the stop's start (%d) and \"stopped\" (%d): at %d", iStopping, iStopped, iFinal)
	}
	root, _ := bridgetest.CheckEMF(t, []byte(final+"\n"))
	for name, want := range map[string]float64{"SinksUp": 1, "BufferFill": 0} {
		if got := emfNum(t, root, name); got != want {
			t.Errorf("final line: %s = %v, want %v", name, got, want)
		}
	}
	// While it ran: subscribed, the sink up.
	root, _ = bridgetest.CheckEMF(t, []byte(lines[0]+"\n"))
	if emfNum(t, root, "Subscribed") != 1 || emfNum(t, root, "SinksUp") != 1 {
		t.Errorf("first line: Subscribed %v, SinksUp %v while running, want 1, 1", root["Subscribed"], root["SinksUp"])
	}
}

// emfLines returns the EMF documents among the log lines.
func emfLines(stderr string) []string {
	var out []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.Contains(l, `"_aws":`) {
			out = append(out, l)
		}
	}
	return out
}

func emfNum(t *testing.T, root map[string]any, name string) float64 {
	t.Helper()
	n, ok := root[name].(json.Number)
	if !ok {
		t.Fatalf("%s is not a number: %v", name, root[name])
	}
	f, _ := n.Float64()
	return f
}
