package main

import (
	"bytes"
	"encoding/xml"
	"io"
	"slices"
	"testing"
)

func TestTicks(t *testing.T) {
	for _, tc := range []struct {
		max  float64
		want []float64
	}{
		{30.2, []float64{0, 5, 10, 15, 20, 25, 30, 35}},
		{100000, []float64{0, 20000, 40000, 60000, 80000, 100000}},
		{3.5, []float64{0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5}},
		{0, []float64{0, 1}},
	} {
		got := ticks(tc.max)
		if len(got) != len(tc.want) {
			t.Errorf("ticks(%v) = %v, want %v", tc.max, got, tc.want)
			continue
		}
		for i := range got {
			if d := got[i] - tc.want[i]; d > 1e-9 || d < -1e-9 {
				t.Errorf("ticks(%v) = %v, want %v", tc.max, got, tc.want)
				break
			}
		}
	}
}

func TestWrap(t *testing.T) {
	got := wrap("one two three four", 9)
	if want := []string{"one two", "three", "four"}; !slices.Equal(got, want) {
		t.Errorf("wrap = %q, want %q", got, want)
	}
	if got := wrap("", 9); !slices.Equal(got, []string{""}) {
		t.Errorf("wrap of nothing = %q", got)
	}
}

// TestChartIsWellFormed renders a chart with every kind of element, text
// that needs escaping included, and parses it as XML.
func TestChartIsWellFormed(t *testing.T) {
	c := &chart{
		title: "a <title> & more", subtitle: `"quoted" subtitle`, xLabel: "x", footer: []string{"footer"},
		bands: []band{{from: 1, to: 2, label: "outage"}},
		panels: []panel{
			{yLabel: "y", lines: []line{{name: "l1", color: colorKeyrelay, pts: []point{{0, 0}, {1, 5}, {3, 2}}},
				{name: "l2", color: colorRedisCLI, dash: true, pts: []point{{0, 1}, {3, 1}}}}},
			{yLabel: "hist", lines: []line{{name: "h", color: colorBuffer, step: true, pts: []point{{0, 3}, {0.5, 7}, {1, 0}}}},
				marks: []mark{{x: 0.5, label: "p50"}}},
			{yLabel: "empty"},
		},
	}
	var b bytes.Buffer
	c.render(&b)
	d := xml.NewDecoder(&b)
	for {
		_, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed: %v\n%s", err, b.String())
		}
	}
}
