package sqs

import (
	"context"
	"errors"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/sinks/awsbatch"
)

// Name is the sink's name in KEYRELAY_SINKS, logs and metrics.
const Name = "sqs"

// MaxBatchBytes is SendMessageBatch's limit on the sum of its messages'
// sizes (body plus attributes), whatever the queue's MaximumMessageSize; it
// is also the MaximumMessageSize of a queue that does not set it.
// https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessageBatch.html
const MaxBatchBytes = 1 << 20

// RequiredIAMActions are the IAM actions the sink needs on the queue:
// SendMessage (SendMessageBatch is authorized by it) and GetQueueAttributes
// (the queue's size limit, read in the background from start, and
// `keyrelay check`).
var RequiredIAMActions = []string{"sqs:SendMessage", "sqs:GetQueueAttributes"}

// API is the part of the SQS client the sink uses; *sqs.Client implements
// it.
type API interface {
	SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error)
	GetQueueAttributes(ctx context.Context, in *sqs.GetQueueAttributesInput, optFns ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
}

// Sink sends batches of records to one SQS queue: an awsbatch.Sink over
// SendMessageBatch. Safe for concurrent use.
type Sink struct{ *awsbatch.Sink }

var _ bridge.Sink = (*Sink)(nil)

// New returns a sink sending to the queue at queueURL (a URL ending in
// ".fifo" is a FIFO queue) through client, normally
// sqs.NewFromConfig(awsCfg). It does no I/O: the queue's MaximumMessageSize
// is read in the background (see awsbatch.Sink.Limits and Healthy).
func New(client API, queueURL string, opt awsbatch.Options) (*Sink, error) {
	if client == nil || queueURL == "" {
		return nil, errors.New("sqs: a client and a queue URL are required")
	}
	t := &transport{client: client, url: queueURL, attrs: awsbatch.NewAttributeMaps(attributeValue)}
	if c, ok := client.(*sqs.Client); ok {
		t.client = TunedClient(c) // one attempt per call already
	} else {
		t.send = []func(*sqs.Options){func(o *sqs.Options) { o.Retryer = awsbatch.OneAttempt(o.Retryer) }}
	}
	s, err := awsbatch.New(t, opt)
	if err != nil {
		return nil, err
	}
	return &Sink{s}, nil
}

// transport is awsbatch.Transport for one queue.
type transport struct {
	client API
	url    string
	send   []func(*sqs.Options) // SendMessageBatch's per-call options: one attempt, unless the client is tuned
	attrs  *awsbatch.AttributeMaps[types.MessageAttributeValue]
}

func (t *transport) Target() awsbatch.Target {
	return awsbatch.Target{
		Service: Name, Kind: "queue", ID: t.url, SendOp: "SendMessageBatch",
		SendAction: "sqs:SendMessage", ReadAction: "sqs:GetQueueAttributes",
		NotFound:   "the queue does not exist: check KEYRELAY_SQS_QUEUE_URL and AWS_REGION (the queue's region)",
		IsNotFound: isNotFound,
		// https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SetQueueAttributes.html
		DefaultMessageBytes: MaxBatchBytes,
		RequestBytes:        MaxBatchBytes,
	}
}

func isNotFound(err error) bool {
	var nq *types.QueueDoesNotExist
	return errors.As(err, &nq) || awsbatch.Code(err) == "NonExistentQueue"
}

func (t *transport) SendBatch(ctx context.Context, msgs []awsbatch.Message) ([]string, []awsbatch.Failure, error) {
	entries := awsbatch.Entries(msgs, t.attrs, func(id, body, group, dedup *string,
		attrs map[string]types.MessageAttributeValue) types.SendMessageBatchRequestEntry {
		return types.SendMessageBatchRequestEntry{Id: id, MessageBody: body, MessageAttributes: attrs,
			MessageGroupId: group, MessageDeduplicationId: dedup}
	})
	out, err := t.client.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(t.url), Entries: entries}, t.send...)
	if err != nil {
		return nil, nil, err
	}
	succeeded, failed := awsbatch.Results(out.Successful, out.Failed,
		func(r *types.SendMessageBatchResultEntry) *string { return r.Id },
		func(f *types.BatchResultErrorEntry) (id, code, msg *string, sender bool) {
			return f.Id, f.Code, f.Message, f.SenderFault
		})
	return succeeded, failed, nil
}

func attributeValue(dataType, value *string) types.MessageAttributeValue {
	return types.MessageAttributeValue{DataType: dataType, StringValue: value}
}

func (t *transport) Attributes(ctx context.Context) (map[string]string, error) {
	out, err := t.client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       aws.String(t.url),
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameMaximumMessageSize},
	})
	if err != nil {
		return nil, err
	}
	return out.Attributes, nil
}

// ProbeSend sends an empty SendMessageBatch: SQS answers EmptyBatchRequest
// to a caller allowed to send and AccessDenied to one that is not.
func (t *transport) ProbeSend(ctx context.Context) error {
	_, err := t.client.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{
		QueueUrl: aws.String(t.url),
		Entries:  []types.SendMessageBatchRequestEntry{},
	})
	if awsbatch.Code(err) == "EmptyBatchRequest" {
		return nil
	}
	return err
}
