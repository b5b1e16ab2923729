package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/bridge/bridgetest/servers"
)

// clusterPrimaries is the size of the cluster run's cluster (no replicas).
const clusterPrimaries = 3

// sourceTally counts keyrelay's stdout lines per "source" value: key events
// and gap records apart, and when the last line of each source was read.
type sourceTally struct {
	mu sync.Mutex
	m  map[string]*sourceCount
}

type sourceCount struct {
	events, gaps int64
	last         int64 // unix ns of the last line read
}

func newSourceTally() *sourceTally { return &sourceTally{m: map[string]*sourceCount{}} }

var (
	sourceKey = []byte(`"source":"`)
	gapPrefix = []byte(`{"type":"gap"`)
)

// add counts one line. The source is the first "source":"…" of the line
// (records put it before the key, so a key cannot fake it).
func (t *sourceTally) add(line []byte, now int64) {
	var src []byte
	if i := bytes.Index(line, sourceKey); i >= 0 {
		rest := line[i+len(sourceKey):]
		if j := bytes.IndexByte(rest, '"'); j >= 0 {
			src = rest[:j]
		}
	}
	gap := bytes.HasPrefix(line, gapPrefix)
	t.mu.Lock()
	c := t.m[string(src)]
	if c == nil {
		c = &sourceCount{}
		t.m[string(src)] = c
	}
	if gap {
		c.gaps++
	} else {
		c.events++
	}
	c.last = now
	t.mu.Unlock()
}

func (t *sourceTally) snapshot() map[string]sourceCount {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]sourceCount, len(t.m))
	for k, v := range t.m {
		out[k] = *v
	}
	return out
}

// clusterRow is one row of the cluster table: one primary, or the total.
type clusterRow struct {
	run, node           string
	published, received int64 // SETs on the node; key-event lines with its source
	gaps, lost          int64
	disconnects         int64
	maxOmem             int64
	pubRate, rate       float64
	rssKB               int64
	cpu                 time.Duration
	hasCPU              bool
	notes               []string
}

// clusterNode is one primary of the cluster run and its control client.
type clusterNode struct {
	r    *servers.Redis
	rc   *redis.Client
	omem int64 // largest output buffer of keyrelay's subscription, sampled
}

