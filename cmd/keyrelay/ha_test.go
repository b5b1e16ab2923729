//go:build integration

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyrelay/keyrelay/bridge/bridgetest"
	"github.com/keyrelay/keyrelay/sinks/awsbatch/awsbatchtest"
)

// The tests in this file run two keyrelay processes with KEYRELAY_HA=true
// against one redis-server and take the leader away in each way a leader
// goes: killed, stopped for a deploy, cut off from Redis, or doubled by a
// lost lease. In each, the union of the instances' outputs holds every
// written key, no instance wrote a gap record, and a key delivered more
// than once carries the same id every time.

const haLease = 2 * time.Second

func haEnv(addr, dir string, extra ...string) map[string]string {
	return resilienceEnv(addr, append([]string{"KEYRELAY_EVENTS", "set", "KEYRELAY_SPOOL_DIR", dir,
		"KEYRELAY_HA", "true", "KEYRELAY_HA_LEASE", haLease.String(), "KEYRELAY_MARKER_INTERVAL", "200ms",
		"KEYRELAY_LOG_LEVEL", "info", "KEYRELAY_HTTP_ADDR", ""}, extra...)...)
}

// instance is one keyrelay process whose records go to a file (HA tests,
// restart tests).
type instance struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	out    string // path of its standard output
	stderr *syncBuffer
	done   chan struct{}
}

