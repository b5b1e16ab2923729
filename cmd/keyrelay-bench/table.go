package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// printTable writes the results as an aligned table, then the notes.
func printTable(w io.Writer, results []*result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tsubscriber\tpublished\treceived\tdelivered\tlost\tdropped\tdisc\tmax omem\tpub ev/s\tev/s\tp50\tp99\tRSS MB\tCPU s\tCPU s/M\tfauxqs CPU s\treqs\tbilled/M\tconns\t")
	na := "–"
	for _, r := range results {
		cols := []string{r.run, r.who, num(r.published), num(r.received), numOr(r.delivered, na),
			num(r.lost), numOr(r.dropped, na), num(r.disconnects), mib(r.maxOmem),
			rate(r.pubRate), rate(r.rate)}
		if r.hasLatency {
			cols = append(cols, ms(r.p50), ms(r.p99))
		} else {
			cols = append(cols, na, na)
		}
		if r.hasCPU {
			cols = append(cols, fmt.Sprintf("%.1f", float64(r.rssKB)/1024), secs(r.cpu), perMillion(r.cpu, r.published))
		} else {
			cols = append(cols, na, na, na)
		}
		if r.hasRequests {
			billed := na
			if r.delivered > 0 {
				billed = fmt.Sprintf("%.0f", float64(r.billed)*1e6/float64(r.delivered))
			}
			cols = append(cols, secs(r.cpuFauxqs), num(r.requests), billed, num(r.conns))
		} else {
			cols = append(cols, na, na, na, na)
		}
		fmt.Fprintln(tw, strings.Join(cols, "\t")+"\t")
	}
	tw.Flush()
	for _, r := range results {
		if len(r.notes) > 0 {
			fmt.Fprintf(w, "# %s, %s: %s\n", r.run, r.who, strings.Join(r.notes, "; "))
		}
	}
}

// printClusterTable writes the cluster rows (one per primary, then the
// total) as an aligned table like printTable's, then the notes. CPU s/M is
// keyrelay's CPU per million published notifications.
func printClusterTable(w io.Writer, rows []*clusterRow) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tnode\tpublished\treceived\treceived %\tlost\tgaps\tdisc\tmax omem\tpub ev/s\tev/s\tRSS MB\tCPU s\tCPU s/M\t")
	na := "–"
	for _, r := range rows {
		pct := na
		if r.published > 0 {
			// Truncated, not rounded: one lost event in a million must not
			// print as 100.000%.
			pct = fmt.Sprintf("%.3f%%", math.Floor(float64(r.received)*100*1000/float64(r.published))/1000)
		}
		cols := []string{r.run, r.node, num(r.published), num(r.received), pct, num(r.lost), num(r.gaps),
			num(r.disconnects), mib(r.maxOmem), rate(r.pubRate), rate(r.rate)}
		if r.hasCPU {
			perM := na
			if r.published > 0 {
				perM = fmt.Sprintf("%.2f", r.cpu.Seconds()*1e6/float64(r.published))
			}
			cols = append(cols, fmt.Sprintf("%.1f", float64(r.rssKB)/1024), secs(r.cpu), perM)
		} else {
			cols = append(cols, na, na, na)
		}
		fmt.Fprintln(tw, strings.Join(cols, "\t")+"\t")
	}
	tw.Flush()
	for _, r := range rows {
		if len(r.notes) > 0 {
			fmt.Fprintf(w, "# %s, %s: %s\n", r.run, r.node, strings.Join(r.notes, "; "))
		}
	}
}

func num(v int64) string { return fmt.Sprint(v) }

func numOr(v int64, na string) string {
	if v < 0 {
		return na
	}
	return fmt.Sprint(v)
}

func mib(b int64) string { return fmt.Sprintf("%.1fM", float64(b)/(1<<20)) }

func rate(v float64) string {
	if v <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f", v)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

func secs(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()) }

// percentile returns the q-quantile (nearest rank) of ds.
func percentile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}
