package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// respConn is a subscribed RESP2 connection read by a parser that knows only
// the frames such a connection receives: message, pmessage, the
// (un)subscribe confirmations, pong, and error replies. It implements
// subConn with go-redis's types, but without go-redis's generic reply
// parsing, which builds an []interface{} per message.
//
// ReceiveTimeout returns one of three values that belong to the connection
// (*redis.Message, *redis.Pong, *redis.Subscription): each is valid until
// the next ReceiveTimeout, which overwrites it. A caller that keeps one
// longer copies it. Pattern, channel and subscription names are interned in
// a small bounded cache (a stream of keyevent notifications repeats them);
// what holds a key (a keyevent payload, a keyspace channel) is copied into
// a shared block (a stringSlab), so that a message costs no allocation of
// its own. A keyspace payload, the event name, is interned.
//
// One goroutine reads (ReceiveTimeout). Ping, PSubscribe, Subscribe,
// PUnsubscribe and Unsubscribe may be called from others; Close from any.
type respConn struct {
	conn         net.Conn
	writeTimeout time.Duration // per command; <= 0: none

	// Reader state: buf[r:w] is received and not yet parsed.
	buf  []byte
	r, w int
	err  error     // a read error other than a timeout: the connection is done
	at   time.Time // when the last read returned bytes
	msg  redis.Message
	pong redis.Pong
	sub  redis.Subscription
	str  internTable
	slab stringSlab // payloads

	wmu  sync.Mutex
	wbuf []byte

	closeOnce sync.Once
	closeErr  error
}

const (
	// respBufSize is the read buffer: many frames per read at full speed.
	respBufSize = 64 << 10
	// respBufKeep: a buffer grown past this for a large frame is
	// released once it is empty.
	respBufKeep = 1 << 20
	// respMaxBulk is Redis's own limit on a bulk string (proto-max-bulk-len).
	respMaxBulk = 512 << 20
)

func newRespConn(conn net.Conn, writeTimeout time.Duration) *respConn {
	return &respConn{conn: conn, writeTimeout: writeTimeout, buf: make([]byte, respBufSize)}
}

// respError is an error reply. It is a redis.Error, so ClassifyRedisError
// reads it as it reads go-redis's own.
type respError string

func (e respError) Error() string { return string(e) }
func (respError) RedisError()     {}

var _ redis.Error = respError("")

// errRESPProtocol: the connection sent something a subscribed RESP2
// connection does not; it cannot be read further.
var errRESPProtocol = errors.New("bridge: resp: protocol error")

// ReceiveTimeout returns the next frame: a *redis.Message, *redis.Pong or
// *redis.Subscription owned by the connection (valid until the next call), or
// an error reply as a redis.Error. When nothing complete arrives within
// timeout (> 0) it returns the connection's net.Error, whose Timeout() is
// true; the bytes of a frame that was cut short stay buffered, and the next
// call continues it.
func (c *respConn) ReceiveTimeout(_ context.Context, timeout time.Duration) (any, error) {
	deadlineSet := false
	for {
		need := 0
		if c.r < c.w {
			v, n, want, err := c.parse(c.buf[c.r:c.w])
			if n > 0 {
				c.r += n
				if c.r == c.w {
					c.r, c.w = 0, 0
					if len(c.buf) > respBufKeep {
						c.buf = make([]byte, respBufSize)
					}
				}
				return v, err
			}
			if err != nil {
				c.err = err
				return nil, err
			}
			need = want
		}
		if c.err != nil {
			return nil, c.err
		}
		// Only when nothing complete is buffered: a deadline per read,
		// not per frame.
		if !deadlineSet {
			var d time.Time
			if timeout > 0 {
				d = time.Now().Add(timeout)
			}
			if err := c.conn.SetReadDeadline(d); err != nil {
				c.err = err
				return nil, err
			}
			deadlineSet = true
		}
		c.room(need)
		n, err := c.conn.Read(c.buf[c.w:])
		if n > 0 {
			c.at = time.Now()
		}
		c.w += n
		if err != nil {
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				return nil, err
			}
			c.err = err
		}
	}
}

// ReceivedAt returns when the bytes of the frame ReceiveTimeout last returned
// arrived: the time of the read that completed it. Frames read together
// share it, so the reader needs no clock reading per message.
func (c *respConn) ReceivedAt() time.Time { return c.at }

// room makes space after buf[w] for at least one more byte, and for the
// whole of the frame being read when need (its length) is known.
func (c *respConn) room(need int) {
	pending := c.w - c.r
	size := max(need, pending+1)
	if c.r+size <= len(c.buf) && c.w < len(c.buf) {
		return
	}
	buf := c.buf
	if size > len(buf) {
		buf = make([]byte, max(size, 2*len(buf)))
	}
	copy(buf, c.buf[c.r:c.w])
	c.buf, c.r, c.w = buf, 0, pending
}

