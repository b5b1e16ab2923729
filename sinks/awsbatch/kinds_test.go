package awsbatch_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awssns "github.com/aws/aws-sdk-go-v2/service/sns"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/sinks/awsbatch"
	"github.com/keyrelay/keyrelay/sinks/awsbatch/awsbatchtest"
	"github.com/keyrelay/keyrelay/sinks/sns"
	"github.com/keyrelay/keyrelay/sinks/sqs"
)

// awsSink is what the sqs and sns sinks offer.
type awsSink interface {
	bridge.Sink
	Healthy() error
}

// clients reach one endpoint: fauxqs, or a fake server.
type clients struct {
	sqs *awssqs.Client
	sns *awssns.Client
}

// kind is one transport under test, with what the suite needs to run the
// same scenarios against it: on fauxqs, and on a fake server scripted with
// the service's real answers.
type kind struct {
	name                   string
	iam                    []string // RequiredIAMActions
	sendAction, readAction string
	envVar                 string // the variable a missing target's explanation names
	defaultMessageBytes    int    // MaximumMessageSize when the target does not set it

	newSink func(c clients, target string, opt awsbatch.Options) (awsSink, error)
	// create makes a target on fauxqs (FIFO when fifo, with queue
	// attributes attrs) and returns it and the queue that receives what is
	// sent to it.
	create func(t *testing.T, c clients, fifo bool, attrs map[string]string) (target, queueURL string)
	// missing returns a target of this kind, next to target, that does not
	// exist.
	missing func(target string) string

	proto        protocol
	defaultAttrs map[string]string // what the fake answers by default: a 256 KiB target
	fakeTarget   func(serverURL string) string
	errs         map[string]apiError // the service's real error answers, by situation
}

