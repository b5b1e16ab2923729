package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// burstSettle is how long the burst run waits, once the writer is done and
// no count moves any more, before it takes what arrived as final: a
// subscriber the server disconnected never receives the rest.
const burstSettle = 3 * time.Second

// burstRow is one subscriber in the burst run, alone on its own
// redis-server.
type burstRow struct {
	who                 string
	published, received int64 // received: records on keyrelay's stdout (gap records apart) or messages redis-cli printed
	gaps, dropped       int64
	infoDisc, logDisc   int64 // client_output_buffer_limit_disconnections (-1: not in INFO), and the clients the log says it closed
	reconnects          int64
	maxOmem             int64
	pubRate, rate       float64
	rssKB               int64
	cpu                 time.Duration
	hasCPU              bool
	timeline            []tick
	notes               []string
}

// burst: -burst-n SETs from redis-benchmark -P 64 at full speed, once with
// keyrelay → stdout alone on a fresh redis-server, then once with
// `redis-cli psubscribe` alone on another; how much of the burst each one
// received, and what the server did to it.
func (h *harness) burst(ctx context.Context) ([]*burstRow, error) {
	var rows []*burstRow
	for _, who := range []string{"keyrelay", "redis-cli"} {
		r, err := h.burstOne(ctx, who)
		if r != nil {
			rows = append(rows, r)
		}
		if err != nil {
			return rows, fmt.Errorf("%s: %w", who, err)
		}
	}
	return rows, nil
}

