//go:build integration

package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyrelay/keyrelay/bridge/bridgetest"
	"github.com/keyrelay/keyrelay/bridge/spool"
	"github.com/keyrelay/keyrelay/sinks/awsbatch/awsbatchtest"
)

// The tests in this file check the durable spool through the daemon, key by
// key: its bound under each overflow policy, a slow sink beside a fast one,
// and a spool directory damaged after a kill -9.

// pipeOut is a standard output that is a real pipe: the daemon's writes
// block once the pipe's buffer (64 KiB on Linux) is full, until Drain starts
// reading it into the daemon's Stdout.
type pipeOut struct {
	r, w *os.File
	once sync.Once
	done chan struct{}
}

// newPipeOut returns a pipe nobody reads yet; it is drained at the end of
// the test at the latest, so that the daemon can stop.
func newPipeOut(t *testing.T) *pipeOut {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &pipeOut{r: r, w: w, done: make(chan struct{})}
	t.Cleanup(func() {
		p.Drain(io.Discard)
		w.Close()
		<-p.done
		r.Close()
	})
	return p
}

// Drain starts copying what the pipe holds, and what comes, to out, a whole
// line per Write (out is parsed while the copy runs).
func (p *pipeOut) Drain(out io.Writer) {
	p.once.Do(func() {
		go func() {
			defer close(p.done)
			br := bufio.NewReaderSize(p.r, 1<<20)
			for {
				line, err := br.ReadBytes('\n')
				if err != nil {
					return // a line cut short by the end is not a record
				}
				_, _ = out.Write(line)
			}
		}()
	})
}

// recTime parses a record's time field.
func recTime(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("record time %q: %v", s, err)
	}
	return tm
}

// checkLostInWindows checks every key of keys (in the order Redis published
// them) that recs do not deliver against the gap records of the given
// reason: a lost key was received between the delivered keys written just
// before and just after it, so some gap window must overlap that interval.
// The gaps' counts must add up to the lost keys exactly. It returns the
// number of lost keys.
func checkLostInWindows(t *testing.T, keys []string, recs []testRecord, reason string) int {
	t.Helper()
	lost, counted := lostInWindows(t, keys, recs, reason)
	if counted != int64(lost) {
		t.Errorf("%s gap records count %d dropped, but %d of %d keys were not delivered", reason, counted, lost, len(keys))
	}
	return lost
}

// lostInWindows is checkLostInWindows without the check of the count: it
// returns the number of lost keys and the gaps' count.
func lostInWindows(t *testing.T, keys []string, recs []testRecord, reason string) (int, int64) {
	t.Helper()
	at := map[string]time.Time{}
	for _, r := range recs {
		if r.Type == "keyevent" && r.Key != nil {
			at[*r.Key] = recTime(t, r.Time)
		}
	}
	var gaps []gapWindow
	var counted int64
	for _, g := range ofType(recs, "gap") {
		if g.Reason != reason {
			continue
		}
		since, until := checkGap(t, g, reason)
		gaps = append(gaps, gapWindow{since, until, reason})
		counted += g.Dropped
	}
	lost, outside := 0, 0
	for i, k := range keys {
		if _, ok := at[k]; ok {
			continue
		}
		lost++
		var lo, hi time.Time // zero hi: no delivered key after it
		for j := i - 1; j >= 0; j-- {
			if tm, ok := at[keys[j]]; ok {
				lo = tm
				break
			}
		}
		for j := i + 1; j < len(keys); j++ {
			if tm, ok := at[keys[j]]; ok {
				hi = tm
				break
			}
		}
		inside := false
		for _, g := range gaps {
			if !g.until.Before(lo) && (hi.IsZero() || !g.since.After(hi)) {
				inside = true
				break
			}
		}
		if !inside {
			outside++
			if outside <= 5 {
				t.Errorf("key %s lost (received between %s and %s) outside every %s gap window %v",
					k, lo.Format(time.RFC3339Nano), hi.Format(time.RFC3339Nano), reason, gaps)
			}
		}
	}
	if outside > 0 {
		t.Errorf("%d of %d lost keys lie outside every %s gap window", outside, lost, reason)
	}
	return lost, counted
}

