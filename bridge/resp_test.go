package bridge

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"
)

// respStream is what a subscribed connection receives, frame by frame, with
// the values ReceiveTimeout returns for it.
var respStream = []struct {
	frame string
	want  any // a value, or an error (compared by its text)
}{
	{"*3\r\n$10\r\npsubscribe\r\n$12\r\n__keyevent@*\r\n:1\r\n",
		&redis.Subscription{Kind: "psubscribe", Channel: "__keyevent@*", Count: 1}},
	{"*3\r\n$9\r\nsubscribe\r\n$2\r\nkr\r\n:2\r\n", &redis.Subscription{Kind: "subscribe", Channel: "kr", Count: 2}},
	{"*4\r\n$8\r\npmessage\r\n$12\r\n__keyevent@*\r\n$18\r\n__keyevent@0__:set\r\n$5\r\nkey:1\r\n",
		&redis.Message{Pattern: "__keyevent@*", Channel: "__keyevent@0__:set", Payload: "key:1"}},
	// A binary key: CR, LF, NUL and a "$" inside the payload.
	{"*4\r\n$8\r\npmessage\r\n$12\r\n__keyevent@*\r\n$18\r\n__keyevent@0__:del\r\n$7\r\na\r\n\x00$\nb\r\n",
		&redis.Message{Pattern: "__keyevent@*", Channel: "__keyevent@0__:del", Payload: "a\r\n\x00$\nb"}},
	{"*4\r\n$8\r\npmessage\r\n$12\r\n__keyevent@*\r\n$18\r\n__keyevent@0__:set\r\n$0\r\n\r\n",
		&redis.Message{Pattern: "__keyevent@*", Channel: "__keyevent@0__:set", Payload: ""}},
	{"*3\r\n$7\r\nmessage\r\n$2\r\nkr\r\n$9\r\ni s 1 100\r\n", &redis.Message{Channel: "kr", Payload: "i s 1 100"}},
	{"*2\r\n$4\r\npong\r\n$22\r\nkeyrelay 1700000000000\r\n", &redis.Pong{Payload: "keyrelay 1700000000000"}},
	{"*2\r\n$4\r\npong\r\n$0\r\n\r\n", &redis.Pong{}},
	{"-NOPERM this user has no permissions to access the 'kr' channel\r\n",
		errors.New("NOPERM this user has no permissions to access the 'kr' channel")},
	{"*3\r\n$11\r\nunsubscribe\r\n$2\r\nkr\r\n:1\r\n", &redis.Subscription{Kind: "unsubscribe", Channel: "kr", Count: 1}},
	{"*3\r\n$12\r\npunsubscribe\r\n$12\r\n__keyevent@*\r\n:0\r\n",
		&redis.Subscription{Kind: "punsubscribe", Channel: "__keyevent@*", Count: 0}},
	// An unsubscribe with nothing subscribed names no channel.
	{"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n", &redis.Subscription{Kind: "unsubscribe", Count: 0}},
	// PING outside subscribed mode: go-redis reads it as a Pong too.
	{"+PONG\r\n", &redis.Pong{Payload: "PONG"}},
	{"$10\r\nkeyrelay 2\r\n", &redis.Pong{Payload: "keyrelay 2"}},
}

// pipeConn returns a respConn reading from a pipe, and the pipe's other end.
func pipeConn(t *testing.T) (*respConn, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return newRespConn(a, time.Second), b
}

// writeChunks writes s to w in pieces of n bytes, each a separate write.
func writeChunks(w io.Writer, s string, n int) {
	for len(s) > 0 {
		k := min(n, len(s))
		if _, err := w.Write([]byte(s[:k])); err != nil {
			return
		}
		s = s[k:]
	}
}

