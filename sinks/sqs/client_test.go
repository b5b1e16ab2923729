package sqs

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// TestTuneTwice: a client tuned twice (sqs.New given a TunedClient) works as
// one tuned once: one request, signed, without the removed headers.
func TestTuneTwice(t *testing.T) {
	var log []exchange
	once := recordingClient(true, 200, `{"Successful":[{"Id":"0"}]}`, &log)
	twice := awssqs.New(once.Options(), Tune)
	out, err := twice.SendMessageBatch(context.Background(), &awssqs.SendMessageBatchInput{
		QueueUrl: aws.String("http://sqs.test/000000000000/q"), Entries: []types.SendMessageBatchRequestEntry{entry("0", "a", nil)}})
	if err != nil || len(out.Successful) != 1 {
		t.Fatalf("SendMessageBatch: %v, %+v", err, out)
	}
	if len(log) != 1 {
		t.Fatalf("%d requests", len(log))
	}
	h := log[0].header
	if h.Get("Authorization") == "" || h.Get("Amz-Sdk-Invocation-Id") != "" {
		t.Errorf("headers %v", h)
	}
}
