package awsbatch

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/keyrelay/keyrelay/bridge"
)

// MinMessageSize and MaxMessageSize bound the MaximumMessageSize of any
// queue and topic: a message of MinMessageSize bytes (body plus attributes)
// fits every target.
// https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SetQueueAttributes.html
// https://docs.aws.amazon.com/sns/latest/api/API_SetTopicAttributes.html
const (
	MinMessageSize = 1024
	MaxMessageSize = 1 << 20
)

// DefaultReadRetryInitial and DefaultReadRetryMax are the back-off between
// attempts to read a target's attributes when Options leaves it unset.
const (
	DefaultReadRetryInitial = time.Second
	DefaultReadRetryMax     = time.Minute
)

// sizes are what a target accepts, bodies plus attributes: one message of at
// most msg bytes, one batch request of at most req bytes.
type sizes struct{ msg, req int }

// sizesFor returns the sizes of a target whose MaximumMessageSize is
// maxMessage.
func (t *Target) sizesFor(maxMessage int) sizes {
	if t.RequestBytes > 0 {
		return sizes{msg: min(maxMessage, t.RequestBytes), req: t.RequestBytes}
	}
	return sizes{msg: maxMessage, req: maxMessage}
}

// TooLargeError refuses a record whose message would exceed the target's
// size limit.
type TooLargeError struct {
	Size int // the record's message, body plus attributes
	Max  int // the largest message the target accepts
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("record is %d bytes with its message attributes, the target accepts at most %d", e.Size, e.Max)
}

// Limits implements bridge.Sink. It waits for the first attempt to read the
// target's attributes, which the attempt timeout bounds. When they were
// read: 10 entries per batch, the target's MaximumMessageSize per entry,
// per batch SQS's 1 MiB or a topic's MaximumMessageSize, one batch in
// flight on a FIFO target; when packing, as many records as fill one request
// (PackedLimits).
//
// When that attempt failed, the limits are those of the largest target AWS
// allows (MaxMessageSize), so that the Relay refuses no record the target
// may accept; Publish then fits each batch to the sizes it knows (the
// smallest AWS allows, until the attributes are read), in more than one
// request if need be, and refuses a record too large for the target itself.
func (s *Sink) Limits() bridge.Limits {
	<-s.first
	sz, known, _ := s.current()
	if !known {
		sz = s.target.sizesFor(MaxMessageSize)
	}
	inFlight := s.opt.MaxInFlight
	if s.fifo {
		inFlight = 1
	}
	if s.packed {
		return PackedLimits(sz.msg, sz.req, inFlight)
	}
	return bridge.Limits{MaxEntries: MaxBatchEntries, MaxBatchBytes: sz.req, MaxEntryBytes: sz.msg, MaxInFlight: inFlight}
}

// Healthy reports whether the target's size limits are known. It returns
// nil once its attributes were read, and before the first attempt to read
// them has ended; after a failed attempt, until one succeeds, an error that
// names the target and the cause. Meanwhile records larger than
// MinMessageSize wait. For a readiness probe.
func (s *Sink) Healthy() error {
	_, known, err := s.current()
	if known || err == nil {
		return nil
	}
	return fmt.Errorf("%w (until the %s's attributes are read, messages are held to %d bytes)", err, s.target.Kind, MinMessageSize)
}

// current returns the sizes Publish uses, whether they are the target's own,
// and why they are not.
func (s *Sink) current() (sizes, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur, s.known, s.readErr
}

// readLoop reads the target's attributes until it succeeds or Close, with
// exponential back-off and jitter between attempts. It closes s.first after
// the first attempt and s.stopped when it returns.
func (s *Sink) readLoop(ctx context.Context) {
	defer close(s.stopped)
	firstOpen := true
	endFirst := func() {
		if firstOpen {
			firstOpen = false
			close(s.first)
		}
	}
	defer endFirst()
	for attempt := 1; ; attempt++ {
		if _, known, _ := s.current(); known {
			return // Check read them
		}
		sz, err := s.readSizes(ctx)
		if ctx.Err() != nil {
			return // closed
		}
		if err == nil {
			s.learn(sz)
			return
		}
		s.mu.Lock()
		s.readErr = err
		s.mu.Unlock()
		endFirst()
		wait := bridge.Backoff(s.opt.ReadRetryInitial, s.opt.ReadRetryMax, attempt)
		s.opt.Log.Warn("sink attributes not read: records over the smallest size limit wait until they are",
			"sink", s.target.Service, "attempt", attempt, "retry_in", wait.Round(time.Millisecond).String(),
			"max_message_bytes", MinMessageSize, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// learn records the target's sizes, the first time they are read.
func (s *Sink) learn(sz sizes) {
	s.mu.Lock()
	was, failed := s.known, s.readErr != nil
	if !was {
		s.known, s.cur, s.readErr = true, sz, nil
	}
	s.mu.Unlock()
	if !was && failed {
		s.opt.Log.Info("sink attributes read", "sink", s.target.Service,
			"max_message_bytes", sz.msg, "max_request_bytes", sz.req)
	}
}

// readSizes makes one attempt to read the target's attributes and returns
// its sizes; its errors name the target and what to fix.
func (s *Sink) readSizes(ctx context.Context) (sizes, error) {
	ctx, cancel := attemptContext(ctx, s.opt.AttemptTimeout)
	defer cancel()
	attrs, err := s.t.Attributes(ctx)
	if err != nil {
		return sizes{}, s.errorf("read attributes: %w", s.explain(err, s.target.ReadAction))
	}
	n := s.target.DefaultMessageBytes
	if v := attrs["MaximumMessageSize"]; v != "" {
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			return sizes{}, s.errorf("MaximumMessageSize %q is not a positive number", v)
		}
	}
	return s.target.sizesFor(n), nil
}

// holdBack turns the refusals of records too large for the smallest sizes
// into retryable failures while the target's own sizes are unknown: the
// target may well accept them.
func (s *Sink) holdBack(refused []bridge.EntryError, readErr error) {
	for i, f := range refused {
		var tl *TooLargeError
		if !errors.As(f.Err, &tl) {
			continue
		}
		why := "is being read"
		if readErr != nil {
			why = "could not be read yet"
		}
		refused[i].Err = s.errorf("record of %d bytes held back: the %s's MaximumMessageSize %s, and until it is known messages are held to %d bytes",
			tl.Size, s.target.Kind, why, tl.Max)
	}
}

// explain is explainCheck for this target.
func (s *Sink) explain(err error, action string) error {
	return explainCheck(err, action, s.target.ID, s.target.NotFound, s.target.IsNotFound)
}