func checkFrame(t *testing.T, i int, got any, err error, want any) {
	t.Helper()
	if we, ok := want.(error); ok {
		if err == nil || err.Error() != we.Error() {
			t.Fatalf("frame %d: got %#v, %v; want error %q", i, got, err, we)
		}
		if _, ok := errors.AsType[redis.Error](err); !ok {
			t.Fatalf("frame %d: error %T is not a redis.Error", i, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("frame %d: %v", i, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("frame %d: got %#v, want %#v", i, got, want)
	}
}

// TestRESPFrames reads every kind of frame, delivered whole, in one write
// of all of them, and one byte per write (every frame cut everywhere).
func TestRESPFrames(t *testing.T) {
	var all strings.Builder
	for _, f := range respStream {
		all.WriteString(f.frame)
	}
	for _, chunk := range []int{1 << 20, 1, 3, 7} {
		c, peer := pipeConn(t)
		go writeChunks(peer, all.String(), chunk)
		for i, f := range respStream {
			got, err := c.ReceiveTimeout(context.Background(), 5*time.Second)
			checkFrame(t, i, got, err, f.want)
		}
	}
}

// TestRESPTimeoutMidFrame: a timeout is a net.Error whose Timeout() is true,
// and a frame cut by one is completed by the next call.
func TestRESPTimeoutMidFrame(t *testing.T) {
	c, peer := pipeConn(t)
	_, err := c.ReceiveTimeout(context.Background(), 20*time.Millisecond)
	if ne, ok := errors.AsType[net.Error](err); !ok || !ne.Timeout() {
		t.Fatalf("nothing sent: got %v, want a net.Error timeout", err)
	}
	f := respStream[2]
	go writeChunks(peer, f.frame[:30], 1<<20)
	_, err = c.ReceiveTimeout(context.Background(), 50*time.Millisecond)
	if ne, ok := errors.AsType[net.Error](err); !ok || !ne.Timeout() {
		t.Fatalf("half a frame: got %v, want a net.Error timeout", err)
	}
	go writeChunks(peer, f.frame[30:], 1<<20)
	got, err := c.ReceiveTimeout(context.Background(), 5*time.Second)
	checkFrame(t, 0, got, err, f.want)
}

// TestRESPLargeFrame: a frame larger than the read buffer (a long key in a
// keyspace channel and payload) is read whole, and the grown buffer is
// released afterwards.
func TestRESPLargeFrame(t *testing.T) {
	c, peer := pipeConn(t)
	key := strings.Repeat("k\r\n", respBufKeep) // 3 MiB
	ch := "__keyspace@0__:" + key
	frame := "*4\r\n$8\r\npmessage\r\n$3\r\n__*\r\n" + bulk(ch) + bulk(key) + respStream[5].frame
	go writeChunks(peer, frame, 100<<10)
	got, err := c.ReceiveTimeout(context.Background(), 5*time.Second)
	checkFrame(t, 0, got, err, &redis.Message{Pattern: "__*", Channel: ch, Payload: key})
	got, err = c.ReceiveTimeout(context.Background(), 5*time.Second)
	checkFrame(t, 1, got, err, respStream[5].want)
	if len(c.buf) != respBufSize {
		t.Errorf("read buffer is %d bytes after the large frame, want %d", len(c.buf), respBufSize)
	}
}

func bulk(s string) string { return "$" + strconv.Itoa(len(s)) + "\r\n" + s + "\r\n" }

// TestRESPProtocolError: what a subscribed connection never receives ends
// the connection: the error stays.
func TestRESPProtocolError(t *testing.T) {
	for _, bad := range []string{
		":1\r\n",
		"*1\r\n$4\r\npong\r\n",
		"*3\r\n$7\r\nmessage\r\n$2\r\nkr\r\n*1\r\n$1\r\nk\r\n",
		"*3\r\n$7\r\nunknown\r\n$2\r\nkr\r\n:1\r\n",
		"*2\r\n$4\r\npong\r\n$2\r\nabc\r\n",
		"*2\r\n$4\r\npong\n\n",
		"*2\n",
		"*2\r\n$x\r\n",
	} {
		c, peer := pipeConn(t)
		go writeChunks(peer, bad, 1<<20)
		for range 2 {
			_, err := c.ReceiveTimeout(context.Background(), 5*time.Second)
			if !errors.Is(err, errRESPProtocol) {
				t.Fatalf("%q: got %v, want a protocol error", bad, err)
			}
		}
	}
}

// TestRESPReuse: the connection's values are reused, and the strings it
// interns are shared, not copied, while the payload is a fresh string.
func TestRESPReuse(t *testing.T) {
	c, peer := pipeConn(t)
	f := respStream[2].frame
	go writeChunks(peer, f+f, 1<<20)
	m1, err := c.ReceiveTimeout(context.Background(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ch1, p1 := m1.(*redis.Message).Channel, m1.(*redis.Message).Payload
	m2, err := c.ReceiveTimeout(context.Background(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m1 != m2 {
		t.Error("two messages came in two values; want the connection's one")
	}
	ch2, p2 := m2.(*redis.Message).Channel, m2.(*redis.Message).Payload
	if unsafe.StringData(ch1) != unsafe.StringData(ch2) {
		t.Error("the channel was not interned")
	}
	if p1 != p2 || unsafe.StringData(p1) == unsafe.StringData(p2) {
		t.Error("the payload should be a fresh string per message")
	}
}

// TestInternBounded: the table keeps a fixed number of strings, none longer
// than internMaxLen.
func TestInternBounded(t *testing.T) {
	var tab internTable
	for i := range 100000 {
		s := "__keyspace@0__:key:" + strconv.Itoa(i)
		if got := tab.intern([]byte(s)); got != s {
			t.Fatalf("intern(%q) = %q", s, got)
		}
	}
	long := strings.Repeat("x", internMaxLen+1)
	if tab.intern([]byte(long)) != long {
		t.Fatal("long string changed")
	}
	for _, s := range tab.slots {
		if len(s) > internMaxLen {
			t.Fatalf("the table keeps a %d-byte string", len(s))
		}
	}
}

// TestRESPCommands: the commands are written as RESP arrays of bulk strings.
func TestRESPCommands(t *testing.T) {
	c, peer := pipeConn(t)
	ctx := context.Background()
	want := "*3\r\n$10\r\nPSUBSCRIBE\r\n$3\r\na*b\r\n$0\r\n\r\n" +
		"*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nkr\r\n" +
		"*2\r\n$4\r\nPING\r\n$10\r\nkeyrelay 1\r\n" +
		"*1\r\n$12\r\nPUNSUBSCRIBE\r\n" +
		"*1\r\n$11\r\nUNSUBSCRIBE\r\n"
	got := make(chan string)
	go func() {
		b := make([]byte, len(want))
		_, _ = io.ReadFull(peer, b)
		got <- string(b)
	}()
	for _, err := range []error{c.PSubscribe(ctx, "a*b", ""), c.Subscribe(ctx, "kr"), c.Ping(ctx, "keyrelay 1"),
		c.PUnsubscribe(ctx), c.Unsubscribe(ctx)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if g := <-got; g != want {
		t.Errorf("wrote %q, want %q", g, want)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReceiveTimeout(ctx, time.Second); err == nil {
		t.Error("ReceiveTimeout after Close returned no error")
	}
}

// TestRESPKeyspacePayload: on a keyspace channel the payload is an event
// name, interned like the channel.
func TestRESPKeyspacePayload(t *testing.T) {
	c, peer := pipeConn(t)
	f := "*4\r\n$8\r\npmessage\r\n$3\r\n__*\r\n" + bulk("__keyspace@0__:k") + bulk("set")
	go writeChunks(peer, f+f, 1<<20)
	var payloads []string
	for range 2 {
		m, err := c.ReceiveTimeout(context.Background(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		payloads = append(payloads, m.(*redis.Message).Payload)
	}
	if payloads[0] != "set" || unsafe.StringData(payloads[0]) != unsafe.StringData(payloads[1]) {
		t.Errorf("keyspace payloads %q were not interned", payloads)
	}
}

// TestRESPConcurrent: pings from two goroutines while one reads (the reader
// pings, a stop unsubscribes from another goroutine), then a Close that ends
// a blocked read. Run with -race.
func TestRESPConcurrent(t *testing.T) {
	c, peer := pipeConn(t)
	go func() { // the server: one pong per ping, with its payload
		br := bufio.NewReader(peer)
		for {
			var lines [5]string
			for i := range lines {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				lines[i] = strings.TrimSuffix(l, "\r\n")
			}
			writeChunks(peer, "*2\r\n$4\r\npong\r\n"+bulk(lines[4]), 1<<20)
		}
	}()
	const n = 200
	ctx := context.Background()
	errs := make(chan error, 2)
	for g := range 2 {
		go func() {
			for i := range n / 2 {
				if err := c.Ping(ctx, "p"+strconv.Itoa(g)+"-"+strconv.Itoa(i)); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	seen := map[string]bool{}
	for range n {
		m, err := c.ReceiveTimeout(ctx, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		seen[m.(*redis.Pong).Payload] = true
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) != n {
		t.Fatalf("%d distinct pongs, want %d", len(seen), n)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		_ = c.Close()
	}()
	if _, err := c.ReceiveTimeout(ctx, 0); err == nil {
		t.Fatal("a read blocked without deadline did not end with Close")
	}
}