// parse reads the frame at the start of b. n is its length; 0 when b holds
// only part of it, want then being the frame's whole length if already known
// (else 0). A non-nil err with n > 0 is an error reply, with n == 0 a
// protocol error.
func (c *respConn) parse(b []byte) (v any, n, want int, err error) {
	if b[0] == '$' {
		// PONG with a payload outside subscribed mode: a bulk string.
		v, n, want, err := respBulk(b, 0)
		if v == nil && err == nil {
			return nil, 0, want, nil
		}
		if err != nil && err != errRESPNull {
			return nil, 0, 0, err
		}
		c.pong.Payload = string(v)
		return &c.pong, n, 0, nil
	}
	line, i, ok := respLine(b, 0)
	if !ok {
		return nil, 0, 0, respCheckLine(b)
	}
	switch b[0] {
	case '-':
		return nil, i, 0, respError(line[1:])
	case '+':
		// PONG to a PING outside subscribed mode (after the last
		// unsubscribe), as go-redis reads it too.
		c.pong.Payload = c.str.intern(line[1:])
		return &c.pong, i, 0, nil
	case '*':
	default:
		return nil, 0, 0, fmt.Errorf("%w: unexpected %q", errRESPProtocol, printablePrefix(string(line), 32))
	}
	count, ok := respInt(line[1:])
	if !ok || count < 2 || count > 4 {
		return nil, 0, 0, fmt.Errorf("%w: unexpected array %q", errRESPProtocol, printablePrefix(string(line), 32))
	}
	var el [3][]byte // after the kind; nil for a null bulk string
	var num int64
	kind, i, want, err := respBulk(b, i)
	if kind == nil {
		return nil, 0, want, err
	}
	for k := 1; k < int(count); k++ {
		if k == 2 && string(kind) != "message" && string(kind) != "pmessage" && string(kind) != "smessage" {
			// Confirmations end with the subscription count.
			line, next, ok := respLine(b, i)
			if !ok {
				return nil, 0, 0, respCheckLine(b[i:])
			}
			if num, ok = respInt(line[1:]); line[0] != ':' || !ok {
				return nil, 0, 0, fmt.Errorf("%w: %s count %q", errRESPProtocol, kind, printablePrefix(string(line), 32))
			}
			i = next
			continue
		}
		var e []byte
		e, i, want, err = respBulk(b, i)
		if e == nil {
			if err == errRESPNull {
				continue // an unsubscribe from nothing names no channel
			}
			return nil, 0, want, err
		}
		el[k-1] = e
	}
	// The frame is complete: only now may the connection's values change.
	switch {
	case string(kind) == "pmessage" && count == 4:
		c.msg = redis.Message{Pattern: c.str.intern(el[0]), Channel: c.channel(el[1]), Payload: c.payload(el[1], el[2])}
		return &c.msg, i, 0, nil
	case (string(kind) == "message" || string(kind) == "smessage") && count == 3:
		c.msg = redis.Message{Channel: c.channel(el[0]), Payload: c.payload(el[0], el[1])}
		return &c.msg, i, 0, nil
	case string(kind) == "pong" && count == 2:
		c.pong.Payload = string(el[0])
		return &c.pong, i, 0, nil
	case count == 3:
		if k := subscriptionKind(kind); k != "" {
			c.sub = redis.Subscription{Kind: k, Channel: c.str.intern(el[0]), Count: int(num)}
			return &c.sub, i, 0, nil
		}
	}
	return nil, 0, 0, fmt.Errorf("%w: unexpected %d-element %q frame", errRESPProtocol, count, printablePrefix(string(kind), 32))
}

// channel returns a message's channel: interned (a keyevent channel is
// one of a handful), except a keyspace channel, which holds the key.
func (c *respConn) channel(b []byte) string {
	if bytes.HasPrefix(b, []byte("__keyspace@")) {
		return c.slab.string(b)
	}
	return c.str.intern(b)
}

// payload returns a message's payload: a new string, except on a keyspace
// channel, whose payload is the event name (a handful of names repeat).
func (c *respConn) payload(channel, payload []byte) string {
	if bytes.HasPrefix(channel, []byte("__keyspace@")) {
		return c.str.intern(payload)
	}
	return c.slab.string(payload)
}

func subscriptionKind(b []byte) string {
	switch string(b) {
	case "subscribe":
		return "subscribe"
	case "psubscribe":
		return "psubscribe"
	case "unsubscribe":
		return "unsubscribe"
	case "punsubscribe":
		return "punsubscribe"
	case "ssubscribe":
		return "ssubscribe"
	case "sunsubscribe":
		return "sunsubscribe"
	}
	return ""
}

// errRESPNull is respBulk's answer for a null bulk string ($-1).
var errRESPNull = errors.New("bridge: resp: null bulk string")

