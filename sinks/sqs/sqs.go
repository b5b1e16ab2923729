package sqs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/sinks/awsbatch"
)

// Name is the sink's name in KEYRELAY_SINKS, logs and metrics.
const Name = "sqs"

// MaxBatchBytes is SendMessageBatch's limit on the sum of its messages'
// sizes (body plus attributes), whatever the queue's MaximumMessageSize.
// https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessageBatch.html
const MaxBatchBytes = 1 << 20

// RequiredIAMActions are the IAM actions the sink needs on the queue:
// SendMessage (SendMessageBatch is authorized by it) and GetQueueAttributes
// (the queue's size limit, read at start, and `keyrelay check`).
var RequiredIAMActions = []string{"sqs:SendMessage", "sqs:GetQueueAttributes"}

// API is the part of the SQS client the sink uses; *sqs.Client implements
// it.
type API interface {
	SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error)
	GetQueueAttributes(ctx context.Context, in *sqs.GetQueueAttributesInput, optFns ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
}

// Options configures a Sink.
type Options struct {
	// Client is the SQS client, normally sqs.NewFromConfig(awsCfg).
	Client API
	// QueueURL is the target; a URL ending in ".fifo" is a FIFO queue.
	QueueURL string
	// GroupBy chooses the message group id on a FIFO queue; the zero value
	// groups by key.
	GroupBy awsbatch.GroupBy
	// MaxInFlight is the number of concurrent SendMessageBatch calls to a
	// standard queue (awsbatch.DefaultMaxInFlight when 0). A FIFO queue
	// always gets 1, to keep each group's order.
	MaxInFlight int
	// Pack packs many records into each message (awsbatch.PackNDJSON) on a
	// standard queue; the zero value and awsbatch.PackOff send one record
	// per message. New refuses packing on a FIFO queue.
	Pack awsbatch.Packing
	// AttemptTimeout bounds one SendMessageBatch call
	// (awsbatch.DefaultAttemptTimeout when 0).
	AttemptTimeout time.Duration
}

// Sink sends batches of records to one SQS queue. Safe for concurrent use.
type Sink struct {
	opt    Options
	fifo   bool
	limits bridge.Limits
	packed bool
	msgCap int // packed: the largest message, body plus attributes
	reqCap int // packed: the largest request, sum of its messages
}

var _ bridge.Sink = (*Sink)(nil)

// New reads the queue's MaximumMessageSize and returns a sink sized by it.
// It fails when the queue cannot be read (missing, no permission), with an
// explanation naming what to fix.
func New(ctx context.Context, opt Options) (*Sink, error) {
	if opt.Client == nil || opt.QueueURL == "" {
		return nil, errors.New("sqs: a client and a queue URL are required")
	}
	if opt.MaxInFlight <= 0 {
		opt.MaxInFlight = awsbatch.DefaultMaxInFlight
	}
	s := &Sink{opt: opt, fifo: awsbatch.IsFIFO(opt.QueueURL)}
	maxSize, err := s.maxMessageSize(ctx)
	if err != nil {
		return nil, err
	}
	s.limits = bridge.Limits{
		MaxEntries:    awsbatch.MaxBatchEntries,
		MaxBatchBytes: MaxBatchBytes,
		MaxEntryBytes: min(maxSize, MaxBatchBytes),
		MaxInFlight:   opt.MaxInFlight,
	}
	if s.fifo {
		s.limits.MaxInFlight = 1
	}
	pack, err := awsbatch.ParsePacking(string(opt.Pack))
	if err != nil {
		return nil, fmt.Errorf("sqs: pack %q: %w", opt.Pack, err)
	}
	if pack == awsbatch.PackNDJSON {
		if s.fifo {
			return nil, fmt.Errorf("sqs: queue %s: %w", opt.QueueURL, awsbatch.ErrPackFIFO)
		}
		s.packed, s.msgCap, s.reqCap = true, min(maxSize, MaxBatchBytes), MaxBatchBytes
		s.limits = awsbatch.PackedLimits(s.msgCap, s.reqCap, opt.MaxInFlight)
	}
	return s, nil
}

// maxMessageSize reads the queue's MaximumMessageSize (1 MiB, SQS's default,
// if the answer lacks it).
func (s *Sink) maxMessageSize(ctx context.Context) (int, error) {
	attrs, err := s.attributes(ctx)
	if err != nil {
		return 0, err
	}
	v, ok := attrs[string(types.QueueAttributeNameMaximumMessageSize)]
	if !ok {
		return MaxBatchBytes, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("sqs: queue %s: MaximumMessageSize %q is not a positive number", s.opt.QueueURL, v)
	}
	return n, nil
}

// attributes reads the queue's attributes, explaining failures.
func (s *Sink) attributes(ctx context.Context) (map[string]string, error) {
	ctx, cancel := awsbatch.AttemptContext(ctx, s.opt.AttemptTimeout)
	defer cancel()
	out, err := s.opt.Client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       aws.String(s.opt.QueueURL),
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameMaximumMessageSize},
	})
	if err != nil {
		return nil, fmt.Errorf("sqs: queue %s: read attributes: %w", s.opt.QueueURL,
			awsbatch.ExplainCheck(err, "sqs:GetQueueAttributes", s.opt.QueueURL, s.notFound(), isNotFound))
	}
	return out.Attributes, nil
}

func (s *Sink) notFound() string {
	return "the queue does not exist: check KEYRELAY_SQS_QUEUE_URL and AWS_REGION (the queue's region)"
}

func isNotFound(err error) bool {
	var nq *types.QueueDoesNotExist
	return errors.As(err, &nq) || awsbatch.Code(err) == "NonExistentQueue"
}

// Name implements bridge.Sink.
func (s *Sink) Name() string { return Name }

