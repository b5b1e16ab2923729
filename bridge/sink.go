package bridge

import (
	"context"
	"errors"
	"fmt"
)

// Entry is a record with its encoding, shared by every sink. Sinks must not
// modify an Entry or its Body.
type Entry struct {
	Record Record
	Body   []byte // Record.AppendJSON, computed once
}

// Limits shapes the batches the Relay hands a sink.
type Limits struct {
	MaxEntries    int // entries per Publish call; at least 1
	MaxBatchBytes int // sum of EntrySize over a batch; 0: no limit
	MaxEntryBytes int // largest EntrySize the target accepts; larger entries are rejected before sending; 0: no limit
	MaxInFlight   int // concurrent Publish calls; 1 keeps batches in order
}

// Sink delivers batches of records to one target.
//
// Publish makes exactly one attempt to deliver batch; the Relay owns
// batching, retry with back-off and shutdown around it. It may be called
// concurrently up to Limits().MaxInFlight times. The slice and the entries
// belong to the caller and must not be retained after Publish returns: the
// Relay rebuilds the next batch in the same memory.
// Publish returns:
//   - nil: every entry was accepted;
//   - a *PartialError: the entries it lists failed, every other entry was
//     accepted and will not be resent;
//   - any other error: no entry is known to be accepted; the whole batch is
//     retried, unless the error is Permanent, in which case it is rejected.
//
// In both error cases an error marked with Permanent means the target refused
// the entry for good (the sender's fault): it is logged, counted and not
// retried. Any other error is retried, resending only the failed entries,
// unchanged. An error wrapping ErrSinkClosed means the target is gone for
// good (a closed standard output): the Relay stops feeding the sink, counts
// what it holds as dropped and reports a fatal error.
//
// Publish returns promptly once ctx is done, whatever the target is doing,
// with an error (the batch is then abandoned and counted); a write that
// cannot be interrupted is left to finish in the background. Close, too,
// returns when its ctx is done. Publish after Close returns an error.
type Sink interface {
	// Name identifies the sink in logs and metrics ("stdout", "sqs", "sns").
	Name() string
	// Limits is called once, after the sink is ready.
	Limits() Limits
	// EntrySize is the size an entry counts for against MaxBatchBytes and
	// MaxEntryBytes (for AWS targets: body plus message attributes).
	EntrySize(e *Entry) int
	Publish(ctx context.Context, batch []*Entry) error
	// Check verifies that the target exists and is writable, for
	// `keyrelay check`; it sends no record.
	Check(ctx context.Context) error
	// Close releases resources after the last Publish.
	Close(ctx context.Context) error
}

// ErrSinkClosed marks a Publish error after which the sink can never
// deliver again.
var ErrSinkClosed = errors.New("the sink's target is closed")

// HealthReporter is implemented by sinks that can be unhealthy without a
// failed Publish (an AWS target whose limits could not be read yet): the
// Relay includes it in its readiness.
type HealthReporter interface {
	Healthy() error
}

// PartialError reports the entries of one Publish call that failed; the
// entries it does not list were accepted.
type PartialError struct {
	Failed []EntryError
}

// EntryError is the failure of the batch entry at Index.
type EntryError struct {
	Index int
	Err   error // Permanent(...) when the target refused it for good
}

func (e *PartialError) Error() string {
	if len(e.Failed) == 0 {
		return "bridge: partial failure of no entries"
	}
	return fmt.Sprintf("bridge: %d entries failed, first: %v", len(e.Failed), e.Failed[0].Err)
}

// Unwrap returns the entry errors, so errors.Is/As see them.
func (e *PartialError) Unwrap() []error {
	errs := make([]error, len(e.Failed))
	for i, f := range e.Failed {
		errs[i] = f.Err
	}
	return errs
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as a permanent refusal: the entry is not retried.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err was marked with Permanent. A *PartialError
// is never permanent as a whole; inspect its entries.
func IsPermanent(err error) bool {
	var pe *PartialError
	if errors.As(err, &pe) {
		return false
	}
	var p *permanentError
	return errors.As(err, &p)
}
