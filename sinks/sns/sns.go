package sns

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sns/types"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/sinks/awsbatch"
)

// Name is the sink's name in KEYRELAY_SINKS, logs and metrics.
const Name = "sns"

// DefaultMaxMessageSize is a topic's MaximumMessageSize when the topic does
// not set it (GetTopicAttributes then omits it); it limits each message and
// the sum of a PublishBatch's messages alike.
// https://docs.aws.amazon.com/sns/latest/api/API_PublishBatch.html
// https://docs.aws.amazon.com/sns/latest/api/API_GetTopicAttributes.html
const DefaultMaxMessageSize = 262144

// RequiredIAMActions are the IAM actions the sink needs on the topic: Publish
// (PublishBatch is authorized by it) and GetTopicAttributes (the topic's size
// limit, read at start, and `keyrelay check`).
var RequiredIAMActions = []string{"sns:Publish", "sns:GetTopicAttributes"}

// API is the part of the SNS client the sink uses; *sns.Client implements
// it.
type API interface {
	PublishBatch(ctx context.Context, in *sns.PublishBatchInput, optFns ...func(*sns.Options)) (*sns.PublishBatchOutput, error)
	GetTopicAttributes(ctx context.Context, in *sns.GetTopicAttributesInput, optFns ...func(*sns.Options)) (*sns.GetTopicAttributesOutput, error)
}

// Options configures a Sink.
type Options struct {
	// Client is the SNS client, normally sns.NewFromConfig(awsCfg).
	Client API
	// TopicARN is the target; an ARN ending in ".fifo" is a FIFO topic.
	TopicARN string
	// GroupBy chooses the message group id on a FIFO topic; the zero value
	// groups by key.
	GroupBy awsbatch.GroupBy
	// MaxInFlight is the number of concurrent PublishBatch calls to a
	// standard topic (awsbatch.DefaultMaxInFlight when 0). A FIFO topic
	// always gets 1, to keep each group's order.
	MaxInFlight int
	// Pack packs many records into each message (awsbatch.PackNDJSON) on a
	// standard topic; the zero value and awsbatch.PackOff send one record
	// per message. New refuses packing on a FIFO topic.
	Pack awsbatch.Packing
	// AttemptTimeout bounds one PublishBatch call
	// (awsbatch.DefaultAttemptTimeout when 0).
	AttemptTimeout time.Duration
}

// Sink publishes batches of records to one SNS topic. Safe for concurrent
// use.
type Sink struct {
	opt    Options
	fifo   bool
	limits bridge.Limits
	packed bool
	msgCap int // packed: the largest message, body plus attributes
	reqCap int // packed: the largest request, sum of its messages
}

var _ bridge.Sink = (*Sink)(nil)

// New reads the topic's MaximumMessageSize and returns a sink sized by it.
// It fails when the topic cannot be read (missing, no permission), with an
// explanation naming what to fix.
func New(ctx context.Context, opt Options) (*Sink, error) {
	if opt.Client == nil || opt.TopicARN == "" {
		return nil, errors.New("sns: a client and a topic ARN are required")
	}
	if opt.MaxInFlight <= 0 {
		opt.MaxInFlight = awsbatch.DefaultMaxInFlight
	}
	s := &Sink{opt: opt, fifo: awsbatch.IsFIFO(opt.TopicARN)}
	maxSize, err := s.maxMessageSize(ctx)
	if err != nil {
		return nil, err
	}
	s.limits = bridge.Limits{
		MaxEntries:    awsbatch.MaxBatchEntries,
		MaxBatchBytes: maxSize, // the topic's limit holds for the whole batch too
		MaxEntryBytes: maxSize,
		MaxInFlight:   opt.MaxInFlight,
	}
	if s.fifo {
		s.limits.MaxInFlight = 1
	}
	pack, err := awsbatch.ParsePacking(string(opt.Pack))
	if err != nil {
		return nil, fmt.Errorf("sns: pack %q: %w", opt.Pack, err)
	}
	if pack == awsbatch.PackNDJSON {
		if s.fifo {
			return nil, fmt.Errorf("sns: topic %s: %w", opt.TopicARN, awsbatch.ErrPackFIFO)
		}
		// The topic's limit holds for each message and for the whole batch.
		s.packed, s.msgCap, s.reqCap = true, maxSize, maxSize
		s.limits = awsbatch.PackedLimits(s.msgCap, s.reqCap, opt.MaxInFlight)
	}
	return s, nil
}

func (s *Sink) maxMessageSize(ctx context.Context) (int, error) {
	attrs, err := s.attributes(ctx)
	if err != nil {
		return 0, err
	}
	v, ok := attrs["MaximumMessageSize"]
	if !ok || v == "" {
		return DefaultMaxMessageSize, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("sns: topic %s: MaximumMessageSize %q is not a positive number", s.opt.TopicARN, v)
	}
	return n, nil
}