func startInstance(t *testing.T, name string, env map[string]string) *instance {
	t.Helper()
	out := filepath.Join(t.TempDir(), name+".out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	cmd := command(t, env, "run")
	cmd.Stdout = f
	in := &instance{t: t, name: name, cmd: cmd, out: out, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = in.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	go func() { _ = cmd.Wait(); close(in.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-in.done
		if t.Failed() {
			t.Logf("%s's stderr:\n%s", name, in.stderr.String())
		}
	})
	in.waitLog(`"msg":"subscribed"`, 10*time.Second)
	return in
}

func (in *instance) waitLog(s string, timeout time.Duration) {
	in.t.Helper()
	waitUntil(in.t, timeout, in.name+" to log "+s, func() bool { return strings.Contains(in.stderr.String(), s) })
}

func (in *instance) leading() bool {
	return strings.Count(in.stderr.String(), `"msg":"ha: leading`) > strings.Count(in.stderr.String(), `"msg":"ha: standing by`)+
		strings.Count(in.stderr.String(), `"msg":"ha: handed over`)
}

// records returns the complete records the instance wrote so far.
func (in *instance) records() []testRecord {
	b, err := os.ReadFile(in.out)
	if err != nil {
		in.t.Fatal(err)
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1] // a line cut by a kill
	} else {
		b = nil
	}
	return parseRecords(in.t, bytes.NewReader(b))
}

func (in *instance) signal(sig syscall.Signal) {
	_ = in.cmd.Process.Signal(sig)
}

func (in *instance) wait(timeout time.Duration) {
	in.t.Helper()
	select {
	case <-in.done:
	case <-time.After(timeout):
		in.t.Fatalf("%s did not exit within %s", in.name, timeout)
	}
}

// checkUnion fails for every written key that no instance delivered, for
// any gap record, and for a key delivered under two ids. It returns how
// many records were delivered more than once.
func checkUnion(t *testing.T, writes []timedWrite, ins ...*instance) (dups int) {
	t.Helper()
	ids := map[string]string{}
	for _, in := range ins {
		for _, rec := range in.records() {
			if rec.Type == "gap" {
				t.Errorf("%s wrote a gap record: %+v", in.name, rec)
				continue
			}
			if rec.Key == nil {
				continue
			}
			if id, ok := ids[*rec.Key]; ok {
				dups++
				if id != rec.ID {
					t.Errorf("key %s delivered under two ids: %s and %s (%s)", *rec.Key, id, rec.ID, in.name)
				}
				continue
			}
			ids[*rec.Key] = rec.ID
		}
	}
	lost := 0
	for _, w := range writes {
		if _, ok := ids[w.key]; !ok {
			lost++
			if lost <= 10 {
				t.Errorf("key %s (written %s) delivered by no instance", w.key, w.sent.Format(time.RFC3339Nano))
			}
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d writes delivered by no instance", lost, len(writes))
	}
	return dups
}

// waitDelivered waits until the union of the outputs holds every write.
func waitDelivered(t *testing.T, writes []timedWrite, timeout time.Duration, ins ...*instance) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := map[string]bool{}
		for _, in := range ins {
			for _, rec := range in.records() {
				if rec.Key != nil {
					got[*rec.Key] = true
				}
			}
		}
		missing := 0
		for _, w := range writes {
			if !got[w.key] {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Logf("%d of %d writes still missing after %s", missing, len(writes), timeout)
			return // checkUnion names them
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// haPair starts a leader and a standby and waits until the standby holds
// only what the leader has not reported delivered.
func haPair(t *testing.T, envA, envB map[string]string) (a, b *instance) {
	a = startInstance(t, "A", envA)
	a.waitLog(`"msg":"ha: leading`, 5*time.Second)
	b = startInstance(t, "B", envB)
	time.Sleep(time.Second) // a few markers: the standby can place what it holds
	if b.leading() {
		t.Fatalf("B leads beside A")
	}
	return a, b
}

// underLoad writes keys through c about every millisecond while fn runs,
// and for a second before and after.
func underLoad(t *testing.T, c redis.Cmdable, fn func()) []timedWrite {
	t.Helper()
	var writes timedWrites
	stop := make(chan struct{})
	done := pace(c, "ha:", &writes, stop)
	time.Sleep(time.Second)
	fn()
	time.Sleep(time.Second)
	close(stop)
	<-done
	return writes.all()
}

func TestHAKillLeader(t *testing.T) {
	r := bridgetest.StartRedis(t)
	httpB := fmt.Sprintf("127.0.0.1:%d", bridgetest.FreePort(t))
	a, b := haPair(t, haEnv(r.Addr, t.TempDir()), haEnv(r.Addr, t.TempDir(), "KEYRELAY_HTTP_ADDR", httpB))
	// A healthy standby is ready, and says it is not the leader.
	if code, body := getHTTP("http://" + httpB + "/readyz"); code != 200 {
		t.Errorf("standby /readyz = %d %s, want 200", code, body)
	}
	if v, ok := metricValue(scrapeMetrics(t, httpB), "keyrelay_leader"); !ok || v != 0 {
		t.Errorf("standby keyrelay_leader = %v (%v), want 0", v, ok)
	}
	var killed, took time.Time
	writes := underLoad(t, newWriter(t, r.Addr), func() {
		killed = time.Now()
		a.signal(syscall.SIGKILL)
		a.wait(5 * time.Second)
		waitUntil(t, 3*haLease, "B to take over", b.leading)
		took = time.Now()
	})
	t.Logf("takeover %s after kill -9 (lease %s)", took.Sub(killed).Round(time.Millisecond), haLease)
	m := scrapeMetrics(t, httpB)
	if v, _ := metricValue(m, "keyrelay_leader"); v != 1 {
		t.Errorf("new leader's keyrelay_leader = %v, want 1", v)
	}
	if v, _ := metricValue(m, "keyrelay_ha_epoch"); v != 2 {
		t.Errorf("new leader's keyrelay_ha_epoch = %v, want 2", v)
	}
	waitDelivered(t, writes, 10*time.Second, a, b)
	dups := checkUnion(t, writes, a, b)
	t.Logf("%d writes, %d delivered twice (same id)", len(writes), dups)
}

func TestHARollingDeploy(t *testing.T) {
	r := bridgetest.StartRedis(t)
	envA := haEnv(r.Addr, t.TempDir())
	a, b := haPair(t, envA, haEnv(r.Addr, t.TempDir()))
	// keyrelay check names the leader.
	m := regexp.MustCompile(`"msg":"ha: on[^\n]*"instance":"([0-9a-f]+)"`).FindStringSubmatch(a.stderr.String())
	if m == nil {
		t.Fatalf("A did not log its instance id")
	}
	out, _ := command(t, envA, "check").CombinedOutput()
	if !strings.Contains(string(out), "ok   ha: leader "+m[1]+", epoch 1") {
		t.Errorf("keyrelay check does not name A (%s) as the leader:\n%s", m[1], out)
	}
	var took time.Duration
	writes := underLoad(t, newWriter(t, r.Addr), func() {
		start := time.Now()
		a.signal(syscall.SIGTERM)
		waitUntil(t, 3*haLease, "B to take over", b.leading)
		took = time.Since(start)
		a.wait(10 * time.Second)
	})
	if code := a.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("A exited with %d after SIGTERM", code)
	}
	a.waitLog(`"msg":"ha: handed over`, time.Second)
	t.Logf("takeover %s after SIGTERM", took.Round(time.Millisecond))
	waitDelivered(t, writes, 10*time.Second, a, b)
	dups := checkUnion(t, writes, a, b)
	t.Logf("%d writes, %d delivered twice (same id)", len(writes), dups)
}

func TestHALeaderCutOff(t *testing.T) {
	r := bridgetest.StartRedis(t)
	fw := bridgetest.StartForwarder(t, r.Addr)
	a, b := haPair(t, haEnv(fw.Addr, t.TempDir()), haEnv(r.Addr, t.TempDir()))
	var took time.Duration
	writes := underLoad(t, newWriter(t, r.Addr), func() {
		start := time.Now()
		fw.Stall()
		fw.Pause()
		waitUntil(t, 3*haLease, "B to take over", b.leading)
		took = time.Since(start)
		waitUntil(t, haLease, "A to stand by", func() bool { return !a.leading() })
		fw.Resume()
	})
	t.Logf("takeover %s after the partition", took.Round(time.Millisecond))
	if !strings.Contains(a.stderr.String(), "the lease could not be renewed") {
		t.Errorf("A did not stand by for want of renewal")
	}
	waitDelivered(t, writes, 10*time.Second, a, b)
	dups := checkUnion(t, writes, a, b)
	t.Logf("%d writes, %d delivered twice (same id)", len(writes), dups)
}

func TestHASplitBrain(t *testing.T) {
	r := bridgetest.StartRedis(t)
	a, b := haPair(t, haEnv(r.Addr, t.TempDir()), haEnv(r.Addr, t.TempDir()))
	c := newWriter(t, r.Addr)
	writes := underLoad(t, newWriter(t, r.Addr), func() {
		// The lease vanishes (a failover lost its last write): B takes
		// it while A still believes it leads, until A's next renewal.
		if err := c.Del(context.Background(), "keyrelay:keyrelay:{ha}:leader").Err(); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 3*haLease, "B to take over", b.leading)
		waitUntil(t, haLease, "A to stand by", func() bool { return !a.leading() })
	})
	waitDelivered(t, writes, 10*time.Second, a, b)
	dups := checkUnion(t, writes, a, b)
	t.Logf("%d writes, %d delivered twice (same id)", len(writes), dups)
}

// TestHAFIFOExactlyOnce: two instances publish into one SQS FIFO queue
// (fauxqs); the leader is killed under load. The record id is the
// message's deduplication id, so the queue holds every key exactly once.
func TestHAFIFOExactlyOnce(t *testing.T) {
	r := bridgetest.StartRedis(t)
	bridgetest.StartFauxqs(t)
	sqsc, _ := awsbatchtest.Clients(t)
	queue, _ := awsbatchtest.CreateQueue(t, sqsc, awsbatchtest.UniqueName("ha", true), nil)
	sqsEnv := func() map[string]string {
		return haEnv(r.Addr, t.TempDir(), "KEYRELAY_SINKS", "sqs", "KEYRELAY_SQS_QUEUE_URL", queue)
	}
	a, b := haPair(t, sqsEnv(), sqsEnv())
	writes := underLoad(t, newWriter(t, r.Addr), func() {
		a.signal(syscall.SIGKILL)
		a.wait(5 * time.Second)
		waitUntil(t, 3*haLease, "B to take over", b.leading)
	})
	msgs := awsbatchtest.NewReader(t, sqsc, queue).Wait(len(writes), 20*time.Second)
	got := map[string]int{}
	for _, m := range msgs {
		recs := parseRecords(t, strings.NewReader(m.Body+"\n"))
		for _, rec := range recs {
			if rec.Type == "gap" {
				t.Errorf("gap record in the queue: %s", m.Body)
			}
			if rec.Key != nil {
				got[*rec.Key]++
			}
		}
	}
	for _, w := range writes {
		if n := got[w.key]; n != 1 {
			t.Errorf("key %s is %d times in the FIFO queue, want once", w.key, n)
		}
	}
	t.Logf("%d writes, %d messages", len(writes), len(msgs))
}

// TestHAQuietTakeover: on a cache where nothing was written while the
// standby stood by, the leader's position still moves past the markers, so
// the standby's own start (a restart gap it holds) is not reported when it
// takes over: the leader was listening.
func TestHAQuietTakeover(t *testing.T) {
	r := bridgetest.StartRedis(t)
	a := startInstance(t, "A", haEnv(r.Addr, t.TempDir()))
	a.waitLog(`"msg":"ha: leading`, 5*time.Second)
	time.Sleep(time.Second) // A's alive key: B's start is a restart gap
	// Unless A refreshes its alive key between B's subscription and B's
	// read of it: then B rightly holds no gap (the key is newer than its
	// subscription), and starts again.
	var b *instance
	for attempt := 1; ; attempt++ {
		b = startInstance(t, "B", haEnv(r.Addr, t.TempDir(), "KEYRELAY_LOG_LEVEL", "debug"))
		time.Sleep(time.Second)
		if strings.Contains(b.stderr.String(), "standby: gap held") {
			break
		}
		if attempt == 3 {
			t.Fatalf("B held no restart gap in %d starts: the test proves nothing\n%s", attempt, b.stderr.String())
		}
		b.signal(syscall.SIGKILL)
		b.wait(5 * time.Second)
	}
	a.signal(syscall.SIGKILL)
	a.wait(5 * time.Second)
	waitUntil(t, 3*haLease, "B to take over", b.leading)
	writes := writeTimed(t, r, "quiet:", 20)
	waitDelivered(t, writes, 10*time.Second, a, b)
	checkUnion(t, writes, a, b)
}
