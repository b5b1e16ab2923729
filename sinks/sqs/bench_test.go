package sqs_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/sinks/awsbatch"
	"github.com/keyrelay/keyrelay/sinks/sqs"
)

// benchBatch returns a batch of n typical records (a set event, a ~20-byte
// key): bodies of about 200 bytes.
func benchBatch(n int) []*bridge.Entry {
	ids, now := bridge.NewIDGenerator(), time.Now()
	out := make([]*bridge.Entry, n)
	for i := range out {
		rec := bridge.Record{Type: bridge.TypeKeyEvent, ID: ids.New(now), Time: now,
			Source: "my-cache.abc123.ng.0001.use1.cache.amazonaws.com:6379", Event: "set",
			Key: "session:" + strconv.Itoa(100000000000+i)}
		out[i] = &bridge.Entry{Record: rec, Body: rec.AppendJSON(nil)}
	}
	return out
}

// batchResponse is SendMessageBatch's answer accepting every entry of batch
// (Ids "0".."n-1"), with the MD5 of each body as SQS computes it.
func batchResponse(batch []*bridge.Entry) []byte {
	var b strings.Builder
	b.WriteString(`{"Successful":[`)
	for i, e := range batch {
		if i > 0 {
			b.WriteByte(',')
		}
		sum := md5.Sum(e.Body)
		fmt.Fprintf(&b, `{"Id":"%d","MessageId":"6c5a3b1e-0000-4000-8000-%012d","MD5OfMessageBody":"%s","MD5OfMessageAttributes":"00000000000000000000000000000000"}`,
			i, i, hex.EncodeToString(sum[:]))
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// cannedSQS is an httptest server speaking SQS's JSON protocol: it answers
// GetQueueAttributes with a 256 KiB MaximumMessageSize and every
// SendMessageBatch with resp, reading (not parsing) the request, so that
// the benchmark's CPU is mostly the client's.
func cannedSQS(tb testing.TB, resp []byte) *httptest.Server {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		if r.Header.Get("X-Amz-Target") == "AmazonSQS.GetQueueAttributes" {
			_, _ = io.WriteString(w, `{"Attributes":{"MaximumMessageSize":"262144"}}`)
			return
		}
		_, _ = w.Write(resp)
	}))
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	tb.Cleanup(srv.Close)
	return srv
}

// daemonClient builds an SQS client the way cmd/keyrelay does (the SDK's
// standard chain, a buildable HTTP client), pointed at endpoint with static
// credentials: requests are signed with SigV4 as in production.
func daemonClient(tb testing.TB, endpoint string) *awssqs.Client {
	httpClient := awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.MaxIdleConnsPerHost = max(t.MaxIdleConnsPerHost, awsbatch.DefaultMaxInFlight)
	})
	cfg, err := awsconfig.LoadDefaultConfig(context.Background(), awsconfig.WithHTTPClient(httpClient),
		awsconfig.WithRegion("us-east-1"), awsconfig.WithBaseEndpoint(endpoint),
		awsconfig.WithCredentialsProvider(aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "secret", CanExpire: false}, nil
		})))
	if err != nil {
		tb.Fatal(err)
	}
	return awssqs.NewFromConfig(cfg)
}

// cpuTime is the process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchPublish publishes batch through s b.N times, one Publish at a time,
// and reports the process's CPU time per record (cpu-us/event).
func benchPublish(b *testing.B, s bridge.Sink, batch []*bridge.Entry) {
	ctx := context.Background()
	if err := s.Publish(ctx, batch); err != nil { // connection and limits warmed up
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	for range b.N {
		if err := s.Publish(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/float64(b.N*len(batch)), "cpu-us/event")
}

// BenchmarkPublishCanned is the SQS sink's cost per SendMessageBatch of 10
// records of ~200 bytes, unpacked, through the AWS SDK as the daemon builds
// it, against an in-process server answering canned SendMessageBatch JSON.
// cpu-us/event includes the server's share (reading the request, writing
// the answer, net/http on both ends); allocs/op and B/op count both ends.
// BenchmarkPublishFauxqs (-tags integration) measures the client alone.
func BenchmarkPublishCanned(b *testing.B) {
	batch := benchBatch(awsbatch.MaxBatchEntries)
	srv := cannedSQS(b, batchResponse(batch))
	s, err := sqs.New(daemonClient(b, srv.URL), srv.URL+"/000000000000/bench", awsbatch.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(context.Background())
	s.Limits()
	conns.Store(0)
	benchPublish(b, s, batch)
	b.ReportMetric(float64(conns.Load()), "conns")
}

// conns counts the connections cannedSQS accepted.
var conns atomic.Int64
