package sns

import (
	"context"
	"errors"

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
// limit, read in the background from start, and `keyrelay check`).
var RequiredIAMActions = []string{"sns:Publish", "sns:GetTopicAttributes"}

// API is the part of the SNS client the sink uses; *sns.Client implements
// it.
type API interface {
	PublishBatch(ctx context.Context, in *sns.PublishBatchInput, optFns ...func(*sns.Options)) (*sns.PublishBatchOutput, error)
	GetTopicAttributes(ctx context.Context, in *sns.GetTopicAttributesInput, optFns ...func(*sns.Options)) (*sns.GetTopicAttributesOutput, error)
}

// Sink publishes batches of records to one SNS topic: an awsbatch.Sink over
// PublishBatch. Safe for concurrent use.
type Sink struct{ *awsbatch.Sink }

var _ bridge.Sink = (*Sink)(nil)

// New returns a sink publishing to the topic topicARN (an ARN ending in
// ".fifo" is a FIFO topic) through client, normally
// sns.NewFromConfig(awsCfg), which it tunes (Tune). It does no I/O: the topic's MaximumMessageSize
// is read in the background (see awsbatch.Sink.Limits and Healthy).
func New(client API, topicARN string, opt awsbatch.Options) (*Sink, error) {
	if client == nil || topicARN == "" {
		return nil, errors.New("sns: a client and a topic ARN are required")
	}
	t := &transport{client: client, arn: topicARN, attrs: awsbatch.NewAttributeMaps(attributeValue)}
	if c, ok := client.(*sns.Client); ok {
		t.client = TunedClient(c) // one attempt per call already
	} else {
		t.send = []func(*sns.Options){func(o *sns.Options) { o.Retryer = awsbatch.OneAttempt(o.Retryer) }}
	}
	s, err := awsbatch.New(t, opt)
	if err != nil {
		return nil, err
	}
	return &Sink{s}, nil
}

// transport is awsbatch.Transport for one topic.
type transport struct {
	client API
	arn    string
	send   []func(*sns.Options) // PublishBatch's per-call options: one attempt, unless the client is tuned
	attrs  *awsbatch.AttributeMaps[types.MessageAttributeValue]
}

func (t *transport) Target() awsbatch.Target {
	return awsbatch.Target{
		Service: Name, Kind: "topic", ID: t.arn, SendOp: "PublishBatch",
		SendAction: "sns:Publish", ReadAction: "sns:GetTopicAttributes",
		NotFound:   "the topic does not exist: check KEYRELAY_SNS_TOPIC_ARN and AWS_REGION (the topic's region)",
		IsNotFound: isNotFound,
		// The topic's limit holds for each message and for the whole batch.
		DefaultMessageBytes: DefaultMaxMessageSize,
	}
}

func isNotFound(err error) bool {
	var nf *types.NotFoundException
	return errors.As(err, &nf) || awsbatch.Code(err) == "NotFound"
}

func (t *transport) SendBatch(ctx context.Context, msgs []awsbatch.Message) ([]string, []awsbatch.Failure, error) {
	entries := awsbatch.Entries(msgs, t.attrs, func(id, body, group, dedup *string,
		attrs map[string]types.MessageAttributeValue) types.PublishBatchRequestEntry {
		return types.PublishBatchRequestEntry{Id: id, Message: body, MessageAttributes: attrs,
			MessageGroupId: group, MessageDeduplicationId: dedup}
	})
	out, err := t.client.PublishBatch(ctx, &sns.PublishBatchInput{TopicArn: aws.String(t.arn), PublishBatchRequestEntries: entries}, t.send...)
	if err != nil {
		return nil, nil, err
	}
	succeeded, failed := awsbatch.Results(out.Successful, out.Failed,
		func(r *types.PublishBatchResultEntry) *string { return r.Id },
		func(f *types.BatchResultErrorEntry) (id, code, msg *string, sender bool) {
			return f.Id, f.Code, f.Message, f.SenderFault
		})
	return succeeded, failed, nil
}

func attributeValue(dataType, value *string) types.MessageAttributeValue {
	return types.MessageAttributeValue{DataType: dataType, StringValue: value}
}

func (t *transport) Attributes(ctx context.Context) (map[string]string, error) {
	out, err := t.client.GetTopicAttributes(ctx, &sns.GetTopicAttributesInput{TopicArn: aws.String(t.arn)})
	if err != nil {
		return nil, err
	}
	return out.Attributes, nil
}

// ProbeSend publishes an empty PublishBatch: SNS refuses it as an empty or
// invalid request when the caller may publish, and with AuthorizationError
// when it may not.
func (t *transport) ProbeSend(ctx context.Context) error {
	_, err := t.client.PublishBatch(ctx, &sns.PublishBatchInput{
		TopicArn:                   aws.String(t.arn),
		PublishBatchRequestEntries: []types.PublishBatchRequestEntry{},
	})
	switch awsbatch.Code(err) {
	case "EmptyBatchRequest", "InvalidParameter", "ValidationError", "MissingParameter":
		return nil
	}
	return err
}
