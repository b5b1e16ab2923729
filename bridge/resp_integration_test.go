//go:build integration

package bridge

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyrelay/keyrelay/bridge/bridgetest/servers"
)

// TestTakeoverSubscribes: go-redis authenticates an ACL user, selects a
// database and runs OnConnect; the connection it initialised is then read
// with respConn, and its first frame is the answer to the first command
// written on it (nothing was left in go-redis's buffer). Subscriptions,
// messages with binary keys, a refused channel (NOPERM, classified), pings
// and the drain all go through respConn.
func TestTakeoverSubscribes(t *testing.T) {
	r, err := servers.StartRedis(t.TempDir(), "--notify-keyspace-events", "E$")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	ctx := context.Background()
	w := redis.NewClient(&redis.Options{Addr: r.Addr, DB: 3})
	defer w.Close()
	if err := w.Do(ctx, "ACL", "SETUSER", "sub", "on", ">secret", "~*", "resetchannels", "&__keyevent@3__:*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}

	onConnect := 0
	opt := redis.Options{Addr: r.Addr, Username: "sub", Password: "secret", DB: 3, Protocol: 2,
		DisableIdentity: true, OnConnect: func(ctx context.Context, cn *redis.Conn) error {
			onConnect++
			return cn.ClientSetName(ctx, "kr-takeover").Err()
		}}
	client, c, err := takeover(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	defer c.Close()
	if onConnect != 1 {
		t.Fatalf("OnConnect ran %d times, want once", onConnect)
	}
	next := func() any {
		t.Helper()
		m, err := c.ReceiveTimeout(ctx, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	expect := func(want any) {
		t.Helper()
		if got := next(); !equalFrame(got, want) {
			t.Fatalf("got %#v, want %#v", got, want)
		}
	}

	if err := c.PSubscribe(ctx, "__keyevent@3__:*"); err != nil {
		t.Fatal(err)
	}
	expect(&redis.Subscription{Kind: "psubscribe", Channel: "__keyevent@3__:*", Count: 1})

	// The connection is the one go-redis initialised: user, db and name.
	list, err := w.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(list, "\n") {
		if strings.Contains(l, "name=kr-takeover") {
			line = l
		}
	}
	for _, want := range []string{" db=3 ", " psub=1 ", " user=sub "} {
		if !strings.Contains(line, want) {
			t.Errorf("CLIENT LIST line %q lacks %q", line, want)
		}
	}

	// A channel the user may not subscribe to: NOPERM, and the
	// subscription goes on.
	if err := c.Subscribe(ctx, "kr"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReceiveTimeout(ctx, 5*time.Second); !errors.Is(ClassifyRedisError(err), ErrRedisPermission) {
		t.Fatalf("subscribe to a refused channel: %v, want a permission error", err)
	}

	keys := append([]string{"plain"}, oddKeys...)
	for _, k := range keys {
		if err := w.Set(ctx, k, "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range keys {
		expect(&redis.Message{Pattern: "__keyevent@3__:*", Channel: "__keyevent@3__:set", Payload: k})
	}
	if err := c.Ping(ctx, "keyrelay 42"); err != nil {
		t.Fatal(err)
	}
	expect(&redis.Pong{Payload: "keyrelay 42"})

	// The drain: the confirmation comes after what was published before.
	if err := w.Set(ctx, "last", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.PUnsubscribe(ctx); err != nil {
		t.Fatal(err)
	}
	expect(&redis.Message{Pattern: "__keyevent@3__:*", Channel: "__keyevent@3__:set", Payload: "last"})
	expect(&redis.Subscription{Kind: "punsubscribe", Channel: "__keyevent@3__:*", Count: 0})
	// Outside subscribed mode a PING answers with a bulk string.
	if err := c.Ping(ctx, "after"); err != nil {
		t.Fatal(err)
	}
	expect(&redis.Pong{Payload: "after"})
}

func equalFrame(got, want any) bool { return reflect.DeepEqual(got, want) }
