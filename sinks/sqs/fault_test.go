package sqs_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/sinks/awsbatch/awsbatchtest"
	"github.com/keyrelay/keyrelay/sinks/sqs"
)

// sentEntry is one SendMessageBatch entry as the server received it.
type sentEntry struct {
	ID                string `json:"Id"`
	MessageBody       string
	MessageAttributes map[string]struct{ DataType, StringValue string }
}

// responder answers the n-th SendMessageBatch request (0-based).
type responder func(n int, entries []sentEntry, w http.ResponseWriter, r *http.Request)

// fakeSQS speaks the SQS wire protocol the SDK uses (AWS JSON 1.0 with the
// query-compatible error header) and records every SendMessageBatch request.
type fakeSQS struct {
	mu       sync.Mutex
	requests [][]sentEntry
	respond  responder
	getAttrs http.HandlerFunc // nil: a 256 KiB queue
}

func (f *fakeSQS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	switch r.Header.Get("X-Amz-Target") {
	case "AmazonSQS.GetQueueAttributes":
		if f.getAttrs != nil {
			f.getAttrs(w, r)
			return
		}
		fmt.Fprint(w, `{"Attributes":{"MaximumMessageSize":"262144"}}`)
	case "AmazonSQS.SendMessageBatch":
		var in struct {
			QueueUrl string
			Entries  []sentEntry
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		n := len(f.requests)
		f.requests = append(f.requests, in.Entries)
		f.mu.Unlock()
		f.respond(n, in.Entries, w, r)
	default:
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"__type":"com.amazonaws.sqs#UnsupportedOperation","message":"%s"}`, r.Header.Get("X-Amz-Target"))
	}
}

func (f *fakeSQS) bodies() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([][]string, len(f.requests))
	for i, req := range f.requests {
		for _, e := range req {
			out[i] = append(out[i], e.MessageBody)
		}
	}
	return out
}

type failure struct {
	ID          string `json:"Id"`
	SenderFault bool
	Code        string
	Message     string
}

// batchResponse answers 200 with every entry successful except failed.
func batchResponse(w http.ResponseWriter, entries []sentEntry, failed ...failure) {
	type success struct {
		ID               string `json:"Id"`
		MessageId        string
		MD5OfMessageBody string
	}
	out := struct {
		Successful []success
		Failed     []failure
	}{Successful: []success{}, Failed: failed}
	for _, e := range entries {
		if slices.ContainsFunc(failed, func(f failure) bool { return f.ID == e.ID }) {
			continue
		}
		sum := md5.Sum([]byte(e.MessageBody)) // the SDK checks it
		out.Successful = append(out.Successful, success{e.ID, "msg-" + e.ID, hex.EncodeToString(sum[:])})
	}
	_ = json.NewEncoder(w).Encode(out)
}

// apiError answers with an SQS error as the service sends it.
func apiError(w http.ResponseWriter, status int, typ, queryCode, fault, msg string) {
	w.Header().Set("x-amzn-query-error", queryCode+";"+fault)
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"__type":%q,"message":%q}`, typ, msg)
}