// TestSpoolDaemonOverflow: the stdout sink is a pipe nobody reads and the
// spool holds four 64 KiB segments. Writes go well beyond the bound; the
// subscription is broken in the middle, so that a gap record (reconnect)
// waits in the spool among the records. Then the pipe is read: every key is
// delivered or lies inside an overflow gap window, the overflow counts are
// exact, the reconnect gap record is delivered (a gap record is never
// dropped), and each policy keeps its end of the stream.
func TestSpoolDaemonOverflow(t *testing.T) {
	for _, policy := range []string{"drop-oldest", "drop-newest"} {
		t.Run(policy, func(t *testing.T) {
			const before, after = 1500, 4500
			r := bridgetest.StartRedis(t)
			out := newPipeOut(t)
			d := startDaemonTo(t, spoolEnv(r.Addr, t.TempDir(), "KEYRELAY_OVERFLOW", policy,
				"KEYRELAY_SPOOL_SEGMENT_BYTES", "65536", "KEYRELAY_SPOOL_MAX_BYTES", "262144"),
				func(*syncBuffer) io.Writer { return out.w })
			c := newWriter(t, r.Addr)
			keys := writeKeys(t, c, "a:", before)
			n, err := r.Client(0).ClientKillByFilter(context.Background(), "TYPE", "pubsub").Result()
			if err != nil || n < 1 {
				t.Fatalf("CLIENT KILL TYPE pubsub = %d, %v", n, err)
			}
			waitUntil(t, 10*time.Second, "the second subscription", func() bool {
				return strings.Count(d.Stderr.String(), `"msg":"subscribed"`) >= 2
			})
			keys = append(keys, writeKeys(t, c, "b:", after)...)
			d.waitLog("spool overflow dropped records", 10*time.Second)
			if got := len(d.records()); got != 0 {
				t.Fatalf("%d records read from a pipe nobody reads", got)
			}

			out.Drain(d.Stdout)
			d.waitRecords(15*time.Second, func(recs []testRecord) bool {
				var dropped int64
				for _, g := range gapsOf(recs, "overflow") {
					dropped += g.Dropped
				}
				return int64(len(keysOf(recs, "set")))+dropped >= int64(len(keys))
			})
			// The backlog is out: keys written now are all delivered.
			last := writeKeys(t, c, "c:", 10)
			keys = append(keys, last...)
			d.waitRecords(10*time.Second, func(recs []testRecord) bool {
				return hasKeys(recs, last)
			})
			time.Sleep(300 * time.Millisecond) // a late record or gap would show now
			recs := d.records()
			checkUnique(t, recs, "set")
			lost := checkLostInWindows(t, keys, recs, "overflow")
			if lost == 0 {
				t.Fatalf("nothing dropped: the bound was not reached")
			}
			if g := gapsOf(recs, "reconnect"); len(g) != 1 {
				t.Errorf("%d reconnect gap records delivered, want 1 (a gap record in the spool is never dropped)", len(g))
			}
			for _, g := range ofType(recs, "gap") {
				if g.Reason != "overflow" && g.Reason != "reconnect" {
					t.Errorf("unexpected gap record %+v", g)
				}
			}
			got := keysOf(recs, "set")
			ends := map[string][]string{"drop-newest": keys[:10], "drop-oldest": keys[len(keys)-30:]}
			for _, k := range ends[policy] {
				if got[k] == 0 {
					t.Errorf("%s: key %s not delivered", policy, k)
				}
			}
			t.Logf("%s: %d keys written, %d delivered, %d dropped in %d overflow gap records",
				policy, len(keys), len(got), lost, len(gapsOf(recs, "overflow")))
		})
	}
}

// spoolFrame is one frame of a segment file, as bridge/spool's doc.go
// describes the format: length u32 | crc u32 | seq u64 | time i64 | data,
// after a 32-byte header.
type spoolFrame struct {
	off, size int64
	seq       uint64
	at        int64 // unix ns
	data      []byte
}

// segFrames parses the valid frames at the start of a segment file.
func segFrames(t *testing.T, path string) []spoolFrame {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []spoolFrame
	le := binary.LittleEndian
	for off := int64(32); off+24 <= int64(len(b)); {
		n := int64(le.Uint32(b[off:]))
		if n < 16 || off+8+n > int64(len(b)) || crc32.Checksum(b[off+8:off+8+n], crc32.MakeTable(crc32.Castagnoli)) != le.Uint32(b[off+4:]) {
			break
		}
		out = append(out, spoolFrame{off: off, size: 8 + n, seq: le.Uint64(b[off+8:]), at: int64(le.Uint64(b[off+16:])), data: b[off+24 : off+8+n]})
		off += 8 + n
	}
	return out
}

