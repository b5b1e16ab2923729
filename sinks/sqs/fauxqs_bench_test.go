//go:build integration

package sqs_test

import (
	"context"
	"testing"

	"github.com/keyrelay/keyrelay/bridge/bridgetest"
	"github.com/keyrelay/keyrelay/sinks/awsbatch"
	"github.com/keyrelay/keyrelay/sinks/awsbatch/awsbatchtest"
	"github.com/keyrelay/keyrelay/sinks/sqs"
)

// BenchmarkPublishFauxqs is BenchmarkSendMessageBatch/in-flight=1/sink
// against fauxqs: cpu-us/event is keyrelay's side alone (the SDK, net/http,
// the sink), allocs/op the client's.
func BenchmarkPublishFauxqs(b *testing.B) {
	bridgetest.StartFauxqs(b)
	client, _ := awsbatchtest.Clients(b)
	url, _ := awsbatchtest.CreateQueue(b, client, awsbatchtest.UniqueName("bench", false), nil)
	s, err := sqs.New(client, url, awsbatch.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(context.Background())
	s.Limits()
	benchPublish(b, s, benchBatch(awsbatch.MaxBatchEntries))
}
