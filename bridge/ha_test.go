package bridge

import (
	"io"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyrelay/keyrelay/bridge/spool"
)

func TestHAIDRoundTrip(t *testing.T) {
	ref, ok := newMarkerRef("", "a1b2 127.0.0.1:6379 7 1764662400123456789")
	if !ok {
		t.Fatal("marker not parsed")
	}
	if ref.ms != 1764662400123 {
		t.Errorf("ms = %d, want the send time in ms", ref.ms)
	}
	var prev string
	for _, off := range []uint64{1, 2, 255, 1 << 20, 1<<48 - 1} {
		id := haID(ref, off)
		if len(id) != 26 || id[0] > '7' {
			t.Fatalf("id %q is not a ULID", id)
		}
		if _, ok := decodeULID(id); !ok {
			t.Fatalf("id %q does not decode", id)
		}
		h, o, ok := parseHAID(id)
		if !ok || h != ref.hash || o != off {
			t.Errorf("parseHAID(%s) = %x %d %v, want %x %d", id, h, o, ok, ref.hash, off)
		}
		if id <= prev {
			t.Errorf("ids do not sort by offset: %s after %s", id, prev)
		}
		prev = id
	}
	// Later markers sort later (to the millisecond).
	later, _ := newMarkerRef("", "a1b2 127.0.0.1:6379 8 1764662400223456789")
	if haID(later, 1) <= haID(ref, 1<<40) {
		t.Errorf("an id after a later marker sorts first")
	}
	// The same payload on another cluster node names another marker: a
	// PUBLISH reaches every node of a cluster.
	other, _ := newMarkerRef("node-b", "a1b2 127.0.0.1:6379 7 1764662400123456789")
	if other.hash == ref.hash {
		t.Errorf("the node does not enter the marker's hash")
	}
	for _, bad := range []string{"", "a b c", "a b c notanumber", "a b c -5"} {
		if _, ok := newMarkerRef("", bad); ok {
			t.Errorf("marker %q accepted", bad)
		}
	}
	if _, _, ok := parseHAID("not-an-id"); ok {
		t.Errorf("parseHAID accepted garbage")
	}
}

func TestHAPosCovered(t *testing.T) {
	d := haPos{5, 10}
	for _, c := range []struct {
		p    haPos
		want bool
	}{
		{haPos{5, 10}, true},
		{haPos{5, 9}, true},
		{haPos{5, 11}, false},
		{haPos{4, 1 << 40}, true},
		{haPos{4, offAfter}, true},  // unplaced, before marker 5: the leader is past it
		{haPos{5, offAfter}, false}, // unplaced after marker 5: maybe after offset 10
		{haPos{6, 1}, false},
		{haPos{0, offAfter}, true}, // before the first marker
	} {
		if got := c.p.covered(d); got != c.want {
			t.Errorf("%v covered by %v = %v, want %v", c.p, d, got, c.want)
		}
	}
}

