//go:build integration

package main

import (
	"io"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/bridge/bridgetest"
)

// TestSystemdNotify runs the daemon as systemd would with Type=notify and
// WatchdogSec=: against a real redis-server it says READY=1 once subscribed
// (as /readyz), pings WATCHDOG=1 while alive, and STOPPING=1 on the stop.
func TestSystemdNotify(t *testing.T) {
	r := bridgetest.StartRedis(t)
	conn, path := notifySocket(t)
	d := startDaemon(t, map[string]string{
		"KEYRELAY_REDIS_URL": "redis://" + r.Addr,
		"NOTIFY_SOCKET":      path,
		"WATCHDOG_USEC":      "200000", // a ping every 100ms
		"KEYRELAY_HTTP_ADDR": "127.0.0.1:0",
	})
	m := regexp.MustCompile(`"msg":"http listening","addr":"([^"]+)"`).FindStringSubmatch(d.Stderr.String())
	if m == nil {
		t.Fatalf("no http address in the log:\n%s", d.Stderr.String())
	}
	var got []string
	want := func(msg string) {
		t.Helper()
		for {
			m, ok := readNotify(t, conn, 30*time.Second)
			if !ok {
				t.Fatalf("no %s; have %q", msg, got)
			}
			got = append(got, m)
			if m == msg {
				return
			}
		}
	}
	want("READY=1")
	resp, err := http.Get("http://" + m[1] + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("READY=1 sent while /readyz says %s: %s", resp.Status, body)
	}
	want("WATCHDOG=1")
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	want("STOPPING=1")
	n := 0
	for _, m := range got {
		if m == "READY=1" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("READY=1 sent %d times: %q", n, got)
	}
}