// respBulk reads the bulk string at b[i:]: its bytes (not copied) and the
// offset after it. A nil value comes with errRESPNull (a null bulk string),
// another error (protocol), or neither (incomplete: want is then the
// frame's length up to the end of this string, when known).
func respBulk(b []byte, i int) (v []byte, next, want int, err error) {
	line, j, ok := respLine(b, i)
	if !ok {
		return nil, 0, 0, respCheckLine(b[i:])
	}
	n, ok := respInt(line[1:])
	if line[0] != '$' || !ok || n < -1 || n > respMaxBulk {
		return nil, 0, 0, fmt.Errorf("%w: expected a bulk string, got %q", errRESPProtocol, printablePrefix(string(line), 32))
	}
	if n == -1 {
		return nil, j, 0, errRESPNull
	}
	end := j + int(n)
	if end+2 > len(b) {
		return nil, 0, end + 2, nil
	}
	if b[end] != '\r' || b[end+1] != '\n' {
		return nil, 0, 0, fmt.Errorf("%w: bulk string not terminated", errRESPProtocol)
	}
	return b[j:end:end], end + 2, 0, nil
}

// respLine returns the line at b[i:] without its CRLF, and the offset after
// it; ok is false when the line is not complete (or empty).
func respLine(b []byte, i int) (line []byte, next int, ok bool) {
	j := bytes.IndexByte(b[i:], '\n')
	if j < 1 || b[i+j-1] != '\r' {
		return nil, 0, false
	}
	return b[i : i+j-1], i + j + 1, true
}

// respCheckLine tells an incomplete line (nil) from a malformed one: a bare
// LF, or a header line longer than any a subscription receives.
func respCheckLine(b []byte) error {
	j := bytes.IndexByte(b, '\n')
	if j == 0 || j > 0 && b[j-1] != '\r' {
		return fmt.Errorf("%w: line without CR", errRESPProtocol)
	}
	if j < 0 && len(b) > 64<<10 && b[0] != '-' && b[0] != '+' {
		return fmt.Errorf("%w: header line longer than 64 KiB", errRESPProtocol)
	}
	return nil
}

// respInt parses a RESP integer without allocating.
func respInt(b []byte) (int64, bool) {
	neg := false
	if len(b) > 0 && b[0] == '-' {
		neg, b = true, b[1:]
	}
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, ch := range b {
		if ch < '0' || ch > '9' {
			return 0, false
		}
		n = n*10 + int64(ch-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// internTable maps byte strings to strings without allocating for those it
// holds: a direct-mapped table of a fixed number of short strings, so that
// its memory stays bounded whatever the channels (a keyspace channel names
// its key, so a stream of them rarely repeats one).
type internTable struct {
	slots [internSlots]string
}

var internSeed = maphash.MakeSeed()

const (
	internSlots  = 512
	internMaxLen = 256 // longer strings are not kept
)

func (t *internTable) intern(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > internMaxLen {
		return string(b)
	}
	slot := &t.slots[maphash.Bytes(internSeed, b)%internSlots]
	if *slot != string(b) {
		*slot = string(b)
	}
	return *slot
}

// command writes one command. The write deadline is the connection's write
// timeout, or ctx's deadline when sooner.
func (c *respConn) command(ctx context.Context, name string, args []string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := append(c.wbuf[:0], '*')
	b = strconv.AppendInt(b, int64(1+len(args)), 10)
	b = append(b, '\r', '\n')
	b = appendBulk(b, name)
	for _, a := range args {
		b = appendBulk(b, a)
	}
	c.wbuf = b
	var d time.Time
	if c.writeTimeout > 0 {
		d = time.Now().Add(c.writeTimeout)
	}
	if cd, ok := ctx.Deadline(); ok && (d.IsZero() || cd.Before(d)) {
		d = cd
	}
	if err := c.conn.SetWriteDeadline(d); err != nil {
		return err
	}
	_, err := c.conn.Write(b)
	return err
}

func appendBulk(b []byte, s string) []byte {
	b = append(b, '$')
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, '\r', '\n')
	b = append(b, s...)
	return append(b, '\r', '\n')
}

// PSubscribe asks for the patterns; each confirmation arrives as a
// *redis.Subscription through ReceiveTimeout.
func (c *respConn) PSubscribe(ctx context.Context, patterns ...string) error {
	return c.command(ctx, "PSUBSCRIBE", patterns)
}

// Subscribe asks for the channels.
func (c *respConn) Subscribe(ctx context.Context, channels ...string) error {
	return c.command(ctx, "SUBSCRIBE", channels)
}

// PUnsubscribe ends the patterns' subscriptions (all without arguments).
func (c *respConn) PUnsubscribe(ctx context.Context, patterns ...string) error {
	return c.command(ctx, "PUNSUBSCRIBE", patterns)
}

// Unsubscribe ends the channels' subscriptions (all without arguments).
func (c *respConn) Unsubscribe(ctx context.Context, channels ...string) error {
	return c.command(ctx, "UNSUBSCRIBE", channels)
}

// Ping sends PING with at most one payload; the answer arrives through
// ReceiveTimeout as a *redis.Pong carrying it.
func (c *respConn) Ping(ctx context.Context, payload ...string) error {
	if len(payload) > 1 {
		return errors.New("bridge: resp: ping takes at most one payload")
	}
	return c.command(ctx, "PING", payload)
}

// Close closes the connection; a ReceiveTimeout in progress returns an
// error. Later calls return the first call's result.
func (c *respConn) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.conn.Close() })
	return c.closeErr
}

var _ subConn = (*respConn)(nil)
