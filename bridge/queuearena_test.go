package bridge

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestQueueArenaRoundTrip: what Take returns is what was pushed, in order,
// across chunks: key events with plain, escaped, invalid-UTF-8 and long
// keys, gap records, records the compact form cannot hold, and gap records
// drop-oldest puts back in front.
func TestQueueArenaRoundTrip(t *testing.T) {
	ids := NewIDGenerator()
	now := time.Now()
	keys := []string{"k", "session:1234", "quote\"and\\slash", "\xff\xfebinary", "tab\tnewline\n", strings.Repeat("x", 3000), ""}
	var want []*Entry
	for i := range 2000 { // about 10 chunks
		rec := Record{Type: TypeKeyEvent, ID: ids.New(now), Time: now.Add(time.Duration(i) * time.Microsecond),
			Source: "10.0.0." + strconv.Itoa(i%3) + ":6379", DB: i % 16, Event: []string{"set", "expired", "del"}[i%3],
			Key: keys[i%len(keys)] + strconv.Itoa(i)}
		switch i % 97 {
		case 5:
			rec = Record{Type: TypeGap, ID: ids.New(now), Time: now, Source: "s", Since: now, Until: now, Reason: GapOverflow, Dropped: 3}
		case 7:
			rec.DB = -1 << 40 // not an int32: kept by pointer
		}
		want = append(want, newEntry(&rec))
	}
	q := NewQueue(len(want), 0, DropNewest)
	for _, e := range want {
		q.Push(e)
	}
	var got []*Entry
	for len(got) < len(want) {
		got = append(got, q.Take(context.Background(), Limits{MaxEntries: 7}, func(e *Entry) int { return len(e.Body) }, 0)...)
	}
	if n, b := q.Len(); n != 0 || b != 0 {
		t.Fatalf("Len = %d, %d after draining", n, b)
	}
	for i := range want {
		w, g := want[i], got[i]
		if !bytes.Equal(w.Body, g.Body) {
			t.Fatalf("entry %d: body %s, want %s", i, g.Body, w.Body)
		}
		wr, gr := w.Record, g.Record
		if !wr.Time.Equal(gr.Time) {
			t.Fatalf("entry %d: time %v, want %v", i, gr.Time, wr.Time)
		}
		wr.Time, gr.Time = time.Time{}, time.Time{}
		if wr != gr {
			t.Fatalf("entry %d: record %+v, want %+v", i, gr, wr)
		}
		if !bytes.Equal(g.Record.AppendJSON(nil), w.Body) {
			t.Fatalf("entry %d: the rebuilt record encodes differently", i)
		}
	}
}

// TestQueueArenaDropOldestFront: gap records put back in front by
// drop-oldest come out first, then the rest in order.
func TestQueueArenaDropOldestFront(t *testing.T) {
	ids := NewIDGenerator()
	now := time.Now()
	ev := func(i int) *Entry {
		return newEntry(&Record{Type: TypeKeyEvent, ID: ids.New(now), Time: now.Add(time.Duration(i)), Source: "s", Event: "set", Key: "k" + strconv.Itoa(i)})
	}
	gap := newEntry(&Record{Type: TypeGap, ID: ids.New(now), Time: now, Source: "s", Reason: GapReconnect})
	q := NewQueue(3, 0, DropOldest)
	q.PushForce(gap)
	q.Push(ev(0))
	q.Push(ev(1))
	q.Push(ev(2)) // full: takes the gap out, puts it back in front
	q.Push(ev(3)) // full: the same, then drops 0
	batch := q.Take(context.Background(), Limits{MaxEntries: 10}, func(e *Entry) int { return len(e.Body) }, 0)
	var got []string
	for _, e := range batch {
		got = append(got, e.Record.Type+":"+e.Record.Key)
	}
	if strings.Join(got, ",") != "gap:,keyevent:k1,keyevent:k2,keyevent:k3" {
		t.Fatalf("took %v", got)
	}
}
