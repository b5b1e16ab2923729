package stdout_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/bridge/bridgetest"
	"github.com/keyrelay/keyrelay/sinks/stdout"
)

// lockedBuffer is a bytes.Buffer safe for the sink's writes and the test's
// reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines returns the complete lines written so far, without their newlines.
func (l *lockedBuffer) lines() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out [][]byte
	for _, line := range bytes.SplitAfter(l.b.Bytes(), []byte("\n")) {
		if n := len(line); n > 0 && line[n-1] == '\n' {
			out = append(out, bytes.Clone(line[:n-1]))
		}
	}
	return out
}

func TestContract(t *testing.T) {
	bridgetest.RunSinkContract(t, func(t *testing.T) (bridge.Sink, func() [][]byte) {
		var out lockedBuffer
		return stdout.New(&out), out.lines
	})
}

// blockedWriter never completes a write until released.
type blockedWriter struct{ release chan struct{} }

func (w blockedWriter) Write(p []byte) (int, error) {
	<-w.release
	return len(p), nil
}

// TestBlockedWriteHonoursContext: a reader that never reads cannot hold a
// Publish, a later Publish or Close beyond their contexts.
func TestBlockedWriteHonoursContext(t *testing.T) {
	w := blockedWriter{release: make(chan struct{})}
	defer close(w.release)
	s := stdout.New(w)
	for _, call := range []func(ctx context.Context) error{
		func(ctx context.Context) error { return s.Publish(ctx, bridgetest.ContractEntries()[:1]) },
		func(ctx context.Context) error { return s.Publish(ctx, bridgetest.ContractEntries()[:1]) },
		func(ctx context.Context) error { return s.Close(ctx) },
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		start := time.Now()
		err := call(ctx)
		cancel()
		if err == nil || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want the context's deadline", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("returned after %s", d)
		}
	}
}

// TestClosedPipeIsFatal: EPIPE (the reader went away) is ErrSinkClosed.
func TestClosedPipeIsFatal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	defer w.Close()
	signal.Ignore(syscall.SIGPIPE) // as main does
	err = stdout.New(w).Publish(context.Background(), bridgetest.ContractEntries()[:1])
	if !errors.Is(err, bridge.ErrSinkClosed) {
		t.Fatalf("err = %v, want ErrSinkClosed", err)
	}
}