// encodeFrame encodes a frame as the spool writes it.
func encodeFrame(seq uint64, at int64, data []byte) []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, uint32(16+len(data)))
	b = le.AppendUint32(b, 0)
	b = le.AppendUint64(b, seq)
	b = le.AppendUint64(b, uint64(at))
	b = append(b, data...)
	le.PutUint32(b[4:], crc32.Checksum(b[8:], crc32.MakeTable(crc32.Castagnoli)))
	return b
}

// appendFile appends b to the file at path.
func appendFile(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// copyDir copies the regular files of src into a new directory.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// segments returns the paths of the segment files in dir, oldest first.
func segments(t *testing.T, dir string) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(paths)
	return paths
}

// spoolCommand runs `keyrelay spool` in-process (the re-executed binary
// costs seconds under -race; TestSpoolSurvivesKill runs it as a process)
// and returns what it printed; a nil error is exit status 0.
func spoolCommand(t *testing.T, env map[string]string) (string, error) {
	t.Helper()
	stdout, stderr, err := runOnce(context.Background(), t, env, "spool")
	return stdout.String() + stderr.String(), err
}

var frameKeyRE = regexp.MustCompile(`"key":"([^"]+)"`)

// killedSpool runs keyrelay as a process whose standard output nobody
// reads, with KEYRELAY_SPOOL_SYNC=every, writes n keys, kills it with
// SIGKILL once the spool holds them all, and returns the keys and the
// records it delivered into the pipe before it died (whole lines only).
func killedSpool(t *testing.T, env map[string]string, dir string, c *redis.Client, prefix string, n int) ([]string, []testRecord) {
	t.Helper()
	u := startUnread(t, env)
	keys := writeKeys(t, c, prefix, n)
	waitUntil(t, 20*time.Second, "the spool to hold every record", func() bool {
		st, err := spool.Inspect(dir)
		return err == nil && st.Last >= uint64(n)
	})
	return keys, u.kill()
}

// spoolDamage is one way of damaging a spool directory left by a kill -9.
// It returns the keys whose records it destroyed with their frames' times,
// and what `keyrelay spool` must say about it.
type spoolDamage struct {
	name   string
	damage func(t *testing.T, dir string, acked uint64) (lost map[string]time.Time, says string)
	found  string // what the restart's log says
}

// quarantineExpected reports whether the damage must end in a *.corrupt file (a
// torn tail is cut instead).
func (d spoolDamage) quarantineExpected() bool { return strings.Contains(d.found, "quarantined") }

