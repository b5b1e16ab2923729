//go:build integration

package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/keyrelay/keyrelay/bridge/bridgetest"
)

type ev struct {
	db    int
	event string
	key   string
}

func (d *daemon) events(t *testing.T) []ev {
	var out []ev
	for _, r := range d.records() {
		if r.Type == "keyevent" {
			out = append(out, ev{r.DB, r.Event, r.key(t)})
		}
	}
	return out
}

// waitEvents waits until the events received include want, in order
// (other events may be interleaved), and returns all events.
func (d *daemon) waitEvents(t *testing.T, want []ev) []ev {
	t.Helper()
	var got []ev
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = d.events(t)
		i := 0
		for _, g := range got {
			if i < len(want) && g == want[i] {
				i++
			}
		}
		if i == len(want) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("missing events from %v (first missing %v);\ngot %v", want, want[i], got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCommandFamilies(t *testing.T) {
	rs := bridgetest.StartRedis(t)
	d := startDaemon(t, map[string]string{"KEYRELAY_REDIS_URL": "redis://" + rs.Addr})
	ctx := context.Background()
	c0, c5 := rs.Client(0), rs.Client(5)
	must := func(err error) {
		t.Helper()
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
	}
	// string
	must(c0.Set(ctx, "s", "v", 0).Err())
	must(c0.Incr(ctx, "n").Err())
	must(c0.Append(ctx, "s", "w").Err())
	must(c0.SetRange(ctx, "s", 0, "x").Err())
	must(c0.IncrByFloat(ctx, "f", 1.5).Err())
	// generic
	must(c0.Expire(ctx, "s", time.Hour).Err())
	must(c0.Persist(ctx, "s").Err())
	must(c0.Rename(ctx, "s", "s2").Err())
	must(c0.Del(ctx, "s2").Err())
	must(c0.Set(ctx, "ttl", "v", 100*time.Millisecond).Err())
	// list
	must(c0.RPush(ctx, "l", "a", "b").Err())
	must(c0.LPush(ctx, "l", "c").Err())
	must(c0.LPop(ctx, "l").Err())
	must(c0.LSet(ctx, "l", 0, "z").Err())
	// hash
	must(c0.HSet(ctx, "h", "f", "1").Err())
	must(c0.HIncrBy(ctx, "h", "f", 1).Err())
	must(c0.HDel(ctx, "h", "f").Err())
	// set
	must(c0.SAdd(ctx, "st", "a").Err())
	must(c0.SRem(ctx, "st", "a").Err())
	// zset
	must(c0.ZAdd(ctx, "z", redis.Z{Score: 1, Member: "a"}).Err())
	must(c0.ZIncrBy(ctx, "z", 1, "a").Err())
	must(c0.ZRem(ctx, "z", "a").Err())
	// stream
	must(c0.XAdd(ctx, &redis.XAddArgs{Stream: "x", Values: []any{"f", "v"}}).Err())
	must(c0.XTrimMaxLen(ctx, "x", 0).Err())
	// another database
	must(c5.Set(ctx, "in5", "v", 0).Err())
	must(c5.Del(ctx, "in5").Err())
	time.Sleep(200 * time.Millisecond)
	must(c0.Get(ctx, "ttl").Err()) // touching it expires it now

	d.waitEvents(t, []ev{
		{0, "set", "s"}, {0, "incrby", "n"}, {0, "append", "s"}, {0, "setrange", "s"}, {0, "incrbyfloat", "f"},
		{0, "expire", "s"}, {0, "persist", "s"}, {0, "rename_from", "s"}, {0, "rename_to", "s2"}, {0, "del", "s2"},
		{0, "set", "ttl"}, {0, "expire", "ttl"},
		{0, "rpush", "l"}, {0, "lpush", "l"}, {0, "lpop", "l"}, {0, "lset", "l"},
		{0, "hset", "h"}, {0, "hincrby", "h"}, {0, "hdel", "h"}, {0, "del", "h"},
		{0, "sadd", "st"}, {0, "srem", "st"}, {0, "del", "st"},
		{0, "zadd", "z"}, {0, "zincr", "z"}, {0, "zrem", "z"}, {0, "del", "z"},
		{0, "xadd", "x"}, {0, "xtrim", "x"},
		{5, "set", "in5"}, {5, "del", "in5"},
		{0, "expired", "ttl"},
	})
	// Every record is well formed.
	ids := map[string]bool{}
	for _, r := range d.records() {
		if r.Type != "keyevent" || len(r.ID) != 26 || ids[r.ID] || r.Source != rs.Addr {
			t.Fatalf("bad record %+v", r)
		}
		ids[r.ID] = true
		if _, err := time.Parse(time.RFC3339Nano, r.Time); err != nil || !strings.HasSuffix(r.Time, "Z") || len(r.Time) != len("2026-11-23T18:16:53.458622Z") {
			t.Fatalf("bad time %q", r.Time)
		}
	}
}

func TestBinaryAndOddKeysRoundTrip(t *testing.T) {
	rs := bridgetest.StartRedis(t)
	d := startDaemon(t, map[string]string{"KEYRELAY_REDIS_URL": "redis://" + rs.Addr, "KEYRELAY_EVENTS": "set"})
	keys := []string{"", "\xff\xfe\x00bin", "new\nline", "sp ace", "__:x__:y", "glob*?[]\\", "quote\"", "ключ🔑",
		"\u2028", "\x1b[31mred", strings.Repeat("long", 5000), "valid\xc3"}
	c := rs.Client(0)
	var want []ev
	for _, k := range keys {
		if err := c.Set(context.Background(), k, "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
		want = append(want, ev{0, "set", k})
	}
	got := d.waitEvents(t, want)
	if len(got) != len(keys) {
		t.Fatalf("got %d events, want %d", len(got), len(keys))
	}
	// key_base64 exactly when the key is not UTF-8.
	for _, r := range d.records() {
		k := r.key(t)
		if (r.KeyBase64 != nil) != !utf8.ValidString(k) {
			t.Errorf("key %q: key_base64 used=%v", k, r.KeyBase64 != nil)
		}
	}
}

func TestKeyspaceChannelsForwardEachEventOnce(t *testing.T) {
	rs := bridgetest.StartRedis(t) // KEA: every event published on both channel kinds
	d := startDaemon(t, map[string]string{"KEYRELAY_REDIS_URL": "redis://" + rs.Addr, "KEYRELAY_CHANNELS": "keyspace"})
	c := rs.Client(0)
	for i := 0; i < 50; i++ {
		c.Set(context.Background(), fmt.Sprintf("k:%d", i), "v", 0)
	}
	c.Set(context.Background(), "last", "v", 0)
	got := d.waitEvents(t, []ev{{0, "set", "last"}})
	if len(got) != 51 {
		t.Fatalf("got %d events for 51 writes: %v", len(got), got)
	}
}

func TestFilters(t *testing.T) {
	for _, kind := range []string{"keyevent", "keyspace"} {
		t.Run(kind, func(t *testing.T) {
			rs := bridgetest.StartRedis(t)
			d := startDaemon(t, map[string]string{
				"KEYRELAY_REDIS_URL": "redis://" + rs.Addr, "KEYRELAY_CHANNELS": kind,
				"KEYRELAY_EVENTS": "set,del", "KEYRELAY_DBS": "0,2", "KEYRELAY_KEYS": "user:*,order:[0-9]*",
			})
			ctx := context.Background()
			c0, c1, c2 := rs.Client(0), rs.Client(1), rs.Client(2)
			c0.Set(ctx, "user:1", "v", 0)          // yes
			c0.Set(ctx, "session:1", "v", 0)       // key filtered
			c0.LPush(ctx, "user:list", "v")        // event filtered
			c1.Set(ctx, "user:2", "v", 0)          // db filtered
			c2.Set(ctx, "order:7", "v", 0)         // yes
			c2.Set(ctx, "order:x", "v", 0)         // key filtered
			c0.Del(ctx, "user:1")                  // yes
			c0.Expire(ctx, "user:list", time.Hour) // event filtered
			c0.Set(ctx, "user:end", "v", 0)        // yes: the marker
			want := []ev{{0, "set", "user:1"}, {2, "set", "order:7"}, {0, "del", "user:1"}, {0, "set", "user:end"}}
			got := d.waitEvents(t, want)
			if !slices.Equal(got, want) {
				t.Fatalf("got %v, want exactly %v", got, want)
			}
		})
	}
}
