//go:build integration

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/keyrelay/keyrelay/bridge/bridgetest"
)

// TestCheckNotifications runs `keyrelay check` against servers with
// different notify-keyspace-events and asserts the diagnosis and the fix.
func TestCheckNotifications(t *testing.T) {
	for _, tc := range []struct {
		flags  string
		env    map[string]string
		ok     bool
		want   []string
		reject []string
	}{
		{flags: "KEA", ok: true, want: []string{"ok   keyevent notifications flowing", "ok   continuity markers on keyrelay:keyrelay:markers",
			"ok   alive key (restart gaps): may write keyrelay:keyrelay:*", "all checks passed"}},
		{flags: "KEA", env: map[string]string{"KEYRELAY_MARKER_INTERVAL": "0", "KEYRELAY_NAME": "orders"}, ok: true,
			want: []string{"warn continuity markers: off (KEYRELAY_MARKER_INTERVAL=0)", "all checks passed"}},
		{flags: "", want: []string{"FAIL keyevent notifications flowing: no notification arrived: notify-keyspace-events is empty or lacks E", "custom parameter group"}},
		{flags: "Ex", want: []string{"flags missing from notify-keyspace-events for the configured events: $ghlstz"}},
		{flags: "Ex", env: map[string]string{"KEYRELAY_EVENTS": "expired"}, ok: true, want: []string{"ok   keyevent notifications flowing"}},
		{flags: "Egx", env: map[string]string{"KEYRELAY_EVENTS": "expired,del,lpush"}, want: []string{"flags missing from notify-keyspace-events for the configured events: l"}},
		{flags: "Kx", env: map[string]string{"KEYRELAY_EVENTS": "expired"}, want: []string{"only keyspace notifications arrive: add E to notify-keyspace-events, or set KEYRELAY_CHANNELS=keyspace"}},
		{flags: "Kx", env: map[string]string{"KEYRELAY_EVENTS": "expired", "KEYRELAY_CHANNELS": "keyspace"}, ok: true, want: []string{"ok   keyspace notifications flowing"}},
		{flags: "KEA", env: map[string]string{"KEYRELAY_EVENTS": "expired,evicted"}, ok: true, want: []string{"events not provable by a probe: evicted (flag e)"}},
	} {
		t.Run(tc.flags+"/"+tc.env["KEYRELAY_EVENTS"]+tc.env["KEYRELAY_CHANNELS"]+tc.env["KEYRELAY_MARKER_INTERVAL"], func(t *testing.T) {
			rs := bridgetest.StartRedis(t, "--notify-keyspace-events", tc.flags)
			t.Setenv("KEYRELAY_REDIS_URL", "redis://"+rs.Addr)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var out bytes.Buffer
			err := run(context.Background(), context.Background(), []string{"check"}, &out, &out)
			if (err == nil) != tc.ok {
				t.Fatalf("check returned %v, want ok=%v:\n%s", err, tc.ok, out.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			// The probe keys are cleaned up.
			if keys, _ := rs.Client(0).Keys(context.Background(), "keyrelay:keyrelay:check:*").Result(); len(keys) > 0 {
				t.Errorf("probe keys left behind: %v", keys)
			}
		})
	}
}

func TestCheckRefusesReplica(t *testing.T) {
	primary := bridgetest.StartRedis(t)
	replica := bridgetest.StartRedis(t, "--replicaof", "127.0.0.1", strings.Split(primary.Addr, ":")[1])
	t.Setenv("KEYRELAY_REDIS_URL", "redis://"+replica.Addr)
	var out bytes.Buffer
	if err := run(context.Background(), context.Background(), []string{"check"}, &out, &out); err == nil {
		t.Fatalf("check passed against a replica:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "FAIL endpoint is a primary: it is a slave: use the primary endpoint") {
		t.Fatalf("no replica diagnosis:\n%s", out.String())
	}
}
