package main

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// backlogResult is the memory a backlog takes: N records buffered behind a
// stdout sink that stopped taking them (the harness stops reading the
// pipe), RSS before and after.
type backlogResult struct {
	published       int64
	received        int64   // what keyrelay read of the burst: all of it unless Redis disconnected it
	held            int64   // records received and not yet on stdout: the buffer and the batch stuck in its write
	buffered        float64 // keyrelay_buffer_records once the burst is in
	bufferBytes     float64 // keyrelay_buffer_bytes: the buffered records' encoded size
	rss0, rss1, hwm int64   // KiB: before, with the backlog, peak
	delivered, lost int64   // after the sink came back; lost includes what a disconnect cost
	dropped, gaps   int64
	reconnects      int64
	timeline        []tick
}

// perRecord is the resident memory one held record costs, in bytes: the
// growth of the resident set over the records keyrelay holds.
func (b *backlogResult) perRecord() float64 {
	if b.held <= 0 {
		return 0
	}
	return float64(b.rss1-b.rss0) * 1024 / float64(b.held)
}

// backlog: N notifications at full speed while keyrelay's stdout sink is
// stalled, with a buffer that holds them all; keyrelay's resident set before
// and after, then the sink is released and the backlog delivered.
func (h *harness) backlog(ctx context.Context) (*backlogResult, error) {
	s, err := h.newSetup(ctx, false)
	if err != nil {
		return nil, err
	}
	defer s.close()
	env := []string{"KEYRELAY_SINKS=stdout",
		"KEYRELAY_BUFFER_RECORDS=" + strconv.Itoa(h.o.n+1000),
		"KEYRELAY_BUFFER_BYTES=" + strconv.Itoa((h.o.n+1000)*1024)}
	if err := s.startKeyrelay(ctx, env, true, false); err != nil {
		return nil, err
	}
	// Idle for a moment so start-up garbage is behind us.
	if !sleep(ctx, time.Second) {
		return nil, ctx.Err()
	}
	b := &backlogResult{rss0: procRSS(s.kr.pid())}
	s.kr.lines.hold.Lock()
	held := true
	defer func() {
		if held {
			s.kr.lines.hold.Unlock()
		}
	}()
	s.sample(ctx)
	if _, err := s.writeFull(ctx, h.o.n); err != nil {
		return nil, err
	}
	if b.published, err = s.published(ctx); err != nil {
		return nil, err
	}
	// Wait until keyrelay has read what it will get of the burst (all of
	// it, unless Redis disconnected it) and nothing has moved for 2 s.
	type look struct{ recv, buf float64 }
	last := look{-1, -1}
	lastChange := time.Now()
	for {
		m, err := s.kr.metrics()
		if err != nil {
			return nil, fmt.Errorf("keyrelay metrics: %w", err)
		}
		l := look{m["keyrelay_notifications_received_total"], m["keyrelay_buffer_records"]}
		if l != last {
			last, lastChange = l, time.Now()
		}
		if time.Since(lastChange) > 2*time.Second {
			b.received = int64(l.recv)
			b.buffered, b.bufferBytes = l.buf, m["keyrelay_buffer_bytes"]
			b.held = b.received - s.kr.lines.n.Load()
			break
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
	b.rss1 = procRSS(s.kr.pid())
	_, b.hwm, _ = procStat(s.kr.pid())

	// The sink comes back: everything received must be delivered.
	s.kr.lines.hold.Unlock()
	held = false
	lastLines, lastChange := int64(-1), time.Now()
	for {
		m, err := s.kr.metrics()
		if err != nil {
			return nil, fmt.Errorf("keyrelay metrics: %w", err)
		}
		lines := s.kr.lines.n.Load()
		b.gaps, b.dropped = int64(m["keyrelay_gaps_total"]), int64(m["keyrelay_records_dropped_total"])
		b.reconnects = int64(m["keyrelay_subscription_reconnects_total"])
		b.delivered = lines - b.gaps
		if b.delivered+b.dropped >= int64(m["keyrelay_notifications_received_total"]) {
			break
		}
		if lines != lastLines {
			lastLines, lastChange = lines, time.Now()
		}
		if time.Since(lastChange) > h.o.stall {
			return b, fmt.Errorf("backlog: no delivery for %s: %d of %.0f received delivered", h.o.stall, b.delivered, m["keyrelay_notifications_received_total"])
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return b, ctx.Err()
		}
	}
	s.stopSampling()
	b.timeline = s.timeline
	b.lost = b.published - b.delivered - b.dropped
	return b, nil
}

// String is the backlog run's one-line summary.
func (b *backlogResult) String() string {
	out := fmt.Sprintf("backlog behind a stalled stdout sink: %d published, %d received, %d held (%.0f in the sink buffer, %.1f MB encoded, %.0f B each; the rest in the batch stuck in its write); RSS %.1f MB idle → %.1f MB with the backlog (peak %.1f MB): %.0f bytes of RSS per held record; after the sink came back: %d delivered, %d dropped, %d lost, %d gap records",
		b.published, b.received, b.held, b.buffered, b.bufferBytes/1e6, b.bufferBytes/max(1, b.buffered),
		float64(b.rss0)/1024, float64(b.rss1)/1024, float64(b.hwm)/1024, b.perRecord(), b.delivered, b.dropped, b.lost, b.gaps)
	if b.received < b.published {
		out += fmt.Sprintf("; Redis disconnected keyrelay during the burst (%d reconnects): the backlog is smaller than N", b.reconnects)
	}
	return out
}