// TestSpoolDaemonDamage: keyrelay is killed with a backlog in its spool
// (KEYRELAY_SPOOL_SYNC=every); copies of the directory are damaged as a
// crash or a disk can: a torn frame, a zero-filled tail and a garbage tail
// after the last record; a byte flipped in a record in the middle of an
// older segment, of the last one, in a record's length, in a segment's
// header. `keyrelay spool` exits 0 on each and names the damage (file, byte
// count or sequence number), and keyrelay starts on each: a torn tail costs
// nothing (every key is delivered); a flipped byte in a record costs exactly
// that record, which one gap record with reason spool covers (count and
// window); a damaged segment is quarantined (*.corrupt); every other key is
// delivered, duplicates with the same id, and new writes flow.
func TestSpoolDaemonDamage(t *testing.T) {
	const n = 2000
	r := bridgetest.StartRedis(t)
	c := newWriter(t, r.Addr)
	dir := t.TempDir()
	env := func(dir string) map[string]string {
		return spoolEnv(r.Addr, dir, "KEYRELAY_SPOOL_SYNC", "every", "KEYRELAY_SPOOL_SEGMENT_BYTES", "65536",
			"KEYRELAY_SPOOL_MAX_BYTES", "1048576") // batches of at most 128 KiB: several segments
	}
	keys, before := killedSpool(t, env(dir), dir, c, "dmg:", n)
	st, err := spool.Inspect(dir)
	if err != nil || len(st.Cursors) != 1 {
		t.Fatalf("spool after the kill: %+v, %v", st, err)
	}
	acked := st.Cursors[0].Acked
	t.Logf("killed with %d records in %d segments, %d delivered before the kill, cursor at %d",
		st.Last, st.Files, len(before), acked)
	if acked >= uint64(n)/2 || st.Files < 3 {
		t.Fatalf("no backlog to damage: %d records acknowledged, %d segments", acked, st.Files)
	}

	if out, err := spoolCommand(t, env(dir)); err != nil || !strings.Contains(out, "every checksum valid") {
		t.Errorf("keyrelay spool on the undamaged spool: %v\n%s", err, out)
	}

	// flip flips one byte of the middle record of a segment beyond the
	// cursor, at offset at in its frame (24 and more: its data), and returns
	// that record's key.
	// beyond the cursor, and returns that record's key.
	flip := func(t *testing.T, path string, acked uint64, at func(fr spoolFrame) int64) (map[string]time.Time, string) {
		frames := segFrames(t, path)
		i := len(frames) / 2
		fr := frames[i]
		if fr.seq <= acked || i == 0 || i == len(frames)-1 {
			t.Fatalf("%s: frame %d (seq %d) is no record in the middle beyond the cursor (%d)", path, i, fr.seq, acked)
		}
		m := frameKeyRE.FindSubmatch(fr.data)
		if m == nil {
			t.Fatalf("no key in the frame: %q", fr.data)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[fr.off+at(fr)] ^= 0x5a
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return map[string]time.Time{string(m[1]): time.Unix(0, fr.at)},
			fmt.Sprintf("%s: damaged: 1 record lost (seq %d to %d", filepath.Base(path), fr.seq, fr.seq)
	}
	inData := func(fr spoolFrame) int64 { return 24 + int64(len(fr.data))/2 }
	torn := func(path string, n int) string {
		return fmt.Sprintf("%s: torn tail: %d bytes after the last whole record", filepath.Base(path), n)
	}
	lastSeg := func(t *testing.T, dir string) string {
		segs := segments(t, dir)
		return segs[len(segs)-1]
	}
	cases := []spoolDamage{
		{"torn frame", func(t *testing.T, dir string, _ uint64) (map[string]time.Time, string) {
			path := lastSeg(t, dir)
			frames := segFrames(t, path)
			last := frames[len(frames)-1]
			fr := encodeFrame(last.seq+1, time.Now().UnixNano(), last.data)
			appendFile(t, path, fr[:len(fr)/2])
			return nil, torn(path, len(fr)/2)
		}, `"msg":"spool: cut torn tail"`},
		{"zero-filled tail", func(t *testing.T, dir string, _ uint64) (map[string]time.Time, string) {
			path := lastSeg(t, dir)
			appendFile(t, path, make([]byte, 8192))
			return nil, torn(path, 8192)
		}, `"msg":"spool: cut torn tail"`},
		{"garbage tail", func(t *testing.T, dir string, _ uint64) (map[string]time.Time, string) {
			path := lastSeg(t, dir)
			g := make([]byte, 5000)
			rand.New(rand.NewSource(1)).Read(g)
			appendFile(t, path, g)
			return nil, torn(path, 5000)
		}, `"msg":"spool: cut torn tail"`},
		{"flipped byte in an older segment", func(t *testing.T, dir string, acked uint64) (map[string]time.Time, string) {
			segs := segments(t, dir)
			return flip(t, segs[len(segs)/2], acked, inData)
		}, `"msg":"spool: quarantined damaged segment"`},
		{"flipped byte in the last segment", func(t *testing.T, dir string, acked uint64) (map[string]time.Time, string) {
			return flip(t, lastSeg(t, dir), acked, inData)
		}, `"msg":"spool: quarantined damaged segment"`},
		{"flipped byte in a record's length", func(t *testing.T, dir string, acked uint64) (map[string]time.Time, string) {
			segs := segments(t, dir)
			return flip(t, segs[len(segs)/2], acked, func(spoolFrame) int64 { return 1 })
		}, `"msg":"spool: quarantined damaged segment"`},
		{"flipped byte in a segment header", func(t *testing.T, dir string, _ uint64) (map[string]time.Time, string) {
			segs := segments(t, dir)
			path := segs[len(segs)/2]
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b[20] ^= 0x5a // the creation time: the header's checksum fails, every record is intact
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			return nil, filepath.Base(path) + ": invalid header"
		}, `"msg":"spool: quarantined damaged segment"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t, dir)
			lost, says := tc.damage(t, dir, acked)
			env := env(dir)

			// keyrelay spool says what it found, and only that.
			out, err := spoolCommand(t, env)
			if err != nil {
				t.Fatalf("keyrelay spool on a damaged spool: %v\n%s", err, out)
			}
			if !strings.Contains(out, says) || strings.Count(out, ": torn tail: ")+strings.Count(out, ": damaged: ")+
				strings.Count(out, ": invalid header") != 1 || !strings.Contains(out, "1 file with findings") {
				t.Errorf("keyrelay spool does not say %q (and nothing else wrong):\n%s", says, out)
			}
			t.Logf("keyrelay spool:\n%s", out)

			d := startDaemon(t, env)
			ids := map[string]string{}
			for _, rec := range before {
				if rec.Type == "keyevent" && rec.Key != nil {
					ids[*rec.Key] = rec.ID
				}
			}
			recs := d.waitRecords(15*time.Second, func(recs []testRecord) bool {
				got := keysOf(recs, "set")
				for _, k := range keys {
					if got[k] == 0 && ids[k] == "" {
						if _, ok := lost[k]; !ok {
							return false
						}
					}
				}
				return len(gapsOf(recs, "spool")) >= min(len(lost), 1)
			})
			time.Sleep(300 * time.Millisecond) // a late record or gap would show now
			recs = d.records()
			for _, rec := range recs {
				if rec.Type != "keyevent" || rec.Key == nil {
					continue
				}
				if id, ok := ids[*rec.Key]; ok && id != rec.ID {
					t.Errorf("key %s delivered twice with different ids %s and %s", *rec.Key, id, rec.ID)
				}
				ids[*rec.Key] = rec.ID
			}
			// Key by key: what is not delivered is exactly what the damage
			// destroyed, inside the window of the spool gap record.
			var gaps []gapWindow
			var counted int64
			for _, g := range gapsOf(recs, "spool") {
				since, until := checkGap(t, g, "spool")
				gaps = append(gaps, gapWindow{since, until, "spool"})
				counted += g.Dropped
			}
			missing := 0
			for _, k := range keys {
				if ids[k] != "" {
					if _, ok := lost[k]; ok {
						t.Errorf("key %s delivered, but its record was destroyed", k)
					}
					continue
				}
				missing++
				at, ok := lost[k]
				if !ok {
					t.Errorf("key %s not delivered", k)
					continue
				}
				at = at.Truncate(time.Microsecond)
				inside := false
				for _, g := range gaps {
					if !at.Before(g.since) && !at.After(g.until) {
						inside = true
					}
				}
				if !inside {
					t.Errorf("key %s, appended at %s, lost outside every spool gap window %v", k, at.Format(time.RFC3339Nano), gaps)
				}
			}
			if counted != int64(missing) || missing != len(lost) {
				t.Errorf("spool gap records count %d lost, %d keys missing, %d destroyed", counted, missing, len(lost))
			}
			// Writing goes on after the repair: new keys are delivered, and
			// a damaged last segment is quarantined once the spool has moved
			// on to a new one.
			later := writeKeys(t, c, "later:"+tc.name+":", 10)
			d.waitRecords(10*time.Second, func(recs []testRecord) bool {
				return hasKeys(recs, later)
			})
			if tc.quarantineExpected() {
				waitUntil(t, 10*time.Second, "the damaged segment quarantined", func() bool {
					q, _ := filepath.Glob(filepath.Join(dir, "*.corrupt"))
					return len(q) == 1
				})
			} else if q, _ := filepath.Glob(filepath.Join(dir, "*.corrupt")); len(q) > 0 {
				t.Errorf("quarantined %v after a torn tail", q)
			}
			if err := d.Stop(); err != nil {
				t.Errorf("stop: %v", err)
			}
			if !strings.Contains(d.Stderr.String(), tc.found) {
				t.Errorf("the log does not say %q", tc.found)
			}
		})
	}
}

// accounted returns whether every key is delivered in recs or counted by
// one of its overflow gap records.
func accounted(keys []string, recs []testRecord) bool {
	var dropped int64
	for _, g := range gapsOf(recs, "overflow") {
		dropped += g.Dropped
	}
	return int64(len(keysOf(recs, "set")))+dropped >= int64(len(keys))
}

// TestSpoolDaemonSlowAndFastSink: two sinks read one spool of four 64 KiB
// segments: stdout is a pipe nobody reads, SQS (fauxqs) keeps up (each
// chunk of writes waits until the queue has it, or has counted it). Every
// key lost for a sink lies inside one of that sink's overflow gap windows,
// with exact counts. drop-oldest: only stdout drops, SQS receives every key
// and no gap record. drop-newest (docs/delivery.md: "drops arriving records
// for every sink"): once the stuck sink has filled the spool, SQS loses the
// arriving records too, each of them also lost for stdout.
func TestSpoolDaemonSlowAndFastSink(t *testing.T) {
	for _, policy := range []string{"drop-oldest", "drop-newest"} {
		t.Run(policy, func(t *testing.T) { testSlowAndFastSink(t, policy) })
	}
}

func testSlowAndFastSink(t *testing.T, policy string) {
	const chunks, chunk = 10, 200
	r := bridgetest.StartRedis(t)
	bridgetest.StartFauxqs(t)
	sqsc, _ := awsbatchtest.Clients(t)
	queueURL, _ := awsbatchtest.CreateQueue(t, sqsc, awsbatchtest.UniqueName("fast", false), nil)
	reader := awsbatchtest.NewReader(t, sqsc, queueURL)
	out := newPipeOut(t)
	d := startDaemonTo(t, spoolEnv(r.Addr, t.TempDir(), "KEYRELAY_OVERFLOW", policy,
		"KEYRELAY_SINKS", "stdout,sqs", "KEYRELAY_SQS_QUEUE_URL", queueURL,
		"KEYRELAY_SPOOL_SEGMENT_BYTES", "65536", "KEYRELAY_SPOOL_MAX_BYTES", "262144"),
		func(*syncBuffer) io.Writer { return out.w })

	c := newWriter(t, r.Addr)
	var keys []string
	sqsRecs := func() []testRecord {
		var recs []testRecord
		for _, m := range reader.Poll() {
			rec, err := bridgetest.ParseRecord([]byte(m.Body))
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, testRecord(rec))
		}
		return recs
	}
	for i := range chunks {
		keys = append(keys, writeKeys(t, c, "k"+strconv.Itoa(i)+":", chunk)...)
		waitUntil(t, 10*time.Second, "SQS to receive (or count) the keys written so far", func() bool {
			return accounted(keys, sqsRecs())
		})
	}
	d.waitLog("spool overflow dropped records", 10*time.Second)

	out.Drain(d.Stdout)
	d.waitRecords(15*time.Second, func(recs []testRecord) bool { return accounted(keys, recs) })
	time.Sleep(300 * time.Millisecond) // a late record or gap would show now
	recs := d.records()
	checkUnique(t, recs, "set")
	lost := checkLostInWindows(t, keys, recs, "overflow")
	if lost == 0 {
		t.Fatalf("stdout dropped nothing: the bound was not reached")
	}
	for _, g := range ofType(recs, "gap") {
		if g.Reason != "overflow" {
			t.Errorf("unexpected gap record on stdout %+v", g)
		}
	}

	fast := sqsRecs()
	checkUnique(t, fast, "set")
	fastLost := checkLostInWindows(t, keys, fast, "overflow")
	for _, g := range ofType(fast, "gap") {
		if g.Reason != "overflow" {
			t.Errorf("unexpected gap record on SQS %+v", g)
		}
	}
	logged := map[string]bool{}
	m := regexp.MustCompile(`"msg":"gap: spool overflow dropped records","sink":"(\w+)"`).FindAllStringSubmatch(d.Stderr.String(), -1)
	for _, s := range m {
		logged[s[1]] = true
	}
	switch policy {
	case "drop-oldest":
		if fastLost > 0 || logged["sqs"] {
			t.Errorf("SQS, the sink that kept up, lost %d keys", fastLost)
		}
	case "drop-newest":
		if fastLost == 0 || !logged["sqs"] {
			t.Errorf("SQS lost nothing with drop-newest: the docs say arriving records are dropped for every sink")
		}
		got, slow := keysOf(fast, "set"), keysOf(recs, "set")
		for _, k := range keys {
			if got[k] == 0 && slow[k] > 0 {
				t.Errorf("key %s lost for SQS but delivered to stdout: drop-newest drops for every sink", k)
				break
			}
		}
	}
	t.Logf("%s: %d keys: SQS %d (%d dropped), stdout %d (%d dropped in %d overflow gap records)", policy,
		len(keys), len(keysOf(fast, "set")), fastLost, len(keysOf(recs, "set")), lost, len(gapsOf(recs, "overflow")))
}
