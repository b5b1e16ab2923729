package bridge

import (
	"bytes"
	"testing"
	"time"
)

func spoolEntriesForTest() []*Entry {
	t0 := time.Date(2026, 12, 2, 6, 0, 0, 123456789, time.UTC)
	recs := []Record{
		{Type: TypeKeyEvent, ID: "01JX", Time: t0, Source: "10.0.0.1:6379", DB: 3, Event: "expired", Key: "session:42"},
		{Type: TypeKeyEvent, ID: "01JY", Time: t0, Source: "h:1", DB: 0, Event: "set", Key: "\xff\x00bin\n"},
		{Type: TypeKeyEvent, ID: "", Time: time.Time{}, Source: "", Event: "", Key: ""},
		{Type: TypeGap, ID: "01JZ", Time: t0, Source: "h:1", Since: t0.Add(-time.Second), Until: t0, Reason: GapOverflow, Dropped: 1234},
		{Type: TypeGap, ID: "01K0", Time: t0, Source: "h:1", Reason: GapRestart},
	}
	var out []*Entry
	for i := range recs {
		out = append(out, newEntry(&recs[i]))
	}
	return out
}

func sameEntry(t *testing.T, got, want *Entry) {
	t.Helper()
	g, w := got.Record, want.Record
	if g.Type != w.Type || g.ID != w.ID || !g.Time.Equal(w.Time) || g.Source != w.Source ||
		g.DB != w.DB || g.Event != w.Event || g.Key != w.Key || !g.Since.Equal(w.Since) ||
		!g.Until.Equal(w.Until) || g.Reason != w.Reason || g.Dropped != w.Dropped {
		t.Errorf("record %+v, want %+v", g, w)
	}
	if !bytes.Equal(got.Body, want.Body) {
		t.Errorf("body %s, want %s", got.Body, want.Body)
	}
}

func TestSpoolEntryRoundTrip(t *testing.T) {
	for _, e := range spoolEntriesForTest() {
		b := encodeSpoolEntry(nil, e)
		if b[0] != spoolVersion {
			t.Fatalf("version byte %d", b[0])
		}
		got, err := decodeSpoolEntry(b)
		if err != nil {
			t.Fatalf("decode %+v: %v", e.Record, err)
		}
		sameEntry(t, got, e)
		// Every strict prefix is malformed, never a panic or a shorter record.
		for i := range len(b) {
			if _, err := decodeSpoolEntry(b[:i]); err == nil {
				t.Errorf("prefix of %d/%d bytes decoded", i, len(b))
			}
		}
		if _, err := decodeSpoolEntry(append(b, 0)); err == nil {
			t.Error("trailing byte accepted")
		}
	}
	b := encodeSpoolEntry(nil, spoolEntriesForTest()[0])
	b[0] = 2
	if _, err := decodeSpoolEntry(b); err == nil {
		t.Error("version 2 decoded")
	}
}

func FuzzSpoolEntry(f *testing.F) {
	for _, e := range spoolEntriesForTest() {
		f.Add(encodeSpoolEntry(nil, e))
	}
	f.Add([]byte{})
	f.Add([]byte{1, 7})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeSpoolEntry(b)
		if err != nil {
			return
		}
		again, err := decodeSpoolEntry(encodeSpoolEntry(nil, e))
		if err != nil {
			t.Fatalf("re-encoding of a decoded record does not decode: %v", err)
		}
		sameEntry(t, again, e)
	})
}
