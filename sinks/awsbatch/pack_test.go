package awsbatch

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/bridge"
)

func packEntries(n int, key func(i int) string) []*bridge.Entry {
	ids := bridge.NewIDGenerator()
	now := time.Now()
	var out []*bridge.Entry
	for i := range n {
		rec := bridge.Record{Type: bridge.TypeKeyEvent, ID: ids.New(now), Time: now, Source: "127.0.0.1:6379",
			DB: i % 2, Event: []string{"expired", "set", "del"}[i%3], Key: key(i)}
		if i%50 == 49 {
			rec = bridge.Record{Type: bridge.TypeGap, ID: ids.New(now), Time: now, Source: "127.0.0.1:6379",
				Since: now, Until: now, Reason: bridge.GapReconnect}
		}
		out = append(out, &bridge.Entry{Record: rec, Body: rec.AppendJSON(nil)})
	}
	return out
}

// TestPack checks the packing invariants on batches shaped as the Relay
// shapes them from PackedLimits: every entry in exactly one message, in
// batch order within its message; a message's attributes are exactly those
// of each of its records plus count; messages within msgCap, requests within
// reqCap and 10 messages; one request per batch; records with keys holding
// newlines and quotes survive Unpack byte for byte.
func TestPack(t *testing.T) {
	for _, tc := range []struct {
		name           string
		msgCap, reqCap int
		keyLen         int
	}{
		{"SQS 1 MiB queue", 1 << 20, 1 << 20, 20},
		{"SQS 256 KiB queue", 256 << 10, 1 << 20, 20},
		{"SNS default topic", 256 << 10, 256 << 10, 20},
		{"SQS 2 KiB queue", 2048, 1 << 20, 20},
		{"large records", 256 << 10, 1 << 20, 60000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim := PackedLimits(tc.msgCap, tc.reqCap, 4)
			if lim.MaxEntryBytes > lim.MaxBatchBytes || lim.MaxBatchBytes > tc.reqCap || lim.MaxEntryBytes > tc.msgCap {
				t.Fatalf("limits %+v for message cap %d, request cap %d", lim, tc.msgCap, tc.reqCap)
			}
			all := packEntries(min(20000, 20<<20/tc.keyLen), func(i int) string {
				k := fmt.Sprintf("k\n\"%d\"", i)
				return k + strings.Repeat("x", max(0, tc.keyLen-len(k))+i%7)
			})
			for len(all) > 0 { // the Relay's Take
				n, size := 0, 0
				for n < len(all) && n < lim.MaxEntries {
					es := PackedEntrySize(all[n])
					if n > 0 && size+es > lim.MaxBatchBytes {
						break
					}
					size += es
					n++
				}
				batch := all[:n]
				all = all[n:]
				checkPack(t, batch, tc.msgCap, tc.reqCap)
			}
		})
	}
}

func checkPack(t *testing.T, batch []*bridge.Entry, msgCap, reqCap int) {
	t.Helper()
	reqs, refused := Pack(batch, msgCap, reqCap)
	if len(refused) > 0 {
		t.Fatalf("refused %v", refused[0].Err)
	}
	if len(reqs) != 1 {
		t.Errorf("batch of %d entries packed into %d requests, want 1", len(batch), len(reqs))
	}
	seen := make([]int, len(batch))
	for _, req := range reqs {
		if len(req) > MaxBatchEntries {
			t.Errorf("request of %d messages", len(req))
		}
		total := 0
		for _, m := range req {
			total += m.Size
			size := len(m.Body)
			attrs := map[string]string{}
			for _, a := range m.Attrs {
				size += len(a.Name) + len(a.DataType) + len(a.Value)
				attrs[a.Name] = a.DataType + ":" + a.Value
			}
			if size != m.Size || size > msgCap {
				t.Errorf("message size %d (computed %d), cap %d", m.Size, size, msgCap)
			}
			lines := Unpack(m.Body)
			if len(lines) != len(m.Entries) || attrs[AttrCount] != "Number:"+strconv.Itoa(len(lines)) {
				t.Fatalf("%d lines, %d entries, count attribute %q", len(lines), len(m.Entries), attrs[AttrCount])
			}
			for j, i := range m.Entries {
				if j > 0 && i <= m.Entries[j-1] {
					t.Errorf("entries out of batch order: %v", m.Entries)
				}
				seen[i]++
				if !bytes.Equal(lines[j], batch[i].Body) {
					t.Fatalf("line %d is %q, want %q", j, lines[j], batch[i].Body)
				}
				recAttrs := Attributes(&batch[i].Record)
				if len(recAttrs)+1 != len(attrs) {
					t.Fatalf("message attributes %v, record's %v", attrs, recAttrs)
				}
				for _, a := range recAttrs {
					if attrs[a.Name] != a.DataType+":"+a.Value {
						t.Fatalf("message attributes %v, record's %v", attrs, recAttrs)
					}
				}
			}
		}
		if total > reqCap {
			t.Errorf("request of %d bytes, cap %d", total, reqCap)
		}
	}
	for i, n := range seen {
		if n != 1 {
			t.Fatalf("entry %d packed %d times", i, n)
		}
	}
}

// TestPackRefuses: a body with a newline cannot be packed, nor a record that
// exceeds the message size alone; both are permanent failures of exactly
// those entries, sent nowhere.
func TestPackRefuses(t *testing.T) {
	es := packEntries(3, func(i int) string { return fmt.Sprint("k", i) })
	bad := *es[1]
	bad.Body = append(append([]byte(nil), bad.Body...), '\n')
	big := *es[2]
	big.Record.Key = strings.Repeat("b", 3000)
	big.Body = big.Record.AppendJSON(nil)
	reqs, refused := Pack([]*bridge.Entry{es[0], &bad, &big}, 2048, 1<<20)
	if len(reqs) != 1 || len(reqs[0]) != 1 || fmt.Sprint(reqs[0][0].Entries) != "[0]" {
		t.Errorf("requests %+v, want entry 0 alone", reqs)
	}
	if len(refused) != 2 || refused[0].Index != 1 || refused[1].Index != 2 ||
		!bridge.IsPermanent(refused[0].Err) || !bridge.IsPermanent(refused[1].Err) {
		t.Errorf("refused %+v, want entries 1 and 2, permanent", refused)
	}
}

func TestParsePacking(t *testing.T) {
	for in, want := range map[string]Packing{"": PackOff, "off": PackOff, "ndjson": PackNDJSON} {
		if got, err := ParsePacking(in); err != nil || got != want {
			t.Errorf("ParsePacking(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParsePacking("json"); err == nil {
		t.Error("ParsePacking(json) accepted")
	}
}