func newFaultSink(t *testing.T, respond responder, attemptTimeout time.Duration) (*sqs.Sink, *fakeSQS) {
	t.Helper()
	fake := &fakeSQS{respond: respond}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "")),
		config.WithBaseEndpoint(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	s, err := sqs.New(context.Background(), sqs.Options{
		Client:         awssqs.NewFromConfig(cfg),
		QueueURL:       srv.URL + "/000000000000/q",
		MaxInFlight:    1,
		AttemptTimeout: attemptTimeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, fake
}

// TestFaults drives the sink through a bridge.Relay against a server that
// fails in scripted ways, and asserts exactly which entries are sent again:
// only the ones that failed retryably, unchanged; never an accepted one; a
// refused one is counted, not resent. Exactly two requests in the retried
// cases also proves that the SDK does not retry on its own.
func TestFaults(t *testing.T) {
	recs := awsbatchtest.Records(10)
	body := func(i int) string { return awsbatchtest.Body(recs[i]) }
	all := make([]string, len(recs))
	for i := range recs {
		all[i] = body(i)
	}
	ok := func(_ int, entries []sentEntry, w http.ResponseWriter, _ *http.Request) { batchResponse(w, entries) }
	firstThen := func(first responder) responder {
		return func(n int, entries []sentEntry, w http.ResponseWriter, r *http.Request) {
			if n == 0 {
				first(n, entries, w, r)
				return
			}
			ok(n, entries, w, r)
		}
	}

	tests := []struct {
		name      string
		respond   responder
		wantSent  [][]string // bodies of each request, in order
		delivered float64
		rejected  float64
		retried   float64
	}{
		{
			name: "partial: retryable and sender-fault entries",
			respond: firstThen(func(_ int, entries []sentEntry, w http.ResponseWriter, _ *http.Request) {
				batchResponse(w, entries,
					failure{"3", false, "InternalError", "internal error"},
					failure{"6", true, "InvalidMessageContents", "invalid characters"},
					failure{"9", true, "KmsThrottled", "KMS is throttling"}) // target-side: retried
			}),
			wantSent:  [][]string{all, {body(3), body(9)}},
			delivered: 10 - 1, rejected: 1, retried: 2,
		},
		{
			name: "throttled batch",
			respond: firstThen(func(_ int, _ []sentEntry, w http.ResponseWriter, _ *http.Request) {
				apiError(w, http.StatusForbidden, "com.amazonaws.sqs#RequestThrottled", "RequestThrottled", "Sender", "Request is throttled.")
			}),
			wantSent:  [][]string{all, all},
			delivered: 10, retried: 10,
		},
		{
			name: "KMS throttled batch",
			respond: firstThen(func(_ int, _ []sentEntry, w http.ResponseWriter, _ *http.Request) {
				apiError(w, http.StatusBadRequest, "com.amazonaws.sqs#KmsThrottled", "KMS.ThrottlingException", "Sender", "Rate exceeded")
			}),
			wantSent:  [][]string{all, all},
			delivered: 10, retried: 10,
		},
		{
			name: "5xx",
			respond: firstThen(func(_ int, _ []sentEntry, w http.ResponseWriter, _ *http.Request) {
				apiError(w, http.StatusInternalServerError, "InternalError", "InternalError", "Receiver", "We encountered an internal error.")
			}),
			wantSent:  [][]string{all, all},
			delivered: 10, retried: 10,
		},
		{
			name: "timeout",
			respond: firstThen(func(_ int, _ []sentEntry, w http.ResponseWriter, r *http.Request) {
				select { // hang past the attempt timeout
				case <-r.Context().Done():
				case <-time.After(10 * time.Second):
				}
			}),
			wantSent:  [][]string{all, all},
			delivered: 10, retried: 10,
		},
		{
			name: "access denied is retried: the operator can fix it",
			respond: firstThen(func(_ int, _ []sentEntry, w http.ResponseWriter, _ *http.Request) {
				apiError(w, http.StatusBadRequest, "com.amazon.coral.service#AccessDeniedException", "AccessDenied", "Sender", "not authorized to perform: sqs:sendmessage")
			}),
			wantSent:  [][]string{all, all},
			delivered: 10, retried: 10,
		},
		{
			name: "malformed request is rejected, not resent for ever",
			respond: firstThen(func(_ int, _ []sentEntry, w http.ResponseWriter, _ *http.Request) {
				apiError(w, http.StatusBadRequest, "com.amazonaws.sqs#BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong", "Sender", "Batch requests cannot be longer than 1048576 bytes.")
			}),
			wantSent: [][]string{all},
			rejected: 10,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, fake := newFaultSink(t, tc.respond, 300*time.Millisecond)
			m := awsbatchtest.Deliver(t, s, recs)

			sent := fake.bodies()
			if fmt.Sprint(sent) != fmt.Sprint(tc.wantSent) {
				t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(flat(sent), "\n"), strings.Join(flat(tc.wantSent), "\n"))
			}
			// Ids are the index in each request; attributes travel unchanged.
			fake.mu.Lock()
			for _, req := range fake.requests {
				for i, e := range req {
					if e.ID != fmt.Sprint(i) {
						t.Errorf("entry %d has Id %q", i, e.ID)
					}
					if a := e.MessageAttributes["type"]; a.DataType != "String" || a.StringValue != "keyevent" {
						t.Errorf("entry %d: type attribute %+v", i, a)
					}
					if a := e.MessageAttributes["event"]; a.DataType != "String" || a.StringValue != "expired" {
						t.Errorf("entry %d: event attribute %+v", i, a)
					}
					if a := e.MessageAttributes["db"]; a.DataType != "Number" || (a.StringValue != "0" && a.StringValue != "1") {
						t.Errorf("entry %d: db attribute %+v", i, a)
					}
				}
			}
			fake.mu.Unlock()

			metric := func(c float64, name string, want float64) {
				if c != want {
					t.Errorf("%s = %v, want %v", name, c, want)
				}
			}
			metric(testutil.ToFloat64(m.Delivered.WithLabelValues(sqs.Name)), "delivered", tc.delivered)
			metric(testutil.ToFloat64(m.Rejected.WithLabelValues(sqs.Name, "refused")), "rejected", tc.rejected)
			metric(testutil.ToFloat64(m.Retried.WithLabelValues(sqs.Name)), "retried", tc.retried)
			metric(testutil.ToFloat64(m.Dropped.WithLabelValues(sqs.Name, bridge.GapShutdown)), "dropped", 0)
		})
	}
}

