package main

// systemd's service notifications (sd_notify(3)), spoken without libsystemd
// or any dependency: one datagram per message on the unix socket systemd
// names in $NOTIFY_SOCKET. With Type=notify systemd counts keyrelay as
// started once it says READY=1; with WatchdogSec= it restarts keyrelay when
// WATCHDOG=1 stops coming.

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// readyPoll is how often the notifier asks whether keyrelay is ready, until
// it first is.
const readyPoll = 200 * time.Millisecond

// notifier sends systemd notifications. Without $NOTIFY_SOCKET (not run by
// systemd, or not Type=notify) it is disabled and sends nothing.
type notifier struct {
	addr     *net.UnixAddr // nil: disabled
	watchdog time.Duration // WATCHDOG_USEC when it is meant for this process; 0: no watchdog
	log      *slog.Logger
}

// newNotifier reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID through
// getenv, as sd_notify(3) and sd_watchdog_enabled(3) do: a socket path, or
// "@name" in the abstract namespace; the watchdog applies only when
// WATCHDOG_PID is unset or this process's id. A socket of another kind
// (vsock:) is logged and ignored.
func newNotifier(getenv func(string) string, log *slog.Logger) *notifier {
	n := &notifier{log: log}
	sock := getenv("NOTIFY_SOCKET")
	if sock == "" {
		return n
	}
	if !strings.HasPrefix(sock, "/") && !strings.HasPrefix(sock, "@") {
		log.Warn("systemd notifications off: NOTIFY_SOCKET is neither a path nor an abstract socket", "notify_socket", sock)
		return n
	}
	// Go's net package maps a leading '@' to the abstract namespace.
	n.addr = &net.UnixAddr{Name: sock, Net: "unixgram"}
	if usec := getenv("WATCHDOG_USEC"); usec != "" {
		pid := getenv("WATCHDOG_PID")
		us, err := strconv.ParseUint(usec, 10, 63)
		switch {
		case err != nil || us == 0:
			log.Warn("systemd watchdog off: WATCHDOG_USEC is not a positive number", "watchdog_usec", usec)
		case pid != "" && pid != strconv.Itoa(os.Getpid()):
			// Meant for another process (a wrapper's child, say).
		default:
			n.watchdog = time.Duration(us) * time.Microsecond
		}
	}
	return n
}

// send sends one notification, such as "READY=1". A disabled notifier
// sends nothing.
func (n *notifier) send(state string) error {
	if n.addr == nil {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %s: %w", state, err)
	}
	return nil
}

// run sends READY=1 once ready first returns nil (the daemon passes: every
// subscription up), and, with a watchdog, WATCHDOG=1 every half WATCHDOG_USEC while
// alive returns nil (what /healthz says healthy): when keyrelay is not
// alive the pings stop and systemd restarts it. It returns when ctx ends
// (the stop has begun; stopping says so).
func (n *notifier) run(ctx context.Context, ready, alive func() error) {
	if n.addr == nil {
		return
	}
	readyTick := time.NewTicker(readyPoll)
	defer readyTick.Stop()
	var dogTick <-chan time.Time
	var lastErr error // what the last watchdog check found
	if n.watchdog > 0 {
		t := time.NewTicker(n.watchdog / 2)
		defer t.Stop()
		dogTick = t.C
		lastErr = n.ping(alive, nil)
	}
	isReady := false
	checkReady := func() {
		if isReady || ready() != nil {
			return
		}
		isReady = true
		readyTick.Stop()
		if err := n.send("READY=1"); err != nil {
			n.log.Warn("cannot tell systemd keyrelay is ready", "err", err)
		}
	}
	checkReady()
	for {
		select {
		case <-ctx.Done():
			return
		case <-readyTick.C:
			checkReady()
		case <-dogTick:
			lastErr = n.ping(alive, lastErr)
		}
	}
}

// ping sends WATCHDOG=1 when alive passes, and logs when that changes
// (prev is what the previous ping found).
func (n *notifier) ping(alive func() error, prev error) error {
	err := alive()
	if err != nil {
		if prev == nil {
			n.log.Error("not alive: the systemd watchdog is no longer pinged, and will restart keyrelay", "err", err)
		}
		return err
	}
	if prev != nil {
		n.log.Info("alive again: pinging the systemd watchdog")
	}
	if err := n.send("WATCHDOG=1"); err != nil {
		n.log.Warn("cannot ping the systemd watchdog", "err", err)
	}
	return nil
}

// stopping tells systemd the stop has begun (STOPPING=1).
func (n *notifier) stopping() {
	if err := n.send("STOPPING=1"); err != nil {
		n.log.Warn("cannot tell systemd keyrelay is stopping", "err", err)
	}
}
