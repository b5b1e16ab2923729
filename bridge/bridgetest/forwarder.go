package bridgetest

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// maxForwardedConns bounds the connections a Forwarder keeps open at once;
// more are refused, so a runaway reconnect loop cannot exhaust the test's
// file descriptors.
const maxForwardedConns = 128

// Forwarder is a TCP forwarder on a free loopback port. It stands in for two
// things a test cannot otherwise control:
//
//   - an endpoint whose name moves to another node (the ElastiCache primary
//     endpoint after a failover): SetTarget changes where new connections
//     go, while connections already open stay on the old node;
//   - a network that fails: Cut closes every open connection (both sides see
//     a reset or EOF), Stall stops forwarding bytes on every open connection
//     without closing anything, like a peer that was blackholed.
//
// It is stopped, and every connection closed, when the test ends.
type Forwarder struct {
	// Addr is the forwarder's "127.0.0.1:port".
	Addr string

	ln net.Listener
	wg sync.WaitGroup

	mu     sync.Mutex
	target string
	conns  map[*forwardedConn]struct{}
	closed bool
	paused chan struct{} // non-nil while paused; closed by Resume
}

// Pause stops reading on every connection, open or new, in both directions,
// until Resume: like a peer that stops reading its socket (a process
// frozen, or too slow to keep up). Bytes already read are passed on; the
// senders' buffers fill up, and Redis's output buffer for the client grows.
func (f *Forwarder) Pause() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.paused == nil {
		f.paused = make(chan struct{})
	}
}

// Resume ends a Pause.
func (f *Forwarder) Resume() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.paused != nil {
		close(f.paused)
		f.paused = nil
	}
}

// waitResumed returns once the forwarder is not paused, or the connection
// is cut.
func (f *Forwarder) waitResumed(c *forwardedConn) {
	f.mu.Lock()
	ch := f.paused
	f.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
		case <-c.cut:
		}
	}
}

// forwardedConn is one client connection and its connection to the target.
type forwardedConn struct {
	f              *Forwarder
	client, server net.Conn
	target         string

	stallOnce sync.Once
	stalled   chan struct{} // closed by Stall
	cutOnce   sync.Once
	cut       chan struct{} // closed when both sides are closed
}

// StartForwarder starts a forwarder to target ("host:port").
func StartForwarder(t testing.TB, target string) *Forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("forwarder: listen: %v", err)
	}
	f := &Forwarder{Addr: ln.Addr().String(), ln: ln, target: target, conns: map[*forwardedConn]struct{}{}}
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(f.Close)
	return f
}

// SetTarget makes new connections go to target; open connections stay where
// they are.
func (f *Forwarder) SetTarget(target string) {
	f.mu.Lock()
	f.target = target
	f.mu.Unlock()
}

// Conns returns the number of open connections, by target.
func (f *Forwarder) Conns() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for c := range f.conns {
		out[c.target]++
	}
	return out
}

// Cut closes every open connection and returns how many there were.
func (f *Forwarder) Cut() int {
	conns := f.snapshot()
	for _, c := range conns {
		c.close()
	}
	return len(conns)
}

// Stall stops forwarding bytes on every open connection, in both directions,
// without closing them: what either side sends from now on is never
// delivered, and neither side learns that the other closed. It returns how
// many connections it stalled. New connections are not affected.
func (f *Forwarder) Stall() int {
	conns := f.snapshot()
	for _, c := range conns {
		c.stallOnce.Do(func() { close(c.stalled) })
	}
	return len(conns)
}

// Close stops accepting, closes every connection and waits for the
// forwarder's goroutines.
func (f *Forwarder) Close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	f.mu.Unlock()
	_ = f.ln.Close()
	f.Cut()
	f.wg.Wait()
}

func (f *Forwarder) snapshot() []*forwardedConn {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*forwardedConn, 0, len(f.conns))
	for c := range f.conns {
		out = append(out, c)
	}
	return out
}

func (f *Forwarder) accept() {
	defer f.wg.Done()
	for {
		client, err := f.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // e.g. EMFILE: do not spin
			continue
		}
		f.mu.Lock()
		target, full := f.target, len(f.conns) >= maxForwardedConns || f.closed
		f.mu.Unlock()
		if full {
			_ = client.Close()
			continue
		}
		f.wg.Add(1)
		go f.serve(client, target)
	}
}

// serve connects client to target and forwards until either side closes,
// the connection is cut, or the forwarder closes.
func (f *Forwarder) serve(client net.Conn, target string) {
	defer f.wg.Done()
	server, err := net.DialTimeout("tcp", target, 2*time.Second)
	if err != nil {
		_ = client.Close() // like a refused connection
		return
	}
	c := &forwardedConn{f: f, client: client, server: server, target: target,
		stalled: make(chan struct{}), cut: make(chan struct{})}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		c.close()
		return
	}
	f.conns[c] = struct{}{}
	f.mu.Unlock()

	var pipes sync.WaitGroup
	pipes.Add(2)
	go func() { defer pipes.Done(); c.pipe(server, client) }()
	go func() { defer pipes.Done(); c.pipe(client, server) }()
	pipes.Wait()

	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
}

// pipe copies src to dst. Once the connection is stalled, whatever it reads
// (bytes or the end of the stream) is held back until the connection is cut.
func (c *forwardedConn) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		c.f.waitResumed(c)
		n, err := src.Read(buf)
		select {
		case <-c.stalled:
			<-c.cut
			return
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				c.close()
				return
			}
		}
		if err != nil { // EOF, reset or cut: close both sides
			c.close()
			return
		}
	}
}

func (c *forwardedConn) close() {
	c.cutOnce.Do(func() {
		_ = c.client.Close()
		_ = c.server.Close()
		close(c.cut)
	})
}