func (h *harness) burstOne(ctx context.Context, who string) (*burstRow, error) {
	s, err := h.newSetup(ctx, who == "redis-cli")
	if err != nil {
		return nil, err
	}
	defer s.close()
	if who == "keyrelay" {
		if err := s.startKeyrelay(ctx, []string{"KEYRELAY_SINKS=stdout"}, true, false); err != nil {
			return nil, err
		}
	} else if err := s.rc.ConfigResetStat(ctx).Err(); err != nil {
		return nil, err
	}
	var cpu0 time.Duration
	if s.kr != nil {
		cpu0, _, _ = procStat(s.kr.pid())
	}
	s.sample(ctx)
	start := time.Now()
	pubRate, err := s.writeFull(ctx, h.o.burstN)
	if err != nil {
		return nil, err
	}
	published, err := s.published(ctx)
	if err != nil {
		return nil, err
	}

	// Wait until everything arrived, or nothing moved for burstSettle.
	type look struct{ lines, received, ref int64 }
	var last look
	lastChange := time.Now()
	for {
		l := look{ref: s.ref.received()}
		var gaps, dropped float64
		if s.kr != nil {
			l.lines = s.kr.lines.n.Load()
			if m, err := s.kr.metrics(); err == nil {
				l.received = int64(m["keyrelay_notifications_received_total"])
				gaps, dropped = m["keyrelay_gaps_total"], m["keyrelay_records_dropped_total"]
			}
		}
		if l != last {
			last, lastChange = l, time.Now()
		}
		complete := l.ref >= published
		if s.kr != nil {
			complete = l.lines-int64(gaps)+int64(dropped) >= published
		}
		if complete || (s.kr == nil && !s.ref.alive()) || time.Since(lastChange) > burstSettle {
			break
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
	s.stopSampling()

	r := &burstRow{who: who, published: published, pubRate: pubRate, timeline: s.timeline}
	r.infoDisc, r.logDisc = s.serverDisconnects(ctx)
	if s.kr != nil {
		cpu1, hwm, _ := procStat(s.kr.pid())
		m, err := s.kr.metrics()
		if err != nil {
			return r, fmt.Errorf("keyrelay metrics: %w", err)
		}
		r.gaps, r.dropped = int64(m["keyrelay_gaps_total"]), int64(m["keyrelay_records_dropped_total"])
		r.received = s.kr.lines.n.Load() - r.gaps
		r.reconnects = int64(m["keyrelay_subscription_reconnects_total"])
		r.maxOmem, r.rssKB, r.cpu, r.hasCPU = s.omemKR, hwm, cpu1-cpu0, true
		if last := s.kr.lines.last.Load(); last > 0 {
			r.rate = float64(r.received) / time.Unix(0, last).Sub(start).Seconds()
		}
		r.notes = append(r.notes, fmt.Sprintf("keyrelay_notifications_received_total %.0f, keyrelay_subscription_reconnects_total %d",
			m["keyrelay_notifications_received_total"], r.reconnects))
		if reasons := labelValues(m, "keyrelay_gaps_total", "reason"); len(reasons) > 0 {
			r.notes = append(r.notes, "gap records by reason: "+strings.Join(reasons, ", "))
		}
		if r.dropped > 0 {
			r.notes = append(r.notes, fmt.Sprintf("%d dropped from a full sink buffer", r.dropped))
		}
	} else {
		r.received = s.ref.received()
		r.maxOmem = s.omemRef
		if last := s.ref.lines.last.Load(); last > 0 {
			r.rate = float64(r.received) / time.Unix(0, last).Sub(start).Seconds()
		}
		if !s.ref.alive() {
			r.notes = append(r.notes, "redis-cli exited: the server closed its connection")
		}
	}
	return r, nil
}

// labelValues lists, for the series of metric name, "value=count" per value
// of label with a non-zero count, sorted.
func labelValues(m map[string]float64, name, label string) []string {
	var out []string
	for series, v := range m {
		rest, ok := strings.CutPrefix(series, name+"{")
		if !ok {
			continue
		}
		_, val, ok := strings.Cut(rest, label+`="`)
		if !ok {
			continue
		}
		val, _, _ = strings.Cut(val, `"`)
		if v == 0 {
			continue
		}
		out = append(out, fmt.Sprintf("%s=%.0f", val, v))
	}
	sort.Strings(out)
	return out
}

// printBurstTable writes the burst rows: received % is truncated, so that
// one lost event in a million does not print as 100.000 %.
func printBurstTable(w io.Writer, n int, rows []*burstRow) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tsubscriber\tpublished\treceived\treceived %\tlost\tdisc (INFO)\tdisc (log)\tgap records\tmax omem\tpub ev/s\tev/s\tRSS MB\tCPU s\tCPU s/M\t")
	na := "–"
	run := fmt.Sprintf("burst %s, each alone", human(float64(n)))
	for _, r := range rows {
		pct := na
		if r.published > 0 {
			pct = fmt.Sprintf("%.3f%%", math.Floor(float64(r.received)*100*1000/float64(r.published))/1000)
		}
		gaps := na
		if r.hasCPU {
			gaps = num(r.gaps)
		}
		cols := []string{run, r.who, num(r.published), num(r.received), pct, num(r.published - r.received),
			numOr(r.infoDisc, na), num(r.logDisc), gaps, mib(r.maxOmem), rate(r.pubRate), rate(r.rate)}
		if r.hasCPU {
			cols = append(cols, fmt.Sprintf("%.1f", float64(r.rssKB)/1024), secs(r.cpu), perMillion(r.cpu, r.published))
		} else {
			cols = append(cols, na, na, na)
		}
		fmt.Fprintln(tw, strings.Join(cols, "\t")+"\t")
	}
	tw.Flush()
	for _, r := range rows {
		if len(r.notes) > 0 {
			fmt.Fprintf(w, "# %s, %s: %s\n", run, r.who, strings.Join(r.notes, "; "))
		}
	}
}

// burstChart: published and received over time, one pair of lines per
// subscriber (each had its own server and burst).
// pubsubLimit is -pubsub-limit, empty for Redis's default.
func burstChart(rows []*burstRow, n int, pubsubLimit string, footer []string) *chart {
	limit := "Redis's default pubsub output buffer limit (32mb 8mb 60)"
	if pubsubLimit != "" {
		limit = "client-output-buffer-limit pubsub " + pubsubLimit
	}
	c := &chart{
		title:    fmt.Sprintf("%s-notification burst: received vs published", human(float64(n))),
		subtitle: "redis-benchmark -t set -P 64 at full speed, E$, " + limit + "; each subscriber alone on its own redis-server",
		xLabel:   "seconds since the burst started",
		footer:   footer,
	}
	p := panel{yLabel: "notifications"}
	for _, r := range rows {
		color := colorKeyrelay
		name := "keyrelay → stdout: received"
		if r.who == "redis-cli" {
			color, name = colorRedisCLI, "redis-cli psubscribe: received"
		}
		var pub, got []point
		for _, t := range r.timeline {
			pub = append(pub, point{t.t, float64(t.published)})
			v := t.krLines
			if r.who == "redis-cli" {
				v = t.refMsg
			}
			got = append(got, point{t.t, float64(v)})
		}
		if r.received < r.published {
			name += fmt.Sprintf(" (%.1f %%)", float64(r.received)*100/float64(max(1, r.published)))
		}
		p.lines = append(p.lines, line{name: "published, " + r.who + " run", color: colorPublished, dash: r.who == "redis-cli", pts: pub})
		p.lines = append(p.lines, line{name: name, color: color, pts: got})
	}
	c.panels = []panel{p}
	return c
}
