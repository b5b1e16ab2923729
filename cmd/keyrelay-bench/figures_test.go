package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLabelValues(t *testing.T) {
	m := map[string]float64{
		`keyrelay_gaps_total`:                     3,
		`keyrelay_gaps_total{reason="reconnect"}`: 2,
		`keyrelay_gaps_total{reason="overflow"}`:  1,
		`keyrelay_gaps_total{reason="restart"}`:   0,
		`keyrelay_gaps_totalx{reason="other"}`:    5,
	}
	got := labelValues(m, "keyrelay_gaps_total", "reason")
	if want := []string{"overflow=1", "reconnect=2"}; !slices.Equal(got, want) {
		t.Errorf("labelValues = %q, want %q", got, want)
	}
}

func TestBacklogPerRecord(t *testing.T) {
	b := &backlogResult{rss0: 20 << 10, rss1: 120 << 10, held: 200000}
	if got, want := b.perRecord(), float64(100<<20)/200000; got != want {
		t.Errorf("perRecord = %v, want %v", got, want)
	}
	if got := (&backlogResult{}).perRecord(); got != 0 {
		t.Errorf("perRecord of nothing held = %v, want 0", got)
	}
}

// TestFiguresPrint: the headline table names each target once, and the
// disconnects of a burst are the larger of INFO and the log, not the sum.
func TestFiguresPrint(t *testing.T) {
	f := &figures{
		burst: []*burstRow{{who: "keyrelay", published: 2000000, received: 1999000, infoDisc: 1, logDisc: 1, gaps: 1, hasCPU: true}},
		results: []*result{
			{run: "stdout full speed", who: "keyrelay", published: 1000000, cpu: 3 * time.Second},
			{run: "stdout 10000/s", who: "keyrelay", hasLatency: true, p50: 11 * time.Millisecond, p99: 21 * time.Millisecond},
		},
	}
	var b bytes.Buffer
	f.print(&b)
	out := b.String()
	for _, want := range []string{"99.950 % received, 1 disconnect(s), 1 gap record(s)", "3.00 (lost 0, dropped 0)", "11.0ms / 21.0ms", "p99 ≤ 21 ms"} {
		if !strings.Contains(out, want) {
			t.Errorf("headline table lacks %q:\n%s", want, out)
		}
	}
}
