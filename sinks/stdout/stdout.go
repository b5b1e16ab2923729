// Package stdout is the sink that writes one JSON record per line to a
// writer (standard output): for debugging, for piping into other tools and
// for log-shipping set-ups that collect a container's output.
package stdout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/keyrelay/keyrelay/bridge"
)

// Name is the sink's name in KEYRELAY_SINKS, logs and metrics.
const Name = "stdout"

// Sink writes each batch as newline-delimited JSON with one Write call.
//
// A write to a pipe or terminal nobody reads blocks, and a blocking write
// to standard output cannot be interrupted. So the write runs on its own
// goroutine and Publish waits for it only until its context is done: a stuck
// reader can hold records, never the process. While a write is stuck, the
// next Publish waits for it (again only until its context is done), so
// lines are never interleaved or reordered.
type Sink struct {
	out io.Writer
	// token is held (a value in the channel) from the start of a write
	// until it completes, possibly after Publish has given up on it. Its
	// holder owns buf and closed.
	token  chan struct{}
	buf    []byte
	closed bool
}

var _ bridge.Sink = (*Sink)(nil)

// New returns a sink writing to w.
func New(w io.Writer) *Sink { return &Sink{out: w, token: make(chan struct{}, 1)} }

// Name implements bridge.Sink.
func (s *Sink) Name() string { return Name }

// Limits implements bridge.Sink: large batches, one at a time so lines stay
// in order.
func (s *Sink) Limits() bridge.Limits { return bridge.Limits{MaxEntries: 1024, MaxInFlight: 1} }

// EntrySize implements bridge.Sink.
func (s *Sink) EntrySize(e *bridge.Entry) int { return len(e.Body) + 1 }

// errClosed is returned by Publish after Close.
var errClosed = errors.New("stdout: the sink is closed")

// Publish implements bridge.Sink. A write error fails the whole batch:
// lines written before it may be written again on retry. A closed pipe
// (EPIPE: `keyrelay | head`) is bridge.ErrSinkClosed.
func (s *Sink) Publish(ctx context.Context, batch []*bridge.Entry) error {
	if err := s.acquire(ctx); err != nil {
		return err
	}
	if s.closed {
		s.release()
		return errClosed
	}
	buf := s.buf[:0]
	for _, e := range batch {
		buf = append(buf, e.Body...)
		buf = append(buf, '\n')
	}
	s.buf = buf
	done := make(chan error, 1)
	go func() {
		_, err := s.out.Write(buf)
		s.release()
		done <- err
	}()
	select {
	case err := <-done:
		return classify(err)
	case <-ctx.Done():
		return fmt.Errorf("stdout: write still blocked (nobody is reading standard output): %w", ctx.Err())
	}
}

// acquire waits for the previous write to complete, or for ctx.
func (s *Sink) acquire(ctx context.Context) error {
	select {
	case s.token <- struct{}{}: // free: take it even if ctx is done
		return nil
	default:
	}
	select {
	case s.token <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stdout: a previous write is still blocked (nobody is reading standard output): %w", ctx.Err())
	}
}

func (s *Sink) release() { <-s.token }

func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EPIPE), errors.Is(err, io.ErrClosedPipe), errors.Is(err, os.ErrClosed):
		return fmt.Errorf("stdout: %w: %w", bridge.ErrSinkClosed, err)
	}
	return fmt.Errorf("stdout: write: %w", err)
}

// Check implements bridge.Sink; standard output needs no check.
func (s *Sink) Check(context.Context) error { return nil }

// Close implements bridge.Sink: it waits for a write in progress until ctx
// is done. Closing twice is harmless.
func (s *Sink) Close(ctx context.Context) error {
	if err := s.acquire(ctx); err != nil {
		return err
	}
	s.closed = true
	s.release()
	return nil
}