// haRelay is a relay with a spool and HA on, standing by, delivering into
// a scripted sink.
func haRelay(t *testing.T, limit int) (*Relay, *scriptedSink, *Elector) {
	t.Helper()
	l, err := spool.Open(t.TempDir(), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sink := &scriptedSink{lim: Limits{MaxEntries: 10, MaxInFlight: 1}}
	r := NewRelay(RelayConfig{BufferRecords: 100, Overflow: DropNewest, RetryInitial: time.Millisecond,
		RetryMax: time.Millisecond, Spool: l}, []Sink{sink}, slog.New(slog.NewTextHandler(io.Discard, nil)), NewMetrics(nil))
	e, err := r.EnableHA(HAConfig{Limit: limit}, NewHAMetrics(prometheus.NewRegistry()), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(func() { _ = r.Shutdown(t.Context()) })
	return r, sink, e
}

// stream feeds records the way a subscriber places them: n messages after
// each marker of markers (names), on node "n1".
func stream(r *Relay, markers []string, n int) (ids []string) {
	src := r.ha.source("n1")
	for _, m := range markers {
		ref, _ := newMarkerRef("", "inst n1 "+m+" "+strconv.FormatInt(time.Now().UnixNano(), 10))
		idx := src.marker(ref)
		for off := uint64(1); off <= uint64(n); off++ {
			rec := Record{Type: TypeKeyEvent, ID: haID(ref, off), Time: time.Now(), Source: "n1",
				Event: "set", Key: m + "/" + strconv.FormatUint(off, 10), placed: true, pos: haPos{idx, off}}
			ids = append(ids, rec.ID)
			r.Emit(rec)
		}
	}
	return ids
}

func TestHAStandbyHoldsTrimsAndResumes(t *testing.T) {
	r, sink, _ := haRelay(t, 1000)
	// Received before any marker: unplaced.
	r.Emit(Record{Type: TypeKeyEvent, ID: r.IDs().New(time.Now()), Time: time.Now(), Source: "n1", Event: "set", Key: "early"})
	r.EmitGap("n1", GapReconnect, time.Now().Add(-time.Second), time.Now())
	ids := stream(r, []string{"m1", "m2", "m3"}, 3)
	time.Sleep(50 * time.Millisecond)
	if len(sink.accepted) != 0 {
		t.Fatalf("a standby delivered %v", sink.accepted)
	}
	if r.ha.held != 11 {
		t.Fatalf("held %d, want 11", r.ha.held)
	}
	// The leader delivered up to m2/1: the early record and the gap lie
	// before marker m1, so they are covered too.
	r.ha.trim([]string{ids[3]})
	if r.ha.held != 5 {
		t.Fatalf("after the trim held %d, want 5 (m2/2 onwards)", r.ha.held)
	}
	// An id of an unknown marker changes nothing.
	r.ha.trim([]string{haID(markerRef{ms: 1, hash: 42}, 7)})
	if r.ha.held != 5 {
		t.Fatalf("an unknown position trimmed: held %d", r.ha.held)
	}
	r.ha.promote([]string{ids[4]}) // m2/2 delivered meanwhile
	stream(r, []string{"m4"}, 1)
	waitSpool(t, "delivery", func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return len(sink.accepted) == 5
	})
	want := []string{"m2/3", "m3/1", "m3/2", "m3/3", "m4/1"}
	sink.mu.Lock()
	got := slices.Clone(sink.accepted)
	sink.mu.Unlock()
	if !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
}

func TestHAHoldOverflowIsReported(t *testing.T) {
	r, sink, _ := haRelay(t, 4)
	ids := stream(r, []string{"m1", "m2"}, 3) // 6 records into a hold of 4
	if r.ha.held != 4 {
		t.Fatalf("held %d, want 4", r.ha.held)
	}
	// The leader delivered only m1/1: the two dropped (m1/1, m1/2) are not
	// all covered: an overflow gap with the count precedes the rest.
	r.ha.promote([]string{ids[0]})
	waitSpool(t, "delivery", func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return len(sink.accepted) == 5
	})
	sink.mu.Lock()
	got := slices.Clone(sink.accepted)
	sink.mu.Unlock()
	if want := []string{"", "m1/3", "m2/1", "m2/2", "m2/3"}; !slices.Equal(got, want) {
		t.Errorf("delivered %q, want %q (a gap first)", got, want)
	}
}

func TestHADeliveredPosition(t *testing.T) {
	r, sink, e := haRelay(t, 100)
	r.ha.promote(nil)
	ids := stream(r, []string{"m1"}, 4)
	waitSpool(t, "delivery", func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return len(sink.accepted) == 4
	})
	waitSpool(t, "acknowledgement", func() bool {
		got := r.ha.delivered()
		return len(got) == 1 && got[0] == ids[3]
	})
	if !e.Leader() {
		t.Errorf("not leading after promote")
	}
}
