package spool

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkAppend appends 200-byte records in batches; one op is one record
// (ns/op and allocs/op per record, MB/s of payload; ns/append per call).
// Spent segments are dropped and reclaimed outside the timer.
func BenchmarkAppend(b *testing.B) {
	for _, policy := range []SyncPolicy{SyncInterval, SyncEvery} {
		for _, batch := range []int{1, 64, 1024} {
			b.Run(fmt.Sprintf("%s/batch=%d", policy, batch), func(b *testing.B) {
				l, err := Open(b.TempDir(), Options{Sync: policy})
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close()
				c, _ := l.Cursor("bench")
				ps := make([][]byte, batch)
				for i := range ps {
					ps[i] = payload(uint64(i))
				}
				b.SetBytes(200)
				b.ReportAllocs()
				b.ResetTimer()
				appends, written := 0, 0
				for n := 0; n < b.N; n += batch {
					first, err := l.Append(ps[:min(batch, b.N-n)])
					if err != nil {
						b.Fatal(err)
					}
					appends++
					if written += min(batch, b.N-n) * 224; written > 512<<20 {
						b.StopTimer()
						c.Drop(first)
						l.Checkpoint()
						written = 0
						b.StartTimer()
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(appends), "ns/append")
			})
		}
	}
}

// BenchmarkNextAck reads and acknowledges 200-byte records in batches of
// 256, from a log filled (and fsynced) beforehand; one op is one record.
func BenchmarkNextAck(b *testing.B) {
	l, err := Open(b.TempDir(), Options{MaxBytes: 8 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	c, _ := l.Cursor("bench")
	ps := make([][]byte, 1024)
	for i := range ps {
		ps[i] = payload(uint64(i))
	}
	for n := 0; n < b.N; n += len(ps) {
		if _, err := l.Append(ps[:min(len(ps), b.N-n)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.Sync(); err != nil { // no writeback under the timer
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b.SetBytes(200)
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; {
		recs, err := c.Next(ctx, 256, 0)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Ack(recs[0].Seq, recs[len(recs)-1].Last()); err != nil {
			b.Fatal(err)
		}
		n += len(recs)
	}
}

// BenchmarkOverflowCheckpoint: what keyrelay pays per batch the bound
// refuses under drop-newest: the count added to a cursor and written at once
// (temporary file, fsync, rename, fsync of the directory), per cursor.
func BenchmarkOverflowCheckpoint(b *testing.B) {
	for _, cursors := range []int{1, 3} {
		b.Run(fmt.Sprintf("cursors=%d", cursors), func(b *testing.B) {
			l := openLog(b, b.TempDir(), testOptions())
			var cs []*Cursor
			for i := 0; i < cursors; i++ {
				c, err := l.Cursor(fmt.Sprintf("c%d", i))
				if err != nil {
					b.Fatal(err)
				}
				cs = append(cs, c)
			}
			at := time.Now()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for _, c := range cs {
					c.AddOverflow(Overflow{Count: 1024, Since: at, Until: at})
				}
				if err := l.Checkpoint(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