// Limits implements bridge.Sink: 10 entries and 1 MiB per batch, entries up
// to the queue's MaximumMessageSize, one batch in flight on a FIFO queue.
// When packing: as many records as fill one 1 MiB request
// (awsbatch.PackedLimits).
func (s *Sink) Limits() bridge.Limits { return s.limits }

// EntrySize implements bridge.Sink: body plus message attributes, as SQS
// counts them; when packing, body plus its newline (the attributes belong to
// the packed message).
func (s *Sink) EntrySize(e *bridge.Entry) int {
	if s.packed {
		return awsbatch.PackedEntrySize(e)
	}
	return awsbatch.EntrySize(e)
}

// Publish implements bridge.Sink with one SendMessageBatch call. Entry i has
// Id "i". Failed entries come back in a *bridge.PartialError (sender faults
// Permanent); a failed request is classified by awsbatch.RequestError.
//
// When packing, Publish packs the batch into at most 10 messages (see
// awsbatch.PublishPacked) and sends them with one SendMessageBatch call.
func (s *Sink) Publish(ctx context.Context, batch []*bridge.Entry) error {
	if len(batch) == 0 {
		return nil
	}
	if s.packed {
		return awsbatch.PublishPacked(ctx, Name, batch, s.msgCap, s.reqCap, s.sendPacked)
	}
	entries := make([]types.SendMessageBatchRequestEntry, len(batch))
	for i, e := range batch {
		entries[i] = types.SendMessageBatchRequestEntry{
			Id:                aws.String(awsbatch.EntryID(i)),
			MessageBody:       aws.String(string(e.Body)),
			MessageAttributes: messageAttributes(&e.Record),
		}
		if s.fifo {
			entries[i].MessageGroupId = aws.String(s.opt.GroupBy.GroupID(&e.Record))
			entries[i].MessageDeduplicationId = aws.String(e.Record.ID)
		}
	}
	succeeded, failed, err := s.send(ctx, entries)
	if err != nil {
		return err
	}
	return awsbatch.BatchResult(Name, len(batch), succeeded, failed)
}

// sendPacked sends packed messages with one SendMessageBatch call.
func (s *Sink) sendPacked(ctx context.Context, msgs []awsbatch.PackedMessage) ([]string, []awsbatch.Failure, error) {
	entries := make([]types.SendMessageBatchRequestEntry, len(msgs))
	for i, m := range msgs {
		entries[i] = types.SendMessageBatchRequestEntry{
			Id:                aws.String(awsbatch.EntryID(i)),
			MessageBody:       aws.String(string(m.Body)),
			MessageAttributes: toAttributes(m.Attrs),
		}
	}
	return s.send(ctx, entries)
}

// send makes one SendMessageBatch call and returns the ids that succeeded and the
// per-entry failures, or the classified error of the whole request.
func (s *Sink) send(ctx context.Context, entries []types.SendMessageBatchRequestEntry) ([]string, []awsbatch.Failure, error) {
	ctx, cancel := awsbatch.AttemptContext(ctx, s.opt.AttemptTimeout)
	defer cancel()
	out, err := s.opt.Client.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{
		QueueUrl: aws.String(s.opt.QueueURL),
		Entries:  entries,
	}, oneAttempt)
	if err != nil {
		return nil, nil, awsbatch.RequestError(Name, "SendMessageBatch", err)
	}
	succeeded := make([]string, len(out.Successful))
	for i, r := range out.Successful {
		succeeded[i] = aws.ToString(r.Id)
	}
	failed := make([]awsbatch.Failure, len(out.Failed))
	for i, f := range out.Failed {
		failed[i] = awsbatch.Failure{ID: aws.ToString(f.Id), Code: aws.ToString(f.Code),
			Message: aws.ToString(f.Message), SenderFault: f.SenderFault}
	}
	return succeeded, failed, nil
}

func oneAttempt(o *sqs.Options) { o.Retryer = awsbatch.OneAttempt(o.Retryer) }

func messageAttributes(rec *bridge.Record) map[string]types.MessageAttributeValue {
	return toAttributes(awsbatch.Attributes(rec))
}

func toAttributes(attrs []awsbatch.Attribute) map[string]types.MessageAttributeValue {
	m := make(map[string]types.MessageAttributeValue, len(attrs))
	for _, a := range attrs {
		m[a.Name] = types.MessageAttributeValue{DataType: aws.String(a.DataType), StringValue: aws.String(a.Value)}
	}
	return m
}

// Check implements bridge.Sink for `keyrelay check`: the queue exists and
// its attributes are readable (sqs:GetQueueAttributes), and sending is
// allowed. The latter is probed with an empty SendMessageBatch, which sends
// nothing: SQS answers EmptyBatchRequest to a caller allowed to send and
// AccessDenied to one that is not.
func (s *Sink) Check(ctx context.Context) error {
	if _, err := s.attributes(ctx); err != nil {
		return err
	}
	ctx, cancel := awsbatch.AttemptContext(ctx, s.opt.AttemptTimeout)
	defer cancel()
	_, err := s.opt.Client.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{
		QueueUrl: aws.String(s.opt.QueueURL),
		Entries:  []types.SendMessageBatchRequestEntry{},
	})
	if err == nil || awsbatch.Code(err) == "EmptyBatchRequest" {
		return nil
	}
	return fmt.Errorf("sqs: queue %s: probe SendMessageBatch: %w", s.opt.QueueURL,
		awsbatch.ExplainCheck(err, "sqs:SendMessage", s.opt.QueueURL, s.notFound(), isNotFound))
}

// Close implements bridge.Sink; the SDK client holds nothing to release.
func (s *Sink) Close(context.Context) error { return nil }