var kinds = []kind{
	{
		name: sqs.Name, iam: sqs.RequiredIAMActions, sendAction: "sqs:SendMessage", readAction: "sqs:GetQueueAttributes",
		envVar: "KEYRELAY_SQS_QUEUE_URL", defaultMessageBytes: 1 << 20,
		newSink: func(c clients, target string, opt awsbatch.Options) (awsSink, error) {
			s, err := sqs.New(c.sqs, target, opt)
			if err != nil {
				return nil, err
			}
			return s, nil
		},
		create: func(t *testing.T, c clients, fifo bool, attrs map[string]string) (string, string) {
			url, _ := awsbatchtest.CreateQueue(t, c.sqs, awsbatchtest.UniqueName("q", fifo), attrs)
			return url, url
		},
		missing:      func(url string) string { return url[:strings.LastIndex(url, "/")+1] + "no-such-queue" },
		proto:        sqsProtocol{},
		defaultAttrs: map[string]string{"MaximumMessageSize": "262144"},
		fakeTarget:   func(u string) string { return u + "/000000000000/q" },
		errs: map[string]apiError{
			"throttled":     {http.StatusForbidden, "RequestThrottled", "com.amazonaws.sqs#RequestThrottled", "Sender", "Request is throttled."},
			"kms throttled": {http.StatusBadRequest, "KMS.ThrottlingException", "com.amazonaws.sqs#KmsThrottled", "Sender", "Rate exceeded"},
			"internal":      {http.StatusInternalServerError, "InternalError", "InternalError", "Receiver", "We encountered an internal error."},
			"denied": {http.StatusBadRequest, "AccessDenied", "com.amazon.coral.service#AccessDeniedException", "Sender",
				"User is not authorized to perform: sqs:sendmessage"},
			"too long": {http.StatusBadRequest, "AWS.SimpleQueueService.BatchRequestTooLong", "com.amazonaws.sqs#BatchRequestTooLong", "Sender",
				"Batch requests cannot be longer than 1048576 bytes."},
			"missing": {http.StatusBadRequest, "AWS.SimpleQueueService.NonExistentQueue", "com.amazonaws.sqs#QueueDoesNotExist", "Sender",
				"The specified queue does not exist."},
			"empty": {http.StatusBadRequest, "AWS.SimpleQueueService.EmptyBatchRequest", "com.amazonaws.sqs#EmptyBatchRequest", "Sender",
				"There should be at least one SendMessageBatchRequestEntry in the request."},
		},
	},
	{
		name: sns.Name, iam: sns.RequiredIAMActions, sendAction: "sns:Publish", readAction: "sns:GetTopicAttributes",
		envVar: "KEYRELAY_SNS_TOPIC_ARN", defaultMessageBytes: sns.DefaultMaxMessageSize,
		newSink: func(c clients, target string, opt awsbatch.Options) (awsSink, error) {
			s, err := sns.New(c.sns, target, opt)
			if err != nil {
				return nil, err
			}
			return s, nil
		},
		create: func(t *testing.T, c clients, fifo bool, attrs map[string]string) (string, string) {
			if attrs != nil {
				t.Fatalf("no topic attributes on fauxqs: %v", attrs)
			}
			return awsbatchtest.CreateTopicToQueue(t, c.sqs, c.sns, awsbatchtest.UniqueName("t", fifo))
		},
		missing:      func(arn string) string { return arn[:strings.LastIndex(arn, ":")+1] + "no-such-topic" },
		proto:        snsProtocol{},
		defaultAttrs: map[string]string{"SubscriptionsConfirmed": "1"}, // no MaximumMessageSize: 256 KiB
		fakeTarget:   func(string) string { return "arn:aws:sns:us-east-1:000000000000:keyrelay" },
		errs: map[string]apiError{
			"throttled":  {Status: http.StatusTooManyRequests, Code: "Throttled", Fault: "Sender", Message: "Rate exceeded"},
			"throttling": {Status: http.StatusBadRequest, Code: "Throttling", Fault: "Sender", Message: "Rate exceeded"},
			"internal":   {Status: http.StatusInternalServerError, Code: "InternalError", Fault: "Receiver", Message: "internal error"},
			"denied": {Status: http.StatusForbidden, Code: "AuthorizationError", Fault: "Sender",
				Message: "User is not authorized to perform: SNS:Publish"},
			"too long": {Status: http.StatusBadRequest, Code: "BatchRequestTooLong", Fault: "Sender",
				Message: "The length of all the messages put together is more than the limit."},
			"missing": {Status: http.StatusNotFound, Code: "NotFound", Fault: "Sender", Message: "Topic does not exist"},
			"empty": {Status: http.StatusBadRequest, Code: "EmptyBatchRequest", Fault: "Sender",
				Message: "The batch request doesn't contain any entries."},
		},
	},
}

// forEachKind runs f as a subtest per kind.
func forEachKind(t *testing.T, f func(t *testing.T, k *kind)) {
	for i := range kinds {
		t.Run(kinds[i].name, func(t *testing.T) { f(t, &kinds[i]) })
	}
}

// open builds a sink of kind k and closes it when the test ends.
func (k *kind) open(t *testing.T, c clients, target string, opt awsbatch.Options) awsSink {
	t.Helper()
	s, err := k.newSink(c, target, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// startFake serves f in k's protocol and returns clients that reach it and
// the fake's target.
func (k *kind) startFake(t *testing.T, f *fakeServer) (clients, string) {
	t.Helper()
	f.proto, f.defaultAttrs = k.proto, k.defaultAttrs
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "")),
		config.WithBaseEndpoint(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	return clients{awssqs.NewFromConfig(cfg), awssns.NewFromConfig(cfg)}, k.fakeTarget(srv.URL)
}

// attrsError answers every attribute read with e.
func attrsError(e apiError) func(int) (map[string]string, *apiError) {
	return func(int) (map[string]string, *apiError) { return nil, &e }
}

// attrsSize answers every attribute read with a MaximumMessageSize of n.
func attrsSize(n string) func(int) (map[string]string, *apiError) {
	return func(int) (map[string]string, *apiError) { return map[string]string{"MaximumMessageSize": n}, nil }
}
