package bridge_test

// The record JSON decoded as a consumer decodes it, with the record parser
// every test shares (bridgetest.ParseRecord); an external test package,
// since bridgetest imports bridge.

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/bridge/bridgetest"
)

// parseKey decodes b and returns the key bytes a consumer recovers from it.
func parseKey(t *testing.T, b []byte) (bridgetest.Record, string) {
	t.Helper()
	d, err := bridgetest.ParseRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	key, ok, err := d.DecodeKey()
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatalf("record has neither key nor key_base64: %s", b)
	}
	return d, key
}

func TestRecordJSONRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 23, 18, 16, 53, 458622123, time.FixedZone("x", 3600))
	for _, key := range bridge.OddKeys {
		r := bridge.Record{Type: bridge.TypeKeyEvent, ID: "01JDQ3S4X4M5Q0S8E6D2C9K1ZB", Time: at,
			Source: "my-cache:6379", DB: 3, Event: "expired", Key: key}
		b := r.AppendJSON(nil)
		if !json.Valid(b) {
			t.Fatalf("key %q: invalid JSON %s", key, b)
		}
		if bytes.ContainsAny(b, "\n\r") {
			t.Fatalf("key %q: raw newline in record", key)
		}
		d, got := parseKey(t, b)
		if got != key {
			t.Errorf("key %q came back as %q", key, got)
		}
		if (d.Key != nil) != r.KeyIsUTF8() {
			t.Errorf("key %q: key/key_base64 choice wrong", key)
		}
		if d.Time != "2026-11-23T17:16:53.458622Z" || d.DB != 3 || d.Event != "expired" || d.Type != "keyevent" || d.Source != "my-cache:6379" {
			t.Errorf("fields wrong: %s", b)
		}
	}
}

func TestGapRecordParses(t *testing.T) {
	since := time.Date(2026, 11, 23, 18, 0, 0, 1000, time.UTC)
	r := bridge.Record{Type: bridge.TypeGap, ID: "X", Time: since.Add(2 * time.Second), Source: "h:1",
		Since: since, Until: since.Add(time.Second), Reason: bridge.GapOverflow, Dropped: 42}
	d, err := bridgetest.ParseRecord(r.AppendJSON(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := bridgetest.Record{Type: "gap", ID: "X", Time: "2026-11-23T18:00:02.000001Z", Source: "h:1",
		Since: "2026-11-23T18:00:00.000001Z", Until: "2026-11-23T18:00:01.000001Z", Reason: "overflow", Dropped: 42}
	if d != want {
		t.Errorf("got  %+v\nwant %+v", d, want)
	}
	if _, ok, err := d.DecodeKey(); ok || err != nil {
		t.Errorf("a gap has a key: %v, %v", ok, err)
	}
}

func FuzzRecordJSON(f *testing.F) {
	for _, k := range bridge.OddKeys[:len(bridge.OddKeys)-1] {
		f.Add(k, "set")
	}
	f.Fuzz(func(t *testing.T, key, event string) {
		if !utf8.ValidString(event) {
			return // events are Redis's names; keys are arbitrary
		}
		r := bridge.Record{Type: bridge.TypeKeyEvent, ID: "I", Time: time.Unix(0, 0), Source: "s", Event: event, Key: key}
		b := r.AppendJSON(nil)
		d, got := parseKey(t, b)
		if got != key || d.Event != event {
			t.Fatalf("round trip failed for key %q event %q: %s", key, event, b)
		}
	})
}
