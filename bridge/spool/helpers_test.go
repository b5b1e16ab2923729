package spool

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// testOptions: small segments, no background work unless a test asks.
func testOptions() Options {
	return Options{
		SegmentBytes:     4 << 10,
		MaxBytes:         8 << 20,
		SyncPeriod:       time.Hour,
		CheckpointPeriod: time.Hour,
		Now:              newClock().Now,
	}
}

// clock is a fake clock that advances 1 ms per reading.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 23, 18, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

func openLog(t testing.TB, dir string, o Options) *Log {
	t.Helper()
	l, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// payload is the deterministic 200-byte body of record i.
func payload(i uint64) []byte {
	b := bytes.Repeat([]byte{'a' + byte(i%26)}, 200)
	copy(b, fmt.Sprintf("record %08d|", i))
	return b
}

// appendRecords appends records from..to (their payloads) in batches.
func appendRecords(t testing.TB, l *Log, from, to uint64, batch int) {
	t.Helper()
	for i := from; i <= to; {
		var ps [][]byte
		for ; i <= to && len(ps) < batch; i++ {
			ps = append(ps, payload(i))
		}
		first, err := l.Append(ps)
		if err != nil {
			t.Fatalf("Append at %d: %v", i, err)
		}
		if want := i - uint64(len(ps)); first != want {
			t.Fatalf("Append: first %d, want %d", first, want)
		}
	}
}

// readN reads until n records (or lost runs) are handed out.
func readN(t testing.TB, c *Cursor, n, max int) []Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out []Record
	for len(out) < n {
		recs, err := c.Next(ctx, min(max, n-len(out)), 0)
		if err != nil {
			t.Fatalf("Next after %d of %d records: %v", len(out), n, err)
		}
		out = append(out, recs...)
	}
	return out
}

// expectNothing checks that Next has nothing more to hand out.
func expectNothing(t testing.TB, c *Cursor) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if recs, err := c.Next(ctx, 10, 0); err != context.DeadlineExceeded {
		t.Fatalf("Next: %d records (first %+v), %v; want nothing", len(recs), first(recs), err)
	}
}

func first(recs []Record) any {
	if len(recs) == 0 {
		return nil
	}
	return recs[0].Seq
}

// checkRecords checks that recs are the records from..to, with their payloads.
func checkRecords(t testing.TB, recs []Record, from, to uint64) {
	t.Helper()
	if uint64(len(recs)) != to-from+1 {
		t.Fatalf("%d records, want %d (%d..%d)", len(recs), to-from+1, from, to)
	}
	for i, r := range recs {
		want := from + uint64(i)
		if r.Lost != nil || r.Seq != want || !bytes.Equal(r.Data, payload(want)) {
			t.Fatalf("record %d: seq %d lost %+v data %.20q; want seq %d", i, r.Seq, r.Lost, r.Data, want)
		}
		if r.Time.IsZero() {
			t.Fatalf("record %d: zero time", r.Seq)
		}
	}
}

// segFiles returns the names of the segment files in dir, in order.
func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	return filesWith(t, dir, segSuffix)
}

func filesWith(t testing.TB, dir, suffix string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), suffix) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// crash abandons l as a killed process would: no checkpoint, no fsync, no
// Close; the kernel's page cache (the files) keeps what was written.
func crash(l *Log) {
	l.halt()
	l.wmu.Lock()
	if l.active != nil {
		l.active.Close()
		l.active = nil
	}
	for _, s := range l.sealed {
		s.f.Close()
	}
	l.wmu.Unlock()
	l.lock.Close()
}

// frameOffset returns the offset of record seq in a segment of records of
// 200-byte payloads starting at base.
func frameOffset(base, seq uint64) int64 {
	return segHeaderSize + int64(seq-base)*frameSize(200)
}

func modifyFile(t testing.TB, path string, f func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, f(b), 0o640); err != nil {
		t.Fatal(err)
	}
}

func lastSeg(t testing.TB, dir string) string {
	t.Helper()
	segs := segFiles(t, dir)
	if len(segs) == 0 {
		t.Fatal("no segment")
	}
	return filepath.Join(dir, segs[len(segs)-1])
}
