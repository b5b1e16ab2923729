package sqs_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/sinks/awsbatch"
	"github.com/keyrelay/keyrelay/sinks/awsbatch/awsbatchtest"
	"github.com/keyrelay/keyrelay/sinks/sqs"
)

// benchBatch returns a batch of n typical records (a set event, a ~20-byte
// key): bodies of about 200 bytes.
func benchBatch(n int) []*bridge.Entry { return awsbatchtest.TypicalEntries(n, "session:") }

// daemonClient builds an SQS client the way cmd/keyrelay does (the SDK's
// standard chain, a buildable HTTP client), pointed at endpoint with static
// credentials: requests are signed with SigV4 as in production.
func daemonClient(tb testing.TB, endpoint string) *awssqs.Client {
	return daemonClientVia(tb, endpoint, nil)
}

// daemonClientVia is daemonClient with its HTTP client wrapped by wrap
// (nil: not wrapped). It counts the connections it dials in dials.
func daemonClientVia(tb testing.TB, endpoint string, wrap func(awssqs.HTTPClient) awssqs.HTTPClient) *awssqs.Client {
	httpClient := awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.MaxIdleConnsPerHost = max(t.MaxIdleConnsPerHost, awsbatch.DefaultMaxInFlight)
		t.DialContext = countDials(t.DialContext)
	})
	cfg, err := awsconfig.LoadDefaultConfig(context.Background(), awsconfig.WithHTTPClient(httpClient),
		awsconfig.WithRegion("us-east-1"), awsconfig.WithBaseEndpoint(endpoint),
		awsconfig.WithCredentialsProvider(aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "secret", CanExpire: false}, nil
		})))
	if err != nil {
		tb.Fatal(err)
	}
	return awssqs.NewFromConfig(cfg, func(o *awssqs.Options) {
		if wrap != nil {
			o.HTTPClient = wrap(o.HTTPClient)
		}
	})
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

// dials counts the connections countDials dialled.
var dials atomic.Int64

func countDials(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return dial(ctx, network, addr)
	}
}

