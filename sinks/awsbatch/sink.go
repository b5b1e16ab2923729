package awsbatch

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyrelay/keyrelay/bridge"
)

// Options configures a Sink; the zero value is valid.
type Options struct {
	// GroupBy chooses the message group id on a FIFO target; the zero
	// value groups by key.
	GroupBy GroupBy
	// MaxInFlight is the number of concurrent batch requests to a standard
	// target (DefaultMaxInFlight when 0). A FIFO target always gets 1, to
	// keep each group's order.
	MaxInFlight int
	// Pack packs many records into each message (PackNDJSON) on a standard
	// target; the zero value and PackOff send one record per message. New
	// refuses packing on a FIFO target.
	Pack Packing
	// AttemptTimeout bounds one request (DefaultAttemptTimeout when 0).
	AttemptTimeout time.Duration
	// ReadRetryInitial and ReadRetryMax are the back-off between attempts
	// to read the target's attributes: from ReadRetryInitial, doubling up
	// to ReadRetryMax, with jitter (DefaultReadRetryInitial and
	// DefaultReadRetryMax when 0).
	ReadRetryInitial, ReadRetryMax time.Duration
	// Log receives the outcome of reading the target's attributes (nil:
	// discarded).
	Log *slog.Logger
}

// Sink is the bridge.Sink of an AWS batch API, over a Transport: it shapes
// batches (one record per message, or packed), sends them with one request
// per attempt, classifies every outcome for the bridge, and learns the
// target's size limits in the background (see Limits and Healthy). Safe for
// concurrent use.
type Sink struct {
	t      Transport
	target Target
	opt    Options
	fifo   bool
	packed bool

	mu      sync.Mutex
	known   bool          // the target's attributes were read
	cur     sizes         // the target's sizes once known; the smallest AWS allows until then
	readErr error         // why the last read failed, while !known
	first   chan struct{} // closed when the first read attempt has ended
	stop    context.CancelFunc
	stopped chan struct{} // closed when the background reader has returned
	closed  atomic.Bool
}

// New returns a sink over t. It does no I/O: the target's attributes are
// read in the background, with retries, until they are known (see Limits).
// It fails only on options that cannot work: an unknown packing, or packing
// towards a FIFO target.
func New(t Transport, opt Options) (*Sink, error) {
	target := t.Target()
	if opt.MaxInFlight <= 0 {
		opt.MaxInFlight = DefaultMaxInFlight
	}
	if opt.ReadRetryInitial <= 0 {
		opt.ReadRetryInitial = DefaultReadRetryInitial
	}
	if opt.ReadRetryMax <= 0 {
		opt.ReadRetryMax = DefaultReadRetryMax
	}
	opt.ReadRetryMax = max(opt.ReadRetryMax, opt.ReadRetryInitial)
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	pack, err := ParsePacking(string(opt.Pack))
	if err != nil {
		return nil, fmt.Errorf("%s: pack %q: %w", target.Service, opt.Pack, err)
	}
	s := &Sink{t: t, target: target, opt: opt, fifo: IsFIFO(target.ID), packed: pack == PackNDJSON,
		cur: target.sizesFor(MinMessageSize), first: make(chan struct{}), stopped: make(chan struct{})}
	if err := CheckPacking(pack, target.ID); err != nil {
		return nil, s.errorf("%w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	go s.readLoop(ctx)
	return s, nil
}

// errorf formats an error about the target: "sqs: queue URL: …".
func (s *Sink) errorf(format string, args ...any) error {
	return fmt.Errorf("%s: %s %s: "+format, append([]any{s.target.Service, s.target.Kind, s.target.ID}, args...)...)
}

// Name implements bridge.Sink: the Transport's service, "sqs" or "sns".
func (s *Sink) Name() string { return s.target.Service }

// EntrySize implements bridge.Sink: body plus message attributes, as SQS and
// SNS count them; when packing, body plus its newline (the attributes
// belong to the packed message).
func (s *Sink) EntrySize(e *bridge.Entry) int {
	if s.packed {
		return PackedEntrySize(e)
	}
	return EntrySize(e)
}

// Publish implements bridge.Sink. Entry i of a request has Id "i". The batch
// becomes messages, one record each or packed (Pack), within the target's
// sizes, and the messages one request (normally exactly one; see send).
// Failed entries come back in a *bridge.PartialError (sender faults
// Permanent); when the batch was one request that failed as a whole, its
// error comes back as is, classified: Permanent when the request itself was
// at fault, else retryable.
//
// Until the target's attributes are read, messages are held to the
// smallest sizes AWS allows: a record too large for them fails retryably
// and waits, while the others are sent. Publish after Close fails.
func (s *Sink) Publish(ctx context.Context, batch []*bridge.Entry) error {
	if s.closed.Load() {
		return s.errorf("publish after Close")
	}
	if len(batch) == 0 {
		return nil
	}
	sz, known, readErr := s.current()
	var requests [][]Message
	var refused []bridge.EntryError
	if s.packed {
		requests, refused = Pack(batch, sz.msg, sz.req)
	} else {
		requests, refused = s.split(batch, sz)
	}
	if !known {
		s.holdBack(refused, readErr)
	}
	return s.send(ctx, requests, refused)
}

// Check implements bridge.Sink for `keyrelay check`: the target exists and
// its attributes are readable (Target.ReadAction), and sending is allowed
// (Target.SendAction), which Transport.ProbeSend asks without sending
// anything. Failures name what to fix.
func (s *Sink) Check(ctx context.Context) error {
	sz, err := s.readSizes(ctx)
	if err != nil {
		return err
	}
	s.learn(sz)
	ctx, cancel := attemptContext(ctx, s.opt.AttemptTimeout)
	defer cancel()
	if err := s.t.ProbeSend(ctx); err != nil {
		return s.errorf("probe %s: %w", s.target.SendOp, s.explain(err, s.target.SendAction))
	}
	return nil
}

// Close implements bridge.Sink: it stops reading the target's attributes;
// the SDK client holds nothing to release.
func (s *Sink) Close(ctx context.Context) error {
	s.closed.Store(true)
	s.stop()
	select {
	case <-s.stopped:
	case <-ctx.Done():
	}
	return nil
}
