// Package stdout is the sink that writes one JSON record per line to a
// writer (standard output): for debugging, for piping into other tools and
// for log-shipping set-ups that collect a container's output.
package stdout

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/keyrelay/keyrelay/bridge"
)

// Name is the sink's name in KEYRELAY_SINKS, logs and metrics.
const Name = "stdout"

// Sink writes each batch as newline-delimited JSON through a buffer that is
// flushed once per batch.
type Sink struct {
	mu  sync.Mutex
	out io.Writer
	w   *bufio.Writer
}

var _ bridge.Sink = (*Sink)(nil)

// New returns a sink writing to w.
func New(w io.Writer) *Sink { return &Sink{out: w, w: bufio.NewWriterSize(w, 64<<10)} }

// Name implements bridge.Sink.
func (s *Sink) Name() string { return Name }

// Limits implements bridge.Sink: large batches, one at a time so lines stay
// in order.
func (s *Sink) Limits() bridge.Limits { return bridge.Limits{MaxEntries: 1024, MaxInFlight: 1} }

// EntrySize implements bridge.Sink.
func (s *Sink) EntrySize(e *bridge.Entry) int { return len(e.Body) + 1 }

// Publish implements bridge.Sink. A write error fails the whole batch
// (retryable): lines written before it may be written again.
func (s *Sink) Publish(ctx context.Context, batch []*bridge.Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range batch {
		s.w.Write(e.Body) // errors are sticky in bufio.Writer and surface in Flush
		s.w.WriteByte('\n')
	}
	if err := s.w.Flush(); err != nil {
		s.w.Reset(s.out) // bufio errors are sticky; the retry starts clean
		return fmt.Errorf("stdout: write: %w", err)
	}
	return nil
}

// Check implements bridge.Sink; standard output needs no check.
func (s *Sink) Check(context.Context) error { return nil }

// Close implements bridge.Sink.
func (s *Sink) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Flush()
}
