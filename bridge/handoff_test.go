package bridge

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestHandoff: records come out in order, encoded as the spool stores them;
// a full hand-off refuses a record at once, or makes a waiting writer wait
// for the appender's next take; close refuses later records and releases
// waiting writers.
func TestHandoff(t *testing.T) {
	h := newHandoff(2)
	now := time.Unix(1700000000, 0)
	rec := func(key string) *Record {
		return &Record{Type: TypeKeyEvent, ID: "01JDQ3S4X4M5Q0S8E6D2C9K1Z" + key, Time: now, Source: "s", Event: "set", Key: key}
	}
	for _, k := range []string{"a", "b"} {
		r := rec(k)
		if !h.put(r, r.AppendJSON(nil), nil, false) {
			t.Fatalf("put %s refused with room", k)
		}
	}
	select {
	case <-h.wake:
	default:
		t.Fatal("no wake-up after the first record")
	}
	if r := rec("c"); h.put(r, r.AppendJSON(nil), nil, false) {
		t.Fatal("put accepted past the bound")
	}
	waited := make(chan bool)
	go func() { r := rec("d"); waited <- h.put(r, r.AppendJSON(nil), nil, true) }()
	select {
	case <-waited:
		t.Fatal("a waiting put returned while full")
	case <-time.After(20 * time.Millisecond):
	}
	var g handBatch
	if h.take(&g) {
		t.Fatal("take reports closed")
	}
	if !<-waited {
		t.Fatal("the waiting put was refused after a take")
	}
	var keys string
	for i, p := range g.payloads {
		e, err := decodeSpoolEntry(p)
		if err != nil {
			t.Fatal(err)
		}
		if e.Record.Key != g.meta[i].id[len(g.meta[i].id)-1:] || string(e.Body) != string(e.Record.AppendJSON(nil)) {
			t.Fatalf("payload %d: %+v does not match its meta %+v", i, e.Record, g.meta[i])
		}
		keys += e.Record.Key
	}
	if keys != "ab" {
		t.Fatalf("took %q, want ab", keys)
	}
	go func() { r := rec("e"); waited <- h.put(r, r.AppendJSON(nil), nil, true) }() // room: 1 of 2 used
	if !<-waited {
		t.Fatal("put refused with room")
	}
	go func() { r := rec("f"); waited <- h.put(r, r.AppendJSON(nil), nil, true) }() // full: waits
	time.Sleep(20 * time.Millisecond)
	h.close()
	if <-waited {
		t.Fatal("a put waiting at close was accepted")
	}
	if !h.take(&g) || len(g.payloads) != 2 {
		t.Fatalf("take after close: %d records (want d, e) and closed", len(g.payloads))
	}
	if r := rec("g"); h.put(r, r.AppendJSON(nil), nil, true) {
		t.Fatal("put after close accepted")
	}
}

// TestHandoffBlocks: records across many blocks, and one larger than a
// block, come out whole and in order, group after group.
func TestHandoffBlocks(t *testing.T) {
	h := newHandoff(100000)
	now := time.Unix(1700000000, 0)
	var g handBatch
	for round := range 3 {
		var want [][]byte
		for i := range 5000 {
			key := strings.Repeat("k", i%97)
			if i == 777 {
				key = strings.Repeat("big", handBlock/2) // 1.5 blocks
			}
			r := &Record{Type: TypeKeyEvent, ID: "01JDQ3S4X4M5Q0S8E6D2C9K1ZB", Time: now, Source: "s", Event: "set", Key: key}
			body := r.AppendJSON(nil)
			want = append(want, body)
			if !h.put(r, body, nil, false) {
				t.Fatal("put refused with room")
			}
		}
		h.take(&g)
		if len(g.payloads) != len(want) {
			t.Fatalf("round %d: took %d records, want %d", round, len(g.payloads), len(want))
		}
		for i, p := range g.payloads {
			e, err := decodeSpoolEntry(p)
			if err != nil || !bytes.Equal(e.Body, want[i]) {
				t.Fatalf("round %d, record %d: %v, body %.60q, want %.60q", round, i, err, e.Body, want[i])
			}
		}
	}
}
