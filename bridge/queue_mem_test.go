package bridge

import (
	"context"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// BenchmarkQueueBytesPerRecord fills a Queue with 1 M key events as the
// reader emits them (newEntry, as Relay.Emit; keys of 20 to 40 bytes, a few
// event names, an ElastiCache-length source) and reports the heap they hold:
// HeapInuse after a GC, minus before, per record (heap-B/record), and the
// same with the GC's headroom at GOGC=100 (Sys, heap-sys-B/record). The
// records are then drained, to show the queue gives its memory back.
func BenchmarkQueueBytesPerRecord(b *testing.B) {
	const n = 1_000_000
	ids := NewIDGenerator()
	events := []string{"expired", "set", "del", "expire", "hset"}
	source := "my-cache.abc123.ng.0001.use1.cache.amazonaws.com:6379"
	var before, after runtime.MemStats
	for range b.N {
		runtime.GC()
		runtime.ReadMemStats(&before)
		q := NewQueue(n, 1<<40, DropNewest)
		now := time.Now()
		bodies := 0
		for i := range n {
			key := "session:" + strconv.Itoa(100000+i) + ":user:" + strconv.Itoa(i%100000)
			if i%3 == 0 {
				key += ":profile:cache"
			}
			rec := Record{Type: TypeKeyEvent, ID: ids.New(now), Time: now.Add(time.Duration(i)), Source: source,
				DB: i % 2, Event: events[i%len(events)], Key: key}
			e := newEntry(&rec)
			bodies += len(e.Body)
			q.Push(e)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/n, "heap-B/record")
		b.ReportMetric(float64(after.HeapSys-before.HeapSys)/n, "heap-sys-B/record")
		b.ReportMetric(float64(bodies)/n, "body-B/record")
		lim := Limits{MaxEntries: 10}
		for taken := 0; taken < n; {
			taken += len(q.Take(context.Background(), lim, func(e *Entry) int { return len(e.Body) }, 0))
		}
		runtime.KeepAlive(q)
	}
}