// attributes reads the topic's attributes, explaining failures.
func (s *Sink) attributes(ctx context.Context) (map[string]string, error) {
	ctx, cancel := awsbatch.AttemptContext(ctx, s.opt.AttemptTimeout)
	defer cancel()
	out, err := s.opt.Client.GetTopicAttributes(ctx, &sns.GetTopicAttributesInput{TopicArn: aws.String(s.opt.TopicARN)})
	if err != nil {
		return nil, fmt.Errorf("sns: topic %s: read attributes: %w", s.opt.TopicARN,
			awsbatch.ExplainCheck(err, "sns:GetTopicAttributes", s.opt.TopicARN, notFound, isNotFound))
	}
	return out.Attributes, nil
}

const notFound = "the topic does not exist: check KEYRELAY_SNS_TOPIC_ARN and AWS_REGION (the topic's region)"

func isNotFound(err error) bool {
	var nf *types.NotFoundException
	return errors.As(err, &nf) || awsbatch.Code(err) == "NotFound"
}

// Name implements bridge.Sink.
func (s *Sink) Name() string { return Name }

// Limits implements bridge.Sink: 10 entries per batch, the topic's
// MaximumMessageSize per entry and per batch, one batch in flight on a FIFO
// topic. When packing: as many records as fill one PublishBatch within the
// topic's MaximumMessageSize (awsbatch.PackedLimits).
func (s *Sink) Limits() bridge.Limits { return s.limits }

// EntrySize implements bridge.Sink: body plus message attributes, as SNS
// counts them; when packing, body plus its newline (the attributes belong to
// the packed message).
func (s *Sink) EntrySize(e *bridge.Entry) int {
	if s.packed {
		return awsbatch.PackedEntrySize(e)
	}
	return awsbatch.EntrySize(e)
}

// Publish implements bridge.Sink with one PublishBatch call. Entry i has Id
// "i". Failed entries come back in a *bridge.PartialError (sender faults
// Permanent); a failed request is classified by awsbatch.RequestError.
//
// When packing, Publish packs the batch into at most 10 messages within the
// topic's MaximumMessageSize together (see awsbatch.PublishPacked) and
// publishes them with one PublishBatch call.
func (s *Sink) Publish(ctx context.Context, batch []*bridge.Entry) error {
	if len(batch) == 0 {
		return nil
	}
	if s.packed {
		return awsbatch.PublishPacked(ctx, Name, batch, s.msgCap, s.reqCap, s.sendPacked)
	}
	entries := make([]types.PublishBatchRequestEntry, len(batch))
	for i, e := range batch {
		entries[i] = types.PublishBatchRequestEntry{
			Id:                aws.String(awsbatch.EntryID(i)),
			Message:           aws.String(string(e.Body)),
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

// sendPacked publishes packed messages with one PublishBatch call.
func (s *Sink) sendPacked(ctx context.Context, msgs []awsbatch.PackedMessage) ([]string, []awsbatch.Failure, error) {
	entries := make([]types.PublishBatchRequestEntry, len(msgs))
	for i, m := range msgs {
		entries[i] = types.PublishBatchRequestEntry{
			Id:                aws.String(awsbatch.EntryID(i)),
			Message:           aws.String(string(m.Body)),
			MessageAttributes: toAttributes(m.Attrs),
		}
	}
	return s.send(ctx, entries)
}

// send makes one PublishBatch call and returns the ids that succeeded and the
// per-entry failures, or the classified error of the whole request.
func (s *Sink) send(ctx context.Context, entries []types.PublishBatchRequestEntry) ([]string, []awsbatch.Failure, error) {
	ctx, cancel := awsbatch.AttemptContext(ctx, s.opt.AttemptTimeout)
	defer cancel()
	out, err := s.opt.Client.PublishBatch(ctx, &sns.PublishBatchInput{
		TopicArn:                   aws.String(s.opt.TopicARN),
		PublishBatchRequestEntries: entries,
	}, oneAttempt)
	if err != nil {
		return nil, nil, awsbatch.RequestError(Name, "PublishBatch", err)
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

func oneAttempt(o *sns.Options) { o.Retryer = awsbatch.OneAttempt(o.Retryer) }

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

// Check implements bridge.Sink for `keyrelay check`: the topic exists and
// its attributes are readable (sns:GetTopicAttributes), and publishing is
// allowed. The latter is probed with an empty PublishBatch, which publishes
// nothing: SNS refuses it as an empty or invalid request when the caller may
// publish, and with AuthorizationError when it may not.
func (s *Sink) Check(ctx context.Context) error {
	if _, err := s.attributes(ctx); err != nil {
		return err
	}
	ctx, cancel := awsbatch.AttemptContext(ctx, s.opt.AttemptTimeout)
	defer cancel()
	_, err := s.opt.Client.PublishBatch(ctx, &sns.PublishBatchInput{
		TopicArn:                   aws.String(s.opt.TopicARN),
		PublishBatchRequestEntries: []types.PublishBatchRequestEntry{},
	})
	switch awsbatch.Code(err) {
	case "EmptyBatchRequest", "InvalidParameter", "ValidationError", "MissingParameter":
		return nil
	}
	if err == nil {
		return nil
	}
	return fmt.Errorf("sns: topic %s: probe PublishBatch: %w", s.opt.TopicARN,
		awsbatch.ExplainCheck(err, "sns:Publish", s.opt.TopicARN, notFound, isNotFound))
}

// Close implements bridge.Sink; the SDK client holds nothing to release.
func (s *Sink) Close(context.Context) error { return nil }
