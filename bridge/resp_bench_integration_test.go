//go:build integration

package bridge

import (
	"context"
	"io"
	"log/slog"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/keyrelay/keyrelay/bridge/bridgetest/servers"
)

// BenchmarkReaderRedis is the daemon's read path end to end, in process, for
// a CPU profile: a Subscriber on a real redis-server (E$, no output buffer
// limit, so nothing is cut) emitting into a relay with a discarding sink,
// while `redis-benchmark -t set -P 64` writes b.N SETs at full speed. One op
// is one notification; it reports this process's CPU seconds per million
// notifications (subscriber, decode, record encoding, relay) and the share
// received. Run with an explicit count:
//
//	go test -tags integration -run '^$' -bench ReaderRedis -benchtime 1000000x -cpuprofile cpu.prof ./bridge
func BenchmarkReaderRedis(b *testing.B) {
	if _, err := exec.LookPath("redis-benchmark"); err != nil {
		b.Fatal("redis-benchmark is not installed (make test installs it)")
	}
	r, err := servers.StartRedis(b.TempDir(), "--notify-keyspace-events", "E$",
		"--client-output-buffer-limit", "pubsub 0 0 0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(r.Stop)
	relay := benchRelay(b, 1)
	s := NewSubscriber(SubscriberConfig{Options: &redis.Options{Addr: r.Addr}, Source: r.Addr,
		Patterns: []string{"__keyevent@*__:*"}, HealthInterval: time.Second},
		relay, slog.New(slog.NewTextHandler(io.Discard, nil)), relay.metrics)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for !s.Connected() {
		time.Sleep(10 * time.Millisecond)
	}
	received := relay.metrics.Received.WithLabelValues("set")
	base := testutil.ToFloat64(received)
	n := b.N
	cpu0 := cpuTime()
	b.ResetTimer()
	out, err := exec.Command("redis-benchmark", "-p", strconv.Itoa(r.Port), "-t", "set", "-P", "64",
		"-n", strconv.Itoa(n), "-r", strconv.Itoa(n), "-q").CombinedOutput()
	if err != nil {
		b.Fatalf("redis-benchmark: %v: %s", err, out)
	}
	// Wait for the stream to end: every notification, or 2 s without one.
	last, lastChange := -1.0, time.Now()
	for {
		got := testutil.ToFloat64(received) - base
		if got >= float64(n) || time.Since(lastChange) > 2*time.Second {
			break
		}
		if got != last {
			last, lastChange = got, time.Now()
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	got := testutil.ToFloat64(received) - base
	b.ReportMetric(cpu.Seconds()/float64(n)*1e6, "cpu-s/M")
	b.ReportMetric(100*got/float64(n), "%received")
}

// cpuTime is this process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