// clusterFull: a cluster of 3 primaries (E$, default settings like the other
// runs), keyrelay in cluster mode with the stdout sink, and clusterWrite
// writing N SETs at full speed over every slot. No redis-cli reference here:
// three more subscribers would take CPU from keyrelay on a small machine.
func (h *harness) clusterFull(ctx context.Context) ([]*clusterRow, error) {
	h.seq++
	dir := filepath.Join(h.dir, strconv.Itoa(h.seq))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	t0 := time.Now()
	c, err := servers.StartCluster(dir, clusterPrimaries, 0, "--notify-keyspace-events", "E$")
	if err != nil {
		return nil, err
	}
	defer c.Stop()
	prims, err := c.Primaries(ctx)
	if err != nil {
		return nil, err
	}
	if len(prims) != clusterPrimaries {
		return nil, fmt.Errorf("%d primaries, want %d", len(prims), clusterPrimaries)
	}
	nodes := make([]*clusterNode, len(prims))
	for i, r := range prims {
		nodes[i] = &clusterNode{r: r, rc: c.Client(r)}
		defer nodes[i].rc.Close()
	}
	fmt.Fprintf(h.log, "# cluster of %d primaries up in %s\n", len(nodes), time.Since(t0).Round(time.Millisecond))

	kr, err := startKeyrelay(ctx, h.o.bin, dir, []string{"KEYRELAY_REDIS_URL=redis://" + c.Nodes[0].Addr,
		"KEYRELAY_REDIS_MODE=cluster", "KEYRELAY_SINKS=stdout"}, true, false, true)
	if err != nil {
		return nil, err
	}
	defer kr.stop(30 * time.Second) // before the cluster stops (deferred earlier)
	for _, n := range nodes {
		if err := n.waitSubscribed(ctx); err != nil {
			return nil, fmt.Errorf("keyrelay did not subscribe to %s: %w\n%s", n.r.Addr, err, kr.logTail())
		}
		if err := n.rc.ConfigResetStat(ctx).Err(); err != nil {
			return nil, err
		}
	}

	// Sample every 100 ms: the output buffer of keyrelay's subscription on
	// each primary, and keyrelay's sink buffer.
	var mu sync.Mutex
	var maxBuffer float64
	sctx, stopSampling := context.WithCancel(ctx)
	var sampled sync.WaitGroup
	sampled.Add(1)
	go func() {
		defer sampled.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			for _, n := range nodes {
				if list, err := n.rc.ClientList(sctx).Result(); err == nil {
					for _, cl := range parseClients(list) {
						if cl["psub"] != "" && cl["psub"] != "0" {
							omem, _ := strconv.ParseInt(cl["omem"], 10, 64)
							mu.Lock()
							n.omem = max(n.omem, omem)
							mu.Unlock()
						}
					}
				}
			}
			if m, err := kr.metrics(); err == nil {
				mu.Lock()
				maxBuffer = max(maxBuffer, m["keyrelay_buffer_records"])
				mu.Unlock()
			}
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	defer func() { stopSampling(); sampled.Wait() }()

	cpu0, _, _ := procStat(kr.pid())
	self0, _, _ := procStat(os.Getpid())
	start := time.Now()
	published, pubRate, wall, err := clusterWrite(ctx, nodes, h.o.n)
	if err != nil {
		return nil, err
	}
	var total int64
	for _, p := range published {
		total += p
	}
	// Redis's own count, for the notes: it includes keyrelay's writes.
	setsOnNode := make([]int64, len(nodes))
	for i, n := range nodes {
		if setsOnNode[i], err = setCalls(ctx, n.rc); err != nil {
			return nil, err
		}
	}

	// Wait until keyrelay accounted for every SET (delivered, or dropped
	// with a gap record) and its stdout lines arrived, or nothing progresses
	// for the stall time.
	var last progress
	var done time.Time
	lastChange := time.Now()
	var werr error
	for {
		m, err := kr.metrics()
		if err != nil {
			werr = fmt.Errorf("keyrelay metrics: %w\n%s", err, kr.logTail())
			break
		}
		p := progress{received: int64(m["keyrelay_notifications_received_total"]),
			delivered: int64(m["keyrelay_records_delivered_total"]),
			dropped:   int64(m["keyrelay_records_dropped_total"]),
			gaps:      int64(m["keyrelay_gaps_total"]), lines: kr.lines.n.Load()}
		if p != last {
			last, lastChange = p, time.Now()
		}
		if p.delivered+p.dropped >= total+p.gaps && p.lines >= total+p.gaps-p.dropped {
			done = time.Unix(0, kr.lines.last.Load())
			break
		}
		if time.Since(lastChange) > h.o.stall {
			werr = fmt.Errorf("no progress for %s: %+v of %d published", h.o.stall, p, total)
			break
		}
		if !sleep(ctx, 100*time.Millisecond) {
			werr = ctx.Err()
			break
		}
	}
	cpu1, hwm, _ := procStat(kr.pid())
	self1, _, _ := procStat(os.Getpid())
	m, _ := kr.metrics()
	stopSampling()
	sampled.Wait()
	tally := kr.lines.sources.snapshot()

	run := fmt.Sprintf("cluster full speed, %d primaries", len(nodes))
	tot := &clusterRow{run: run, node: "total", published: total, pubRate: pubRate,
		rssKB: hwm, cpu: cpu1 - cpu0, hasCPU: true}
	var rows []*clusterRow
	for i, n := range nodes {
		sc := tally[n.r.Addr]
		delete(tally, n.r.Addr)
		row := &clusterRow{run: run, node: n.r.Addr, published: published[i], received: sc.events,
			gaps: sc.gaps, lost: published[i] - sc.events, maxOmem: n.omem}
		if wall > 0 {
			row.pubRate = float64(published[i]) / wall.Seconds()
		}
		if sc.last > 0 && sc.events > 0 {
			row.rate = float64(sc.events) / time.Unix(0, sc.last).Sub(start).Seconds()
		}
		if other := setsOnNode[i] - published[i]; other != 0 {
			row.notes = append(row.notes, fmt.Sprintf("cmdstat_set %d: %d SETs besides the writer's (keyrelay's own keys, not records)", setsOnNode[i], other))
		}
		info, logged := outputBufferDisconnects(ctx, n.rc, n.r)
		// The server's two counts and keyrelay's reconnects see the same
		// disconnections: the largest, not the sum.
		row.disconnects = max(info, logged, int64(sumLabel(m, "keyrelay_subscription_reconnects_total", `node="`+n.r.Addr+`"`)))
		if max(info, logged) > 0 {
			row.notes = append(row.notes, discNote(info, logged))
		}
		rows = append(rows, row)
		tot.received += row.received
		tot.gaps += row.gaps
		tot.disconnects += row.disconnects
		tot.maxOmem = max(tot.maxOmem, row.maxOmem)
	}
	// Lines whose source is not a primary's address (none expected).
	others := slices.Sorted(func(yield func(string) bool) {
		for k := range tally {
			if !yield(k) {
				return
			}
		}
	})
	for _, src := range others {
		sc := tally[src]
		tot.received += sc.events
		tot.gaps += sc.gaps
		tot.notes = append(tot.notes, fmt.Sprintf("%d key events and %d gap records with source %q, not a primary", sc.events, sc.gaps, src))
	}
	tot.lost = total - tot.received
	if !done.IsZero() && done.After(start) {
		tot.rate = float64(tot.received) / done.Sub(start).Seconds()
	}
	lines := kr.lines.n.Load()
	delivered := int64(m["keyrelay_records_delivered_total"])
	tot.notes = append(tot.notes, fmt.Sprintf("keyrelay_notifications_received_total %d, keyrelay_records_delivered_total %d (gap records included), stdout lines %d",
		int64(m["keyrelay_notifications_received_total"]), delivered, lines))
	if dropped := int64(m["keyrelay_records_dropped_total"]); dropped > 0 {
		tot.notes = append(tot.notes, fmt.Sprintf("keyrelay_records_dropped_total %d (buffer overflow, in gap records): lost − dropped = %d",
			dropped, tot.lost-dropped))
	}
	if tot.received > 0 {
		tot.notes = append(tot.notes, fmt.Sprintf("keyrelay CPU %.2f s per million received", tot.cpu.Seconds()*1e6/float64(tot.received)))
	}
	tot.notes = append(tot.notes, fmt.Sprintf("harness CPU (writer, stdout reader, sampler) %.2f s", (self1-self0).Seconds()))
	if maxBuffer > 0 {
		tot.notes = append(tot.notes, fmt.Sprintf("max buffered records %.0f", maxBuffer))
	}
	tot.notes = append(tot.notes, fmt.Sprintf("writer: %d×%d connections, pipelines of %d, %.2f s", len(nodes), clusterWriters, clusterPipeline, wall.Seconds()))
	return append(rows, tot), werr
}

// waitSubscribed waits until the node has a pattern subscriber (keyrelay).
func (n *clusterNode) waitSubscribed(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		list, err := n.rc.ClientList(ctx).Result()
		for _, cl := range parseClients(list) {
			if cl["psub"] != "" && cl["psub"] != "0" {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no pattern subscriber after 15 s (%v)", err)
		}
		if !sleep(ctx, 20*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// outputBufferDisconnects returns a server's INFO stats
// client_output_buffer_limit_disconnections (-1 when its INFO has no such
// field: Redis before 7.2) and the clients its log says were closed for the
// limit. Both count the same disconnections: take the larger, never the sum.
func outputBufferDisconnects(ctx context.Context, rc *redis.Client, r *servers.Redis) (info, logged int64) {
	info = -1
	if stats, err := rc.Info(ctx, "stats").Result(); err == nil {
		for _, line := range strings.Split(stats, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "client_output_buffer_limit_disconnections:"); ok {
				info, _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	return info, int64(strings.Count(r.Log(), "output buffer limits"))
}

// discNote says how many output-buffer disconnections a server reported.
func discNote(info, logged int64) string {
	in := "no client_output_buffer_limit_disconnections in INFO"
	if info >= 0 {
		in = fmt.Sprintf("%d (INFO)", info)
	}
	return fmt.Sprintf("server: output-buffer disconnections %s, %d in the log", in, logged)
}

// setCalls returns cmdstat_set calls since CONFIG RESETSTAT.
func setCalls(ctx context.Context, rc *redis.Client) (int64, error) {
	info, err := rc.Info(ctx, "commandstats").Result()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_set:calls="); ok {
			v, _, _ = strings.Cut(v, ",")
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, nil
}

// sumLabel sums the series of metric name whose labels contain label.
func sumLabel(m map[string]float64, name, label string) float64 {
	var v float64
	for series, x := range m {
		if strings.HasPrefix(series, name+"{") && strings.Contains(series, label) {
			v += x
		}
	}
	return v
}

// clusterWriters is the number of writer goroutines per primary, each with
// its own connection and one pipeline of clusterPipeline SETs in flight.
const (
	clusterWriters  = 2
	clusterPipeline = 64
)

// clusterWrite writes n SETs at full speed: clusterWriters goroutines per
// primary, each sending pipelines of clusterPipeline SETs straight to its
// primary (writeSets). The keys are unique, key:{tag}:<seq>, the tag
// cycling through every slot the primary owns (CLUSTER SLOTS), so the
// writes cover all 16384 slots and each primary's share is counted exactly:
// cmdstat_set cannot tell these SETs from keyrelay's own writes (its alive
// key). It returns the SETs each primary acknowledged, the overall rate and
// the wall time.
func clusterWrite(ctx context.Context, nodes []*clusterNode, n int) ([]int64, float64, time.Duration, error) {
	slots, err := nodes[0].rc.ClusterSlots(ctx).Result()
	if err != nil {
		return nil, 0, 0, fmt.Errorf("cluster slots: %w", err)
	}
	index := map[string]int{}
	for i, nd := range nodes {
		index[nd.r.Addr] = i
	}
	var slotTag [16384]string
	for i, left := 0, len(slotTag); left > 0; i++ {
		tag := strconv.Itoa(i)
		if sl := bridge.KeySlot(tag); slotTag[sl] == "" {
			slotTag[sl] = tag
			left--
		}
	}
	tags := make([][]string, len(nodes))
	for _, sr := range slots {
		if len(sr.Nodes) == 0 {
			continue
		}
		i, ok := index[sr.Nodes[0].Addr]
		if !ok {
			return nil, 0, 0, fmt.Errorf("cluster slots: %d-%d on %s, not a primary we know", sr.Start, sr.End, sr.Nodes[0].Addr)
		}
		for sl := sr.Start; sl <= sr.End; sl++ {
			tags[i] = append(tags[i], "key:{"+slotTag[sl]+"}:")
		}
	}
	for i, t := range tags {
		if len(t) == 0 {
			return nil, 0, 0, fmt.Errorf("%s owns no slot", nodes[i].r.Addr)
		}
	}

	acked := make([]atomic.Int64, len(nodes))
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, len(nodes)*clusterWriters)
	start := time.Now()
	for i, nd := range nodes {
		for w := range clusterWriters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := writeSets(ctx, nd.r.Addr, tags[i], w*len(tags[i])/clusterWriters, &next, int64(n), &acked[i]); err != nil {
					errs <- fmt.Errorf("writer on %s: %w", nd.r.Addr, err)
				}
			}()
		}
	}
	wg.Wait()
	wall := time.Since(start)
	close(errs)
	per := make([]int64, len(nodes))
	var total int64
	for i := range acked {
		per[i] = acked[i].Load()
		total += per[i]
	}
	var werr error
	for err := range errs {
		werr = errors.Join(werr, err)
	}
	return per, float64(total) / wall.Seconds(), wall, werr
}

// writeSets takes clusterPipeline sequence numbers at a time from next (up
// to n) and writes them as SET <prefix><seq> xxx, the prefix cycling through
// prefixes from index t, in one pipeline per batch on its own connection,
// in RESP written by hand: go-redis pipelines cost the harness twice the CPU
// per SET, CPU that keyrelay and the servers share on a small machine. It
// adds the SETs Redis answered +OK to acked.
func writeSets(ctx context.Context, addr string, prefixes []string, t int, next *atomic.Int64, n int64, acked *atomic.Int64) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	br := bufio.NewReaderSize(conn, 64<<10)
	buf := make([]byte, 0, clusterPipeline*64)
	for {
		end := next.Add(clusterPipeline)
		first := end - clusterPipeline
		if first >= n {
			return nil
		}
		end = min(end, n)
		buf = buf[:0]
		for seq := first; seq < end; seq++ {
			p := prefixes[t]
			if t++; t == len(prefixes) {
				t = 0
			}
			digits := len(strconv.AppendInt(nil, seq, 10))
			buf = append(buf, "*3\r\n$3\r\nSET\r\n$"...)
			buf = strconv.AppendInt(buf, int64(len(p)+digits), 10)
			buf = append(buf, "\r\n"...)
			buf = append(buf, p...)
			buf = strconv.AppendInt(buf, seq, 10)
			buf = append(buf, "\r\n$3\r\nxxx\r\n"...)
		}
		if _, err := conn.Write(buf); err != nil {
			return err
		}
		var ok int64
		var failed []byte
		for range end - first {
			line, err := br.ReadSlice('\n')
			if err != nil {
				acked.Add(ok)
				return err
			}
			if bytes.Equal(line, []byte("+OK\r\n")) {
				ok++
			} else if failed == nil {
				failed = bytes.Clone(line)
			}
		}
		acked.Add(ok)
		if failed != nil {
			return fmt.Errorf("SET answered %q", bytes.TrimSpace(failed))
		}
	}
}
