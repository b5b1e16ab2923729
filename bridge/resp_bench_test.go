package bridge

import (
	"context"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// BenchmarkReader is the cost per message of reading a subscription: the
// lean reader (respConn) against go-redis's PubSub.ReceiveTimeout, both on
// the same recorded byte stream of 1 M pmessage frames (replayed from memory
// in a loop, so the figure is the parser's, not the network's):
//
//   - keyevent: what keyrelay subscribes to by default: the channel repeats
//     (__keyevent@0__:set), the payload is the key;
//   - keyspace: the channel carries the key, the payload is the event.
//
// One op is one message. Run: go test -run '^$' -bench Reader -benchmem ./bridge
func BenchmarkReader(b *testing.B) {
	for _, kind := range []string{"keyevent", "keyspace"} {
		stream := readerStream(kind)
		b.Run(kind+"/lean", func(b *testing.B) {
			c := newRespConn(&replayConn{data: stream}, time.Second)
			benchReceive(b, c)
		})
		b.Run(kind+"/go-redis", func(b *testing.B) {
			// go-redis first sends HELLO: an old server's refusal makes
			// it go on in RESP2 without it.
			conn := &replayConn{prefix: []byte("-ERR unknown command 'HELLO'\r\n"), data: stream}
			client := redis.NewClient(&redis.Options{Protocol: 2, DisableIdentity: true, PoolSize: 1,
				Dialer: func(context.Context, string, string) (net.Conn, error) { return conn, nil }})
			defer client.Close()
			ps := client.PSubscribe(context.Background(), "__key*__:*")
			defer ps.Close()
			benchReceive(b, ps)
		})
	}
}

var readerSink int

func benchReceive(b *testing.B, c interface {
	ReceiveTimeout(ctx context.Context, timeout time.Duration) (any, error)
}) {
	ctx := context.Background()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		msg, err := c.ReceiveTimeout(ctx, time.Second)
		if err != nil {
			b.Fatal(err)
		}
		m := msg.(*redis.Message)
		n += len(m.Channel) + len(m.Payload)
	}
	readerSink = n
}

var (
	readerStreamsMu sync.Mutex
	readerStreams   = map[string][]byte{}
)

// readerStream returns 1 M pmessage frames as Redis sends them for a SET on
// key:000000000 … key:000999999 in db 0.
func readerStream(kind string) []byte {
	readerStreamsMu.Lock()
	defer readerStreamsMu.Unlock()
	if s, ok := readerStreams[kind]; ok {
		return s
	}
	s := make([]byte, 0, 100<<20)
	for i := range 1000000 {
		key := "key:" + strconv.Itoa(1000000000 + i)[1:]
		ch, payload := "__keyevent@0__:set", key
		if kind == "keyspace" {
			ch, payload = "__keyspace@0__:"+key, "set"
		}
		s = append(s, "*4\r\n$8\r\npmessage\r\n"...)
		s = appendBulk(s, "__key*__:*")
		s = appendBulk(s, ch)
		s = appendBulk(s, payload)
	}
	readerStreams[kind] = s
	return s
}

// replayConn is a net.Conn that reads prefix, then data over and over;
// writes and deadlines are accepted and ignored.
type replayConn struct {
	prefix []byte
	data   []byte
	off    int
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	n := copy(p, c.data[c.off:])
	if c.off += n; c.off == len(c.data) {
		c.off = 0
	}
	return n, nil
}

func (c *replayConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *replayConn) Close() error                     { return nil }
func (c *replayConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *replayConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *replayConn) SetDeadline(time.Time) error      { return nil }
func (c *replayConn) SetReadDeadline(time.Time) error  { return nil }
func (c *replayConn) SetWriteDeadline(time.Time) error { return nil }
