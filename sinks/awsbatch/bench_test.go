package awsbatch

import (
	"testing"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/sinks/awsbatch/awsbatchtest"
)

// benchEntries returns n typical records (a set event, a ~20-byte key).
func benchEntries(n int) []*bridge.Entry { return awsbatchtest.TypicalEntries(n, "key:") }

// BenchmarkBatchSizing is the per-record batching cost of an unpacked
// SQS/SNS batch: the size the Relay measures against the batch limits and
// the message attributes the sink builds.
func BenchmarkBatchSizing(b *testing.B) {
	entries := benchEntries(MaxBatchEntries)
	b.ReportAllocs()
	for b.Loop() {
		for _, e := range entries {
			_ = EntrySize(e)
			_ = Attributes(&e.Record)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(entries)), "ns/record")
}

// BenchmarkPack packs one full SQS request's worth of records (1 MiB, 256
// KiB messages) with KEYRELAY_PACK=ndjson.
func BenchmarkPack(b *testing.B) {
	lim := PackedLimits(256<<10, 1<<20, 4)
	var entries []*bridge.Entry
	size := 0
	for _, e := range benchEntries(lim.MaxEntries) {
		if size += PackedEntrySize(e); size > lim.MaxBatchBytes {
			break
		}
		entries = append(entries, e)
	}
	b.ReportAllocs()
	for b.Loop() {
		Pack(entries, 256<<10, 1<<20)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(entries)), "ns/record")
	b.ReportMetric(float64(len(entries)), "records/request")
}
