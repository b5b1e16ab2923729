package stdout_test

import (
	"bytes"
	"sync"
	"testing"

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
