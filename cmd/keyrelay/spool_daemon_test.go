//go:build integration

package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/bridge/bridgetest"
)

// The tests in this file check the durable spool through the daemon, key by
// key: its bound under each overflow policy, a slow sink beside a fast one,
// and a spool directory damaged after a kill -9.

// pipeOut is a standard output that is a real pipe: the daemon's writes
// block once the pipe's buffer (64 KiB on Linux) is full, until Drain starts
// reading it into the daemon's Stdout.
type pipeOut struct {
	r, w *os.File
	once sync.Once
	done chan struct{}
}

// newPipeOut returns a pipe nobody reads yet; it is drained at the end of
// the test at the latest, so that the daemon can stop.
func newPipeOut(t *testing.T) *pipeOut {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &pipeOut{r: r, w: w, done: make(chan struct{})}
	t.Cleanup(func() {
		p.Drain(io.Discard)
		w.Close()
		<-p.done
		r.Close()
	})
	return p
}

// Drain starts copying what the pipe holds, and what comes, to out, a whole
// line per Write (out is parsed while the copy runs).
func (p *pipeOut) Drain(out io.Writer) {
	p.once.Do(func() {
		go func() {
			defer close(p.done)
			br := bufio.NewReaderSize(p.r, 1<<20)
			for {
				line, err := br.ReadBytes('\n')
				if err != nil {
					return // a line cut short by the end is not a record
				}
				_, _ = out.Write(line)
			}
		}()
	})
}

// recTime parses a record's time field.
func recTime(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("record time %q: %v", s, err)
	}
	return tm
}

// checkLostInWindows checks every key of keys (in the order Redis published
// them) that recs do not deliver against the gap records of the given
// reason: a lost key was received between the delivered keys written just
// before and just after it, so some gap window must overlap that interval.
// The gaps' counts must add up to the lost keys exactly. It returns the
// number of lost keys.
func checkLostInWindows(t *testing.T, keys []string, recs []testRecord, reason string) int {
	t.Helper()
	at := map[string]time.Time{}
	for _, r := range recs {
		if r.Type == "keyevent" && r.Key != nil {
			at[*r.Key] = recTime(t, r.Time)
		}
	}
	var gaps []gapWindow
	var counted int64
	for _, g := range ofType(recs, "gap") {
		if g.Reason != reason {
			continue
		}
		since, until := checkGap(t, g, reason)
		gaps = append(gaps, gapWindow{since, until, reason})
		counted += g.Dropped
	}
	lost, outside := 0, 0
	for i, k := range keys {
		if _, ok := at[k]; ok {
			continue
		}
		lost++
		var lo, hi time.Time // zero hi: no delivered key after it
		for j := i - 1; j >= 0; j-- {
			if tm, ok := at[keys[j]]; ok {
				lo = tm
				break
			}
		}
		for j := i + 1; j < len(keys); j++ {
			if tm, ok := at[keys[j]]; ok {
				hi = tm
				break
			}
		}
		inside := false
		for _, g := range gaps {
			if !g.until.Before(lo) && (hi.IsZero() || !g.since.After(hi)) {
				inside = true
				break
			}
		}
		if !inside {
			outside++
			if outside <= 5 {
				t.Errorf("key %s lost (received between %s and %s) outside every %s gap window %v",
					k, lo.Format(time.RFC3339Nano), hi.Format(time.RFC3339Nano), reason, gaps)
			}
		}
	}
	if outside > 0 {
		t.Errorf("%d of %d lost keys lie outside every %s gap window", outside, lost, reason)
	}
	if counted != int64(lost) {
		t.Errorf("%s gap records count %d dropped, but %d of %d keys were not delivered", reason, counted, lost, len(keys))
	}
	return lost
}

// TestSpoolDaemonOverflow: the stdout sink is a pipe nobody reads and the
// spool holds four 64 KiB segments. Writes go well beyond the bound; the
// subscription is broken in the middle, so that a gap record (reconnect)
// waits in the spool among the records. Then the pipe is read: every key is
// delivered or lies inside an overflow gap window, the overflow counts are
// exact, the reconnect gap record is delivered (a gap record is never
// dropped), and each policy keeps its end of the stream.
func TestSpoolDaemonOverflow(t *testing.T) {
	for _, policy := range []string{"drop-oldest", "drop-newest"} {
		t.Run(policy, func(t *testing.T) {
			const before, after = 1500, 4500
			r := bridgetest.StartRedis(t)
			out := newPipeOut(t)
			d := startDaemonTo(t, spoolEnv(r.Addr, t.TempDir(), "KEYRELAY_OVERFLOW", policy,
				"KEYRELAY_SPOOL_SEGMENT_BYTES", "65536", "KEYRELAY_SPOOL_MAX_BYTES", "262144"),
				func(*syncBuffer) io.Writer { return out.w })
			c := newWriter(t, r.Addr)
			keys := writeKeys(t, c, "a:", before)
			n, err := r.Client(0).ClientKillByFilter(context.Background(), "TYPE", "pubsub").Result()
			if err != nil || n < 1 {
				t.Fatalf("CLIENT KILL TYPE pubsub = %d, %v", n, err)
			}
			waitUntil(t, 10*time.Second, "the second subscription", func() bool {
				return strings.Count(d.Stderr.String(), `"msg":"subscribed"`) >= 2
			})
			keys = append(keys, writeKeys(t, c, "b:", after)...)
			d.waitLog("spool overflow dropped records", 10*time.Second)
			if got := len(d.records()); got != 0 {
				t.Fatalf("%d records read from a pipe nobody reads", got)
			}

			out.Drain(d.Stdout)
			d.waitRecords(15*time.Second, func(recs []testRecord) bool {
				var dropped int64
				for _, g := range gapsOf(recs, "overflow") {
					dropped += g.Dropped
				}
				return int64(len(keysOf(recs, "set")))+dropped >= int64(len(keys))
			})
			// The backlog is out: keys written now are all delivered.
			last := writeKeys(t, c, "c:", 10)
			keys = append(keys, last...)
			d.waitRecords(10*time.Second, func(recs []testRecord) bool {
				got := keysOf(recs, "set")
				for _, k := range last {
					if got[k] == 0 {
						return false
					}
				}
				return true
			})
			time.Sleep(300 * time.Millisecond) // a late record or gap would show now
			recs := d.records()
			checkUnique(t, recs, "set")
			lost := checkLostInWindows(t, keys, recs, "overflow")
			if lost == 0 {
				t.Fatalf("nothing dropped: the bound was not reached")
			}
			if g := gapsOf(recs, "reconnect"); len(g) != 1 {
				t.Errorf("%d reconnect gap records delivered, want 1 (a gap record in the spool is never dropped)", len(g))
			}
			for _, g := range ofType(recs, "gap") {
				if g.Reason != "overflow" && g.Reason != "reconnect" {
					t.Errorf("unexpected gap record %+v", g)
				}
			}
			got := keysOf(recs, "set")
			ends := map[string][]string{"drop-newest": keys[:10], "drop-oldest": keys[len(keys)-30:]}
			for _, k := range ends[policy] {
				if got[k] == 0 {
					t.Errorf("%s: key %s not delivered", policy, k)
				}
			}
			t.Logf("%s: %d keys written, %d delivered, %d dropped in %d overflow gap records",
				policy, len(keys), len(got), lost, len(gapsOf(recs, "overflow")))
		})
	}
}
