package bridge

import (
	"strings"
	"testing"
	"time"
)

// oddKeys are keys a record must carry intact. The tests that decode
// records (record_json_test.go, with bridgetest's parser, which this package
// cannot import) get them as OddKeys (export_test.go).
var oddKeys = []string{
	"", "session:42", "with space", "new\nline", "tab\tcr\r", `quote"back\slash`,
	"__:x__:y", "glob*?[]", "\x00\x01\x1f\x7f", "ключ🔑", "\u2028\u2029", "<>&",
	"\xff\xfe", "valid then \xc3", strings.Repeat("k", 100000),
}

func TestRecordJSONExample(t *testing.T) {
	// The contract's example record, byte for byte.
	r := Record{Type: TypeKeyEvent, ID: "01JDQ3S4X4M5Q0S8E6D2C9K1ZB",
		Time:   time.Date(2026, 11, 23, 18, 16, 53, 458622000, time.UTC),
		Source: "my-cache.abc123.ng.0001.use1.cache.amazonaws.com:6379", Event: "expired", Key: "session:42"}
	want := `{"type":"keyevent","id":"01JDQ3S4X4M5Q0S8E6D2C9K1ZB","time":"2026-11-23T18:16:53.458622Z","source":"my-cache.abc123.ng.0001.use1.cache.amazonaws.com:6379","db":0,"event":"expired","key":"session:42"}`
	if got := string(r.AppendJSON(nil)); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestGapRecordJSON(t *testing.T) {
	since := time.Date(2026, 11, 23, 18, 0, 0, 1000, time.UTC)
	r := Record{Type: TypeGap, ID: "X", Time: since.Add(2 * time.Second), Source: "h:1",
		Since: since, Until: since.Add(time.Second), Reason: GapOverflow, Dropped: 42}
	want := `{"type":"gap","id":"X","time":"2026-11-23T18:00:02.000001Z","source":"h:1","since":"2026-11-23T18:00:00.000001Z","until":"2026-11-23T18:00:01.000001Z","reason":"overflow","dropped":42}`
	if got := string(r.AppendJSON(nil)); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestIDs(t *testing.T) {
	g := NewIDGenerator()
	now := time.Now()
	prev := ""
	for i := 0; i < 10000; i++ {
		id := g.New(now) // same millisecond: must still increase
		if len(id) != 26 || strings.Trim(id, crockford) != "" {
			t.Fatalf("bad id %q", id)
		}
		if id <= prev {
			t.Fatalf("ids not increasing: %q then %q", prev, id)
		}
		prev = id
	}
	later := g.New(now.Add(time.Millisecond))
	if later <= prev {
		t.Fatalf("later id %q sorts before %q", later, prev)
	}
	// Another generator (another process) makes different ids in the same millisecond.
	other := NewIDGenerator().New(now)
	if other[:10] != prev[:10] {
		t.Fatalf("time prefix differs: %q vs %q", other, prev)
	}
	if other == g.New(now) {
		t.Fatal("two generators collided")
	}
	// The time prefix decodes to the millisecond.
	var ms uint64
	for _, c := range later[:10] {
		ms = ms<<5 | uint64(strings.IndexRune(crockford, c))
	}
	if int64(ms) != now.Add(time.Millisecond).UnixMilli() {
		t.Fatalf("id %q encodes %d ms, want %d", later, ms, now.UnixMilli()+1)
	}
}

func BenchmarkIDNew(b *testing.B) {
	g := NewIDGenerator()
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		g.New(now)
	}
}

func BenchmarkRecordAppendJSON(b *testing.B) {
	r := Record{Type: TypeKeyEvent, ID: "01JDQ3S4X4M5Q0S8E6D2C9K1ZB", Time: time.Now(),
		Source: "my-cache.abc123.ng.0001.use1.cache.amazonaws.com:6379", Event: "expired", Key: "session:4242424242"}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = r.AppendJSON(buf[:0])
	}
}

func BenchmarkDecode(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_, _ = Decode("__keyevent@0__:expired", "session:4242424242")
	}
}

func TestAppendTimeMatchesLayout(t *testing.T) {
	times := []time.Time{
		time.Unix(0, 0), time.Now(), time.Date(2026, 11, 23, 18, 16, 53, 458622999, time.FixedZone("x", -5*3600)),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), time.Date(1, 1, 1, 0, 0, 0, 1000, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	for i := int64(0); i < 2000; i++ {
		times = append(times, time.Unix(i*987654321%4102444800, i*7919%1e9))
	}
	for _, at := range times {
		if got, want := string(appendTime(nil, at)), at.UTC().Format(timeLayout); got != want {
			t.Errorf("appendTime(%v) = %s, want %s", at, got, want)
		}
	}
}
