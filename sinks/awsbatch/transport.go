package awsbatch

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// Transport is one AWS batch API as the Sink uses it: SQS SendMessageBatch
// to a queue, SNS PublishBatch to a topic. It turns the Sink's messages into
// the SDK's types and back, and nothing more: the Sink bounds every call with
// its attempt timeout, and classifies and explains the errors, which the
// Transport returns as the SDK returned them. Safe for concurrent use.
type Transport interface {
	// Target describes the queue or topic; New calls it once.
	Target() Target
	// SendBatch makes one batch request, with the SDK's own retries off
	// (OneAttempt), holding msgs in order, message i with entry Id
	// EntryID(i) and, when GroupID is set, its FIFO group and deduplication
	// ids. It returns the Ids of the response's Successful list and its
	// Failed entries, or the error of the whole request.
	SendBatch(ctx context.Context, msgs []Message) (succeeded []string, failed []Failure, err error)
	// Attributes reads the target's attributes (at least
	// MaximumMessageSize when the target sets it).
	Attributes(ctx context.Context) (map[string]string, error)
	// ProbeSend makes a batch request with no entries, which delivers
	// nothing, and returns nil when the answer shows that the caller may
	// send (the service refuses the empty batch itself), else the error.
	ProbeSend(ctx context.Context) error
}

// Target describes a Transport's queue or topic: its limits and the words
// the Sink's errors use for it.
type Target struct {
	Service string // "sqs" or "sns": the sink's Name and its errors' prefix
	Kind    string // "queue" or "topic"
	ID      string // the queue URL or topic ARN; a ".fifo" suffix makes it FIFO (IsFIFO)
	SendOp  string // the batch operation, "SendMessageBatch" or "PublishBatch"

	// SendAction and ReadAction are the IAM actions that allow SendOp and
	// Attributes, named when access is denied.
	SendAction, ReadAction string
	// NotFound says what to fix when the target does not exist; IsNotFound
	// recognizes the service's error for it.
	NotFound   string
	IsNotFound func(error) bool

	// DefaultMessageBytes is the MaximumMessageSize of a target whose
	// attributes do not set it.
	DefaultMessageBytes int
	// RequestBytes is the limit on the sum of a batch request's message
	// sizes whatever the target's MaximumMessageSize (SQS: 1 MiB); 0: the
	// target's MaximumMessageSize holds for the whole request (SNS).
	RequestBytes int
}

// Message is one entry of a batch request: one record, or several when
// packed.
type Message struct {
	Entries []int       // indexes of its records in the Publish batch, in batch order
	Body    []byte      // the record's body, or the records' bodies joined by "\n"
	Attrs   []Attribute // its message attributes
	Size    int         // len(Body) plus attribute names, types and values, as the target counts it
	// GroupID and DeduplicationID are set for a FIFO target only.
	GroupID, DeduplicationID string
}

// Results converts a batch response's Successful and Failed lists: id reads
// the Id of a successful entry, failure the fields of a failed one.
func Results[S, F any](successful []S, failed []F, id func(*S) *string,
	failure func(*F) (id, code, message *string, senderFault bool)) ([]string, []Failure) {
	ids := make([]string, len(successful))
	for i := range successful {
		ids[i] = aws.ToString(id(&successful[i]))
	}
	fails := make([]Failure, len(failed))
	for i := range failed {
		fid, code, msg, sender := failure(&failed[i])
		fails[i] = Failure{ID: aws.ToString(fid), Code: aws.ToString(code), Message: aws.ToString(msg), SenderFault: sender}
	}
	return ids, fails
}