// BenchmarkSendMessageBatch is keyrelay's CPU per SendMessageBatch of 10
// records of ~200 bytes, unpacked, against cannedSQS in another process,
// so that the process's CPU time (cpu-us/event, per record) and allocs/op
// are the client's alone:
//
//   - sink: the sqs sink's Publish through the AWS SDK client built as
//     cmd/keyrelay builds it (sqs.New tunes it): what the daemon spends per
//     request, apart from the bridge.
//   - nethttp-signed: the floor with SigV4: the request body the SDK sent,
//     signed per request with the SDK's v4 signer and sent through
//     net/http with the sink's transport settings, the answer read but not
//     parsed.
//   - nethttp: the same without signing (the first request's headers
//     replayed): net/http's own cost.
//   - conn: the same request written on a TCP connection and its answer
//     read with http.ReadResponse, in one goroutine: the syscalls and
//     little else, the ceiling of any HTTP/1.1 client.
//
// Each runs with 1 and with 4 (the default KEYRELAY_SINK_MAX_IN_FLIGHT)
// requests in flight. conns is the number of connections dialled while
// timed: none per request (at most the requests in flight, once).
func BenchmarkSendMessageBatch(b *testing.B) {
	url := startServer(b)
	batch := benchBatch(awsbatch.MaxBatchEntries)
	queue := url + "/000000000000/bench"

	// The SDK's request, as the sink sends it, for the floors.
	var req *http.Request
	var body []byte
	capture := func(next awssqs.HTTPClient) awssqs.HTTPClient {
		return doFunc(func(r *http.Request) (*http.Response, error) {
			if req == nil && r.Header.Get("X-Amz-Target") == "AmazonSQS.SendMessageBatch" {
				var err error
				if body, err = io.ReadAll(r.Body); err != nil {
					return nil, err
				}
				req = r.Clone(r.Context())
				r.Body = io.NopCloser(bytes.NewReader(body))
			}
			return next.Do(r)
		})
	}
	s, err := sqs.New(daemonClientVia(b, url, capture), queue, awsbatch.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(context.Background())
	s.Limits()
	if err := s.Publish(context.Background(), batch); err != nil {
		b.Fatal(err)
	}
	if req == nil {
		b.Fatal("no SendMessageBatch request captured")
	}

	for _, inFlight := range []int{1, awsbatch.DefaultMaxInFlight} {
		b.Run(fmt.Sprintf("in-flight=%d", inFlight), func(b *testing.B) { benchSendMessageBatch(b, url, queue, batch, req, body, inFlight) })
	}
}

func benchSendMessageBatch(b *testing.B, url, queue string, batch []*bridge.Entry, req *http.Request, body []byte, inFlight int) {
	b.Run("sink", func(b *testing.B) {
		s, err := sqs.New(daemonClient(b, url), queue, awsbatch.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close(context.Background())
		s.Limits()
		ctx := context.Background()
		benchRequests(b, len(batch), inFlight, func() error { return s.Publish(ctx, batch) })
	})

	floorClient := &http.Client{Transport: floorTransport()}
	send := func(ctx context.Context, sign func(*http.Request) error) error {
		r, err := http.NewRequestWithContext(ctx, http.MethodPost, req.URL.String(), bytes.NewReader(body))
		if err != nil {
			return err
		}
		r.Header = req.Header.Clone()
		if err := sign(r); err != nil {
			return err
		}
		resp, err := floorClient.Do(r)
		if err != nil {
			return err
		}
		return readOK(resp)
	}
	b.Run("nethttp-signed", func(b *testing.B) {
		signer := v4.NewSigner()
		creds := aws.Credentials{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "secret"}
		ctx := context.Background()
		benchRequests(b, len(batch), inFlight, func() error {
			return send(ctx, func(r *http.Request) error {
				r.Header.Del("Authorization")
				r.Header.Del("X-Amz-Date")
				sum := sha256.Sum256(body)
				return signer.SignHTTP(ctx, creds, r, hex.EncodeToString(sum[:]), "sqs", "us-east-1", time.Now())
			})
		})
	})
	b.Run("nethttp", func(b *testing.B) {
		ctx := context.Background()
		benchRequests(b, len(batch), inFlight, func() error {
			return send(ctx, func(*http.Request) error { return nil })
		})
	})
	b.Run("conn", func(b *testing.B) {
		var raw bytes.Buffer
		r := req.Clone(context.Background())
		r.Body = io.NopCloser(bytes.NewReader(body))
		if err := r.Write(&raw); err != nil {
			b.Fatal(err)
		}
		type connReader struct {
			net.Conn
			rd *bufio.Reader
		}
		conns := make(chan connReader, inFlight)
		for range inFlight {
			conn, err := net.Dial("tcp", req.URL.Host)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			conns <- connReader{conn, bufio.NewReader(conn)}
		}
		benchRequests(b, len(batch), inFlight, func() error {
			c := <-conns
			defer func() { conns <- c }()
			if _, err := c.Write(raw.Bytes()); err != nil {
				return err
			}
			resp, err := http.ReadResponse(c.rd, nil)
			if err != nil {
				return err
			}
			return readOK(resp)
		})
	})
}

// benchRequests calls request b.N times, inFlight calls at a time, after
// one call that warms the connection up, and reports the process's CPU time
// per record (cpu-us/event, records records per request) and the
// connections dialled meanwhile (conns).
func benchRequests(b *testing.B, records, inFlight int, request func() error) {
	if err := request(); err != nil {
		b.Fatal(err)
	}
	dialled := dials.Load()
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, inFlight)
	for range inFlight {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := request(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64((cpuTime()-cpu).Nanoseconds())/1e3/float64(b.N*records), "cpu-us/event")
	b.ReportMetric(float64(dials.Load()-dialled), "conns")
}

// floorTransport is the transport of the floors: the SDK's default, as
// cmd/keyrelay configures it and sqs.Tune tunes it (awsbatch.TuneTransport).
func floorTransport() *http.Transport {
	return awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.MaxIdleConnsPerHost = max(t.MaxIdleConnsPerHost, awsbatch.DefaultMaxInFlight)
		t.DialContext = countDials(t.DialContext)
	}, awsbatch.TuneTransport).GetTransport()
}

// doFunc is an HTTP client made of a function.
type doFunc func(*http.Request) (*http.Response, error)

func (f doFunc) Do(r *http.Request) (*http.Response, error) { return f(r) }

// readOK reads resp to its end and closes it; an answer other than 200 OK
// is an error.
func readOK(resp *http.Response) error {
	_, err := io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	return err
}
