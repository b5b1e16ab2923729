package bridge

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// takeover dials one connection with go-redis, which does everything a
// connection needs before it subscribes (TLS, HELLO or AUTH with a password,
// an ACL user or a CredentialsProviderContext such as IAM tokens, SELECT,
// opt.OnConnect), and hands the raw connection over as a respConn. The
// client only holds the connection from then on: closing it closes the
// connection too. go-redis must not use the connection after the handover:
// opt must not carry a StreamingCredentialsProvider (it re-authenticates
// connections in the background) nor client-side caching.
//
// Why nothing is left in go-redis's read buffer: on a RESP2 connection that
// has not subscribed (and without CLIENT TRACKING or maintenance
// notifications, which options() turns off), Redis sends only replies, one
// per command, and go-redis reads each reply whole before it sends the next
// command. After the last reply (the PING below) the server has nothing more
// to send until the first command written on the raw connection, so
// go-redis's buffer is empty and every byte that follows reaches respConn.
func takeover(ctx context.Context, opt redis.Options) (*redis.Client, *respConn, error) {
	var dialed capturedConns
	opt.Dialer = dialed.dialer(&opt)
	// One connection, dialed once: no pool, no retries on another one.
	opt.PoolSize, opt.MinIdleConns, opt.MaxIdleConns, opt.MaxActiveConns, opt.MaxRetries = 1, 0, 1, 1, -1
	client := redis.NewClient(&opt)
	// The first command dials and initialises the connection; it stays
	// checked out of the pool, so that nothing else uses it.
	if err := client.EphemeralConn().Ping(ctx).Err(); err != nil {
		_ = client.Close()
		return nil, nil, err
	}
	conn, n := dialed.get()
	if n != 1 {
		_ = client.Close()
		return nil, nil, fmt.Errorf("bridge: subscription: %d connections dialed for one", n)
	}
	wt := opt.WriteTimeout
	if wt == 0 {
		wt = 3 * time.Second // go-redis's default
	}
	return client, newRespConn(conn, wt), nil
}

// capturedConns records the connections a go-redis client dials.
type capturedConns struct {
	mu   sync.Mutex
	conn net.Conn
	n    int
}

// dialer returns opt's dialer, or go-redis's default (a TCP or TLS dial with
// opt's DialTimeout and TLSConfig, as redis.NewDialer builds it in v9.23's
// options.go), recording each connection it returns.
func (c *capturedConns) dialer(opt *redis.Options) func(ctx context.Context, network, addr string) (net.Conn, error) {
	base := opt.Dialer
	if base == nil {
		d := &redis.Options{DialTimeout: opt.DialTimeout, TLSConfig: opt.TLSConfig}
		if d.DialTimeout == 0 {
			d.DialTimeout = 5 * time.Second // go-redis's default
		}
		base = redis.NewDialer(d)
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := base(ctx, network, addr)
		if err == nil {
			c.mu.Lock()
			c.conn = conn
			c.n++
			c.mu.Unlock()
		}
		return conn, err
	}
}

func (c *capturedConns) get() (net.Conn, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn, c.n
}
