//go:build integration

package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/bridge/bridgetest"
	"github.com/keyrelay/keyrelay/bridge/spool"
)

// TestSpoolOverflowSurvivesKill: a 256 KiB spool behind a stdout nobody
// reads, 3 000 writes beyond the bound under each overflow policy, kill -9
// while the stuck sink still holds back the overflow gap record, restart
// with stdout read. The count of the dropped records survived in the cursor
// file: every written key is delivered (before the kill or after) or lies
// inside an overflow gap window, and the gap records count the lost keys
// (a gap record repeated after the kill carries the same id): exactly under
// drop-newest; under drop-oldest, plus at most the records of the batch the
// stuck sink was writing (it wrote some into the pipe before the kill). Under
// drop-oldest a reconnect gap record in a skipped file survives the kill.
func TestSpoolOverflowSurvivesKill(t *testing.T) {
	for _, policy := range []string{"drop-oldest", "drop-newest"} {
		t.Run(policy, func(t *testing.T) { testOverflowSurvivesKill(t, policy) })
	}
}

func testOverflowSurvivesKill(t *testing.T, policy string) {
	const n = 3000
	r := bridgetest.StartRedis(t)
	c := newWriter(t, r.Addr)
	dir := t.TempDir()
	env := spoolEnv(r.Addr, dir, "KEYRELAY_OVERFLOW", policy,
		"KEYRELAY_SPOOL_SEGMENT_BYTES", "65536", "KEYRELAY_SPOOL_MAX_BYTES", "262144")

	u := startUnread(t, env)
	stderr := u.stderr
	var keys []string
	if policy == "drop-oldest" {
		// A gap record in the middle of the spool, in a file the bound
		// will skip: it must survive the kill too.
		keys = writeKeys(t, c, "ovf:a:", n/2)
		if k, err := r.Client(0).ClientKillByFilter(context.Background(), "TYPE", "pubsub").Result(); err != nil || k < 1 {
			t.Fatalf("CLIENT KILL TYPE pubsub = %d, %v", k, err)
		}
		waitUntil(t, 10*time.Second, "the second subscription", func() bool {
			return strings.Count(stderr.String(), `"msg":"subscribed"`) >= 2
		})
		keys = append(keys, writeKeys(t, c, "ovf:b:", n-n/2)...)
	} else {
		keys = writeKeys(t, c, "ovf:", n)
	}
	waitUntil(t, 20*time.Second, "an overflow counted in the cursor file", func() bool {
		st, err := spool.Inspect(dir)
		return err == nil && len(st.Cursors) == 1 && st.Cursors[0].Overflow > 0 &&
			strings.Contains(stderr.String(), "spool overflow dropped records")
	})
	time.Sleep(2 * time.Second) // the colleague's scenario: kill -9 two seconds in
	st, _ := spool.Inspect(dir)
	before := u.kill()
	t.Logf("killed: %d records in the pipe, spool records %d..%d, cursor %+v",
		len(before), st.First, st.Last, st.Cursors[0])
	if len(gapsOf(before, "overflow")) != 0 {
		t.Fatalf("the overflow gap record reached the stuck sink before the kill: nothing to prove")
	}

	d := startDaemon(t, env)
	all := func(recs []testRecord) []testRecord {
		seen := map[string]bool{}
		var out []testRecord
		for _, rec := range append(append([]testRecord(nil), before...), recs...) {
			if !seen[rec.ID] {
				seen[rec.ID] = true
				out = append(out, rec)
			}
		}
		return out
	}
	d.waitRecords(20*time.Second, func(recs []testRecord) bool { return accounted(keys, all(recs)) })
	time.Sleep(300 * time.Millisecond) // a late record or gap would show now
	recs := all(d.records())
	if len(gapsOf(d.records(), "overflow")) == 0 {
		t.Errorf("no overflow gap record after the restart")
	}
	var lost int
	if policy == "drop-newest" {
		// Nothing in flight is passed: the batch the stuck sink had is
		// read again after the restart. Exact.
		lost = checkLostInWindows(t, keys, recs, "overflow")
	} else {
		// drop-oldest passed the batch the stuck sink was writing when it
		// was killed: its records count as lost (the sink may have taken
		// some of them, here those in the pipe). Every lost key inside a
		// window; the count exact up to those.
		var counted int64
		lost, counted = lostInWindows(t, keys, recs, "overflow")
		inPipe := int64(len(keysOf(before, "set")))
		if counted < int64(lost) || counted > int64(lost)+inPipe {
			t.Errorf("overflow gap records count %d, %d keys lost, %d delivered by the killed process", counted, lost, inPipe)
		}
		t.Logf("counted %d = %d lost + %d of the %d records the killed process wrote into the pipe while a drop passed them",
			counted, lost, counted-int64(lost), inPipe)
	}
	if g := gapsOf(recs, "reconnect"); policy == "drop-oldest" && len(g) != 1 {
		t.Errorf("%d reconnect gap records delivered, want 1 (a gap record in a skipped file survives the kill)", len(g))
	}
	if lost == 0 {
		t.Fatalf("nothing dropped: the bound was not reached")
	}
	if !strings.Contains(d.Stderr.String(), "spool overflow dropped records") {
		t.Errorf("the restart does not log the overflow it reports")
	}
	if err := d.Stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	if st, err := spool.Inspect(dir); err != nil || st.Cursors[0].Overflow != 0 {
		t.Errorf("after the overflow was reported and keyrelay stopped: %+v, %v", st.Cursors, err)
	}
	t.Logf("%s: %d keys written, %d delivered, %d dropped in %d overflow gap records",
		policy, n, len(keysOf(recs, "set")), lost, len(gapsOf(recs, "overflow")))
}