func flat(reqs [][]string) []string {
	var out []string
	for i, r := range reqs {
		out = append(out, fmt.Sprintf("request %d:", i))
		for _, b := range r {
			out = append(out, "  "+b)
		}
	}
	return out
}

// TestCheckExplains shows that missing permissions are reported by IAM action
// and a missing queue by the variable to fix.
func TestCheckExplains(t *testing.T) {
	denied := func(w http.ResponseWriter, _ *http.Request) {
		apiError(w, http.StatusBadRequest, "com.amazon.coral.service#AccessDeniedException", "AccessDenied", "Sender", "User is not authorized")
	}
	newClient := func(f *fakeSQS) (*awssqs.Client, string) {
		srv := httptest.NewServer(f)
		t.Cleanup(srv.Close)
		cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion("us-east-1"),
			config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "")),
			config.WithBaseEndpoint(srv.URL))
		if err != nil {
			t.Fatal(err)
		}
		return awssqs.NewFromConfig(cfg), srv.URL + "/000000000000/q"
	}
	ctx := context.Background()

	c, url := newClient(&fakeSQS{getAttrs: denied})
	_, err := sqs.New(ctx, sqs.Options{Client: c, QueueURL: url})
	if err == nil || !strings.Contains(err.Error(), "allow sqs:GetQueueAttributes on "+url) {
		t.Errorf("New without sqs:GetQueueAttributes = %v", err)
	}

	c, url = newClient(&fakeSQS{getAttrs: func(w http.ResponseWriter, _ *http.Request) {
		apiError(w, http.StatusBadRequest, "com.amazonaws.sqs#QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", "Sender", "The specified queue does not exist.")
	}})
	_, err = sqs.New(ctx, sqs.Options{Client: c, QueueURL: url})
	if err == nil || !strings.Contains(err.Error(), "KEYRELAY_SQS_QUEUE_URL") {
		t.Errorf("New on a missing queue = %v", err)
	}

	c, url = newClient(&fakeSQS{respond: func(_ int, _ []sentEntry, w http.ResponseWriter, r *http.Request) { denied(w, r) }})
	s, err := sqs.New(ctx, sqs.Options{Client: c, QueueURL: url})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Check(ctx)
	t.Logf("check: %v", err)
	if err == nil || !strings.Contains(err.Error(), "allow sqs:SendMessage on "+url) {
		t.Errorf("Check without sqs:SendMessage = %v", err)
	}

	f := &fakeSQS{respond: func(_ int, _ []sentEntry, w http.ResponseWriter, _ *http.Request) {
		apiError(w, http.StatusBadRequest, "com.amazonaws.sqs#EmptyBatchRequest", "AWS.SimpleQueueService.EmptyBatchRequest", "Sender", "There should be at least one SendMessageBatchRequestEntry in the request.")
	}}
	c, url = newClient(f)
	if s, err = sqs.New(ctx, sqs.Options{Client: c, QueueURL: url}); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctx); err != nil {
		t.Errorf("Check with both permissions = %v", err)
	}
	if got := f.bodies(); len(got) != 1 || len(got[0]) != 0 {
		t.Errorf("Check sent %v, want one empty probe", got)
	}
}
