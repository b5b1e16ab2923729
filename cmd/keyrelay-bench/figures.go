package main

import (
	"fmt"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// figures are the headline numbers of one harness run, next to the targets
// of issue 14, printed at the end so that one run gives all of them.
type figures struct {
	burst   []*burstRow
	results []*result
	backlog *backlogResult
}

// target is one line of the headline table.
type target struct{ figure, measured, goal string }

func (f *figures) print(w io.Writer) {
	var ts []target
	for _, r := range f.burst {
		if r.published == 0 {
			continue
		}
		disc := max(r.infoDisc, r.logDisc) // the same disconnections, counted twice over
		m := fmt.Sprintf("%.3f %% received, %d disconnect(s)", math.Floor(float64(r.received)*1e5/float64(r.published))/1e3, disc)
		if r.hasCPU {
			m += fmt.Sprintf(", %d gap record(s)", r.gaps)
		}
		goal := "≥ 99.9 %, no disconnect"
		if r.who == "redis-cli" {
			goal = "(reference)"
		}
		ts = append(ts, target{fmt.Sprintf("%s burst → %s", human(float64(r.published)), r.who), m, goal})
	}
	for _, r := range f.results {
		if r.who != "keyrelay" || !strings.HasPrefix(r.run, "stdout full speed") {
			continue
		}
		goal := "≤ 1.2"
		if strings.Contains(r.run, "spool") {
			goal = "≤ 2.0, lossless"
		}
		ts = append(ts, target{"CPU s per million, " + r.run, fmt.Sprintf("%s (lost %d, dropped %d)", perMillion(r.cpu, r.published), r.lost, r.dropped), goal})
	}
	if b := f.backlog; b != nil {
		ts = append(ts, target{fmt.Sprintf("RSS per buffered record (%s backlog)", human(float64(b.held))),
			fmt.Sprintf("%.0f B (RSS %.0f MB)", b.perRecord(), float64(b.rss1)/1024), "≤ 300 B (1 M under 350 MB)"})
	}
	for _, r := range f.results {
		if r.who == "keyrelay" && strings.HasPrefix(r.run, "sqs full speed") && !strings.Contains(r.run, "PACK") && r.delivered > 0 {
			ts = append(ts, target{"keyrelay CPU per event, " + r.run, fmt.Sprintf("%.1f µs", r.cpu.Seconds()*1e6/float64(r.delivered)), "≤ 12 µs"})
		}
	}
	for _, r := range f.results {
		if r.who == "keyrelay" && r.hasLatency {
			goal := "–"
			if r.run == "stdout 10000/s" {
				goal = "p99 ≤ 21 ms"
			}
			ts = append(ts, target{"p50 / p99, " + r.run, fmt.Sprintf("%s / %s", ms(r.p50), ms(r.p99)), goal})
		}
	}
	if len(ts) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tmeasured\ttarget (issue 14)")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", t.figure, t.measured, t.goal)
	}
	tw.Flush()
}

func perMillion(cpu time.Duration, n int64) string {
	if n <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", cpu.Seconds()*1e6/float64(n))
}

// latencyChart: the distribution of write → line on stdout at one rate, in
// bins of 0.5 ms (wider when the latencies spread far), with the p50 and p99
// marked; the slowest 0.1 % are left
// out of the bins (the x axis would be mostly empty) and counted in the
// subtitle.
func latencyChart(rate int, lat []time.Duration, footer []string) *chart {
	s := slices.Clone(lat)
	slices.Sort(s)
	p50, p99 := percentile(s, 0.50), percentile(s, 0.99)
	cut := percentile(s, 0.999)
	// Bins of 0.5 ms, or wider (a round width) to keep to about 400 bins.
	bin := 0.5 // ms
	for _, w := range []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000} {
		if float64(cut)/1e6/bin <= 400 {
			break
		}
		bin = w
	}
	counts := make([]float64, int(float64(cut)/1e6/bin)+1)
	beyond := 0
	for _, d := range s {
		i := int(float64(d) / 1e6 / bin)
		if i >= len(counts) {
			beyond++
			continue
		}
		counts[i]++
	}
	pts := make([]point, 0, len(counts)+1)
	for i, c := range counts {
		pts = append(pts, point{float64(i) * bin, c})
	}
	pts = append(pts, point{float64(len(counts)) * bin, 0})
	sub := fmt.Sprintf("%d records, default settings (KEYRELAY_BATCH_LINGER 20 ms); p50 %s, p99 %s, max %s",
		len(s), ms(p50), ms(p99), ms(s[len(s)-1]))
	if beyond > 0 {
		sub += fmt.Sprintf("; %d slower than %s not drawn", beyond, ms(cut))
	}
	return &chart{
		title:    fmt.Sprintf("Latency at %s notifications/s: write → record on keyrelay's stdout", human(float64(rate))),
		subtitle: sub,
		xLabel:   "milliseconds from the SET to the line read from keyrelay's stdout",
		footer:   footer,
		panels: []panel{{
			yLabel: fmt.Sprintf("records per %s ms bin", trimZero(fmt.Sprintf("%.1f", bin))),
			lines:  []line{{name: "keyrelay → stdout", color: colorKeyrelay, step: true, pts: pts}},
			marks: []mark{{x: float64(p50) / 1e6, label: "p50 " + ms(p50)},
				{x: float64(p99) / 1e6, label: "p99 " + ms(p99)}},
		}},
	}
}

// outageChart: keyrelay's resident set and buffered records while the SQS
// endpoint answers 503, the outage shaded.
func outageChart(run string, timeline []tick, from, to float64, footer []string) *chart {
	var rss, buf, dropped []point
	for _, t := range timeline {
		rss = append(rss, point{t.t, float64(t.rssKB) / 1024})
		buf = append(buf, point{t.t, t.buffer})
		dropped = append(dropped, point{t.t, t.dropped})
	}
	return &chart{
		title:    "Sink outage: keyrelay's memory and buffer",
		subtitle: run + ", default settings (KEYRELAY_BUFFER_RECORDS 100 000: the overflow is dropped and reported in a gap record)",
		xLabel:   "seconds since the stream started",
		footer:   footer,
		bands:    []band{{from: from, to: to, label: "SQS endpoint answers 503"}},
		panels: []panel{
			{yLabel: "records", lines: []line{
				{name: "buffered (keyrelay_buffer_records)", color: colorBuffer, pts: buf},
				{name: "dropped so far, reported in a gap record (keyrelay_records_dropped_total)", color: colorRedisCLI, dash: true, pts: dropped},
			}},
			{yLabel: "resident set (MB)", lines: []line{{name: "keyrelay RSS (VmRSS)", color: colorKeyrelay, pts: rss}}},
		},
	}
}

// writeChart writes c into the picture directory (if any) and says so.
func (h *harness) writeChart(name string, c *chart) {
	if h.o.svgDir == "" || c == nil {
		return
	}
	path := filepath.Join(h.o.svgDir, name)
	if err := c.write(path); err != nil {
		fmt.Fprintf(h.log, "# picture %s: %v\n", path, err)
		return
	}
	fmt.Fprintf(h.log, "# picture: %s\n", path)
}
