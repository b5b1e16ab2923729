// Package awsbatchtest holds test helpers for the SQS and SNS sinks against
// the fauxqs emulator (bridgetest.StartFauxqs): clients from the SDK's
// standard configuration chain, queues and topics to publish to, and a reader
// that drains a queue and keeps every message it received.
package awsbatchtest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// Clients returns SQS and SNS clients built by the SDK's standard chain, as
// keyrelay builds them; after bridgetest.StartFauxqs they reach the emulator.
func Clients(t testing.TB) (*sqs.Client, *sns.Client) {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background())
	if err != nil {
		t.Fatalf("aws config: %v", err)
	}
	return sqs.NewFromConfig(cfg), sns.NewFromConfig(cfg)
}

var seq atomic.Int64

// UniqueName returns a queue or topic name unique in this process, with a
// ".fifo" suffix when fifo is set.
func UniqueName(prefix string, fifo bool) string {
	name := fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano()%1e6, seq.Add(1))
	if fifo {
		name += ".fifo"
	}
	return name
}

// CreateQueue creates a queue (FIFO when name ends in ".fifo") with the extra
// attributes and returns its URL and ARN.
func CreateQueue(t testing.TB, c *sqs.Client, name string, attrs map[string]string) (url, arn string) {
	t.Helper()
	ctx := context.Background()
	all := map[string]string{}
	for k, v := range attrs {
		all[k] = v
	}
	if strings.HasSuffix(name, ".fifo") {
		all["FifoQueue"] = "true"
	}
	out, err := c.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: all})
	if err != nil {
		t.Fatalf("create queue %s: %v", name, err)
	}
	a, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: out.QueueUrl,
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn}})
	if err != nil {
		t.Fatalf("queue %s arn: %v", name, err)
	}
	return aws.ToString(out.QueueUrl), a.Attributes["QueueArn"]
}

// CreateTopicToQueue creates a topic (FIFO when name ends in ".fifo") and a
// queue of the same kind subscribed to it with raw message delivery, so the
// queue receives each published message's body and attributes unchanged. It
// returns the topic ARN and the queue URL.
func CreateTopicToQueue(t testing.TB, sqsc *sqs.Client, snsc *sns.Client, name string) (topicARN, queueURL string) {
	t.Helper()
	ctx := context.Background()
	attrs := map[string]string{}
	if strings.HasSuffix(name, ".fifo") {
		attrs["FifoTopic"] = "true"
	}
	top, err := snsc.CreateTopic(ctx, &sns.CreateTopicInput{Name: aws.String(name), Attributes: attrs})
	if err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
	qname := "sub-" + name
	qurl, qarn := CreateQueue(t, sqsc, qname, nil)
	if _, err := snsc.Subscribe(ctx, &sns.SubscribeInput{
		TopicArn: top.TopicArn, Protocol: aws.String("sqs"), Endpoint: aws.String(qarn),
		Attributes: map[string]string{"RawMessageDelivery": "true"},
	}); err != nil {
		t.Fatalf("subscribe %s to %s: %v", qname, name, err)
	}
	return aws.ToString(top.TopicArn), qurl
}

// Message is one received message.
type Message struct {
	Body       string
	Attributes map[string]sqstypes.MessageAttributeValue
	GroupID    string
}

// Reader drains a queue, deleting what it receives, and keeps every message
// in arrival order. Safe for concurrent use.
type Reader struct {
	t      testing.TB
	client *sqs.Client
	url    string

	mu   sync.Mutex
	msgs []Message
}

// NewReader returns a reader of the queue at url.
func NewReader(t testing.TB, c *sqs.Client, url string) *Reader {
	return &Reader{t: t, client: c, url: url}
}

// Poll receives until the queue answers empty and returns every message
// received so far.
func (r *Reader) Poll() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		// A short visibility timeout: should a response be lost on the way
		// (a connection cut under load, answered by an SDK retry), its
		// messages come back in seconds rather than the queue's 30.
		out, err := r.client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(r.url), MaxNumberOfMessages: 10, WaitTimeSeconds: 0, VisibilityTimeout: 2,
			MessageAttributeNames:       []string{"All"},
			MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameMessageGroupId},
		})
		if err != nil {
			r.t.Errorf("receive from %s: %v", r.url, err)
			break
		}
		if len(out.Messages) == 0 {
			break
		}
		var del []sqstypes.DeleteMessageBatchRequestEntry
		for i, m := range out.Messages {
			r.msgs = append(r.msgs, Message{Body: aws.ToString(m.Body), Attributes: m.MessageAttributes,
				GroupID: m.Attributes[string(sqstypes.MessageSystemAttributeNameMessageGroupId)]})
			del = append(del, sqstypes.DeleteMessageBatchRequestEntry{Id: aws.String(fmt.Sprint(i)), ReceiptHandle: m.ReceiptHandle})
		}
		if _, err := r.client.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(r.url), Entries: del}); err != nil {
			r.t.Errorf("delete from %s: %v", r.url, err)
			break
		}
	}
	return append([]Message(nil), r.msgs...)
}

// Bodies polls and returns every body received so far, for
// bridgetest.RunSinkContract's readBack.
func (r *Reader) Bodies() [][]byte {
	msgs := r.Poll()
	out := make([][]byte, len(msgs))
	for i, m := range msgs {
		out[i] = []byte(m.Body)
	}
	return out
}

// Wait polls until at least n messages arrived or timeout passes, then polls
// once more after a short pause (to see late duplicates) and returns them all.
func (r *Reader) Wait(n int, timeout time.Duration) []Message {
	deadline := time.Now().Add(timeout)
	for len(r.Poll()) < n && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	return r.Poll()
}
