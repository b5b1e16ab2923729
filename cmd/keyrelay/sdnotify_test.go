package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// notifySocket listens on a unixgram socket in a temporary directory, the
// way systemd does for a Type=notify service.
func notifySocket(t *testing.T) (*net.UnixConn, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, path
}

// readNotify reads one datagram; wait bounds how long nothing may come.
func readNotify(t *testing.T, conn *net.UnixConn, wait time.Duration) (string, bool) {
	t.Helper()
	buf := make([]byte, 4096)
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	n, err := conn.Read(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "", false
		}
		t.Fatal(err)
	}
	return string(buf[:n]), true
}

// TestNotifierEnvironment: what NOTIFY_SOCKET, WATCHDOG_USEC and
// WATCHDOG_PID turn on.
func TestNotifierEnvironment(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	pid := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		name     string
		env      map[string]string
		enabled  bool
		watchdog time.Duration
	}{
		{"not under systemd", map[string]string{}, false, 0},
		{"watchdog without a socket", map[string]string{"WATCHDOG_USEC": "30000000"}, false, 0},
		{"socket", map[string]string{"NOTIFY_SOCKET": "/run/systemd/notify"}, true, 0},
		{"abstract socket", map[string]string{"NOTIFY_SOCKET": "@/org/freedesktop/systemd1/notify"}, true, 0},
		{"vsock", map[string]string{"NOTIFY_SOCKET": "vsock:2:1234"}, false, 0},
		{"watchdog", map[string]string{"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "30000000"}, true, 30 * time.Second},
		{"watchdog for this pid", map[string]string{"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}, true, 30 * time.Second},
		{"watchdog for another pid", map[string]string{"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, true, 0},
		{"bad watchdog", map[string]string{"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "30s"}, true, 0},
	} {
		n := newNotifier(func(k string) string { return tc.env[k] }, log)
		if (n.addr != nil) != tc.enabled || n.watchdog != tc.watchdog {
			t.Errorf("%s: enabled %v, watchdog %s; want %v, %s", tc.name, n.addr != nil, n.watchdog, tc.enabled, tc.watchdog)
		}
	}
	// Disabled, it sends nothing and fails at nothing.
	n := newNotifier(func(string) string { return "" }, log)
	if err := n.send("READY=1"); err != nil {
		t.Fatal(err)
	}
	n.run(context.Background(), nil, nil) // returns at once
	n.stopping()
}

// TestNotifierProtocol, against a real unixgram socket: READY=1 once ready
// first passes (and only once), WATCHDOG=1 while alive passes and none
// while it fails, STOPPING=1 on stopping.
func TestNotifierProtocol(t *testing.T) {
	conn, path := notifySocket(t)
	env := map[string]string{"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000"} // a ping every 10ms
	n := newNotifier(func(k string) string { return env[k] }, slog.New(slog.NewTextHandler(io.Discard, nil)))

	// Not ready for the first three checks, then ready for good.
	readyCalls := 0
	ready := func() error {
		if readyCalls++; readyCalls <= 3 {
			return errors.New("not subscribed")
		}
		return nil
	}
	// Alive for the first five checks, then not; each check is reported
	// on checks, after the ping of the check before it was sent.
	const aliveFor = 5
	checks := make(chan int, 100)
	aliveCalls := 0
	alive := func() error {
		aliveCalls++
		select {
		case checks <- aliveCalls:
		default: // the test has stopped counting
		}
		if aliveCalls <= aliveFor {
			return nil
		}
		return errors.New("reader loop stuck")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.run(ctx, ready, alive) }()
	for c := range checks {
		if c == aliveFor+3 {
			break
		}
	}
	// Once READY=1 is there too, the socket holds everything sent.
	got := map[string]int{}
	for got["READY=1"] == 0 {
		msg, ok := readNotify(t, conn, 10*time.Second)
		if !ok {
			t.Fatalf("no READY=1; have %v", got)
		}
		got[msg]++
	}
	cancel()
	<-done
	for {
		msg, ok := readNotify(t, conn, 100*time.Millisecond)
		if !ok {
			break
		}
		got[msg]++
	}
	if got["READY=1"] != 1 || got["WATCHDOG=1"] != aliveFor || len(got) != 2 {
		t.Errorf("notifications %v, want READY=1 once and WATCHDOG=1 %d times (once per healthy check)", got, aliveFor)
	}
	n.stopping()
	if msg, ok := readNotify(t, conn, 10*time.Second); msg != "STOPPING=1" {
		t.Errorf("stopping sent %q (%v), want STOPPING=1", msg, ok)
	}
}

// TestDeploySystemdNotify: the unit waits for READY=1 from keyrelay itself,
// runs the watchdog keyrelay pings, and its credential example and the
// environment file's KEYRELAY_REDIS_PASSWORD_FILE name the same file.
func TestDeploySystemdNotify(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy/systemd/keyrelay.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := map[string]string{}
	var credential string
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(k, "#") {
			unit[k] = v
		} else if k == "#LoadCredential" {
			credential = v
		}
	}
	if unit["Type"] != "notify" || unit["NotifyAccess"] != "main" {
		t.Errorf("Type=%s NotifyAccess=%s, want notify and main", unit["Type"], unit["NotifyAccess"])
	}
	if d := systemdTime(t, unit["WatchdogSec"]); d < 2*readyPoll || d > 5*time.Minute {
		t.Errorf("WatchdogSec=%s", unit["WatchdogSec"])
	}
	name, _, ok := strings.Cut(credential, ":")
	if !ok {
		t.Fatalf("keyrelay.service: no #LoadCredential=NAME:PATH example")
	}
	_, commented := readEnvFile(t, filepath.Join(repoRoot, "deploy/systemd/keyrelay.env.example"))
	if got := commented["KEYRELAY_REDIS_PASSWORD_FILE"]; got != name && got != "/run/credentials/keyrelay.service/"+name {
		t.Errorf("keyrelay.env.example: KEYRELAY_REDIS_PASSWORD_FILE=%s, want the credential %s (its name, or its path %%d/%s)", got, name, name)
	}
}
