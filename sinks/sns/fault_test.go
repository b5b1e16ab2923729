package sns_test

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awssns "github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/sinks/awsbatch/awsbatchtest"
	"github.com/keyrelay/keyrelay/sinks/sns"
)

const xmlns = `xmlns="http://sns.amazonaws.com/doc/2010-03-31/"`

// sentEntry is one PublishBatch entry as the server received it.
type sentEntry struct {
	ID, Message string
	Attributes  map[string][2]string // name -> data type, string value
}

// responder answers the n-th PublishBatch request (0-based).
type responder func(n int, entries []sentEntry, w http.ResponseWriter, r *http.Request)

// fakeSNS speaks the SNS query protocol (form-encoded requests, XML
// responses) and records every PublishBatch request.
type fakeSNS struct {
	mu       sync.Mutex
	requests [][]sentEntry
	respond  responder
	getAttrs http.HandlerFunc // nil: a topic without MaximumMessageSize
}

func (f *fakeSNS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	switch r.PostForm.Get("Action") {
	case "GetTopicAttributes":
		if f.getAttrs != nil {
			f.getAttrs(w, r)
			return
		}
		fmt.Fprintf(w, `<GetTopicAttributesResponse %s><GetTopicAttributesResult><Attributes>`+
			`<entry><key>TopicArn</key><value>%s</value></entry>`+
			`<entry><key>SubscriptionsConfirmed</key><value>1</value></entry>`+
			`</Attributes></GetTopicAttributesResult><ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata></GetTopicAttributesResponse>`,
			xmlns, html.EscapeString(r.PostForm.Get("TopicArn")))
	case "PublishBatch":
		entries := parseEntries(r.PostForm)
		f.mu.Lock()
		n := len(f.requests)
		f.requests = append(f.requests, entries)
		f.mu.Unlock()
		f.respond(n, entries, w, r)
	default:
		apiError(w, http.StatusBadRequest, "InvalidAction", "Sender", "unsupported action")
	}
}

// parseEntries reads PublishBatchRequestEntries.member.N.* in the order of N.
func parseEntries(form url.Values) []sentEntry {
	const prefix = "PublishBatchRequestEntries.member."
	byN := map[int]*sentEntry{}
	for k, v := range form {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		num, field, _ := strings.Cut(rest, ".")
		n, _ := strconv.Atoi(num)
		e := byN[n]
		if e == nil {
			e = &sentEntry{Attributes: map[string][2]string{}}
			byN[n] = e
		}
		switch {
		case field == "Id":
			e.ID = v[0]
		case field == "Message":
			e.Message = v[0]
		case strings.HasPrefix(field, "MessageAttributes.entry.") && strings.HasSuffix(field, ".Name"):
			base := strings.TrimSuffix(k, ".Name")
			e.Attributes[v[0]] = [2]string{form.Get(base + ".Value.DataType"), form.Get(base + ".Value.StringValue")}
		}
	}
	var ns []int
	for n := range byN {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	out := make([]sentEntry, 0, len(ns))
	for _, n := range ns {
		out = append(out, *byN[n])
	}
	return out
}

func (f *fakeSNS) bodies() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([][]string, len(f.requests))
	for i, req := range f.requests {
		for _, e := range req {
			out[i] = append(out[i], e.Message)
		}
	}
	return out
}

type failure struct {
	ID          string
	SenderFault bool
	Code        string
	Message     string
}

// batchResponse answers 200 with every entry successful except failed.
func batchResponse(w http.ResponseWriter, entries []sentEntry, failed ...failure) {
	var b strings.Builder
	fmt.Fprintf(&b, `<PublishBatchResponse %s><PublishBatchResult><Successful>`, xmlns)
	for _, e := range entries {
		if !slices.ContainsFunc(failed, func(f failure) bool { return f.ID == e.ID }) {
			fmt.Fprintf(&b, `<member><Id>%s</Id><MessageId>msg-%s</MessageId></member>`, e.ID, e.ID)
		}
	}
	b.WriteString(`</Successful><Failed>`)
	for _, f := range failed {
		fmt.Fprintf(&b, `<member><Id>%s</Id><Code>%s</Code><Message>%s</Message><SenderFault>%t</SenderFault></member>`,
			f.ID, f.Code, html.EscapeString(f.Message), f.SenderFault)
	}
	b.WriteString(`</Failed></PublishBatchResult><ResponseMetadata><RequestId>r-2</RequestId></ResponseMetadata></PublishBatchResponse>`)
	fmt.Fprint(w, b.String())
}

// apiError answers with an SNS error as the service sends it.
func apiError(w http.ResponseWriter, status int, code, typ, msg string) {
	w.WriteHeader(status)
	fmt.Fprintf(w, `<ErrorResponse %s><Error><Type>%s</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>r-3</RequestId></ErrorResponse>`,
		xmlns, typ, code, html.EscapeString(msg))
}

func newFaultSink(t *testing.T, respond responder, attemptTimeout time.Duration) (*sns.Sink, *fakeSNS) {
	t.Helper()
	fake := &fakeSNS{respond: respond}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "")),
		config.WithBaseEndpoint(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	s, err := sns.New(context.Background(), sns.Options{
		Client:         awssns.NewFromConfig(cfg),
		TopicARN:       "arn:aws:sns:us-east-1:000000000000:keyrelay",
		MaxInFlight:    1,
		AttemptTimeout: attemptTimeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Limits().MaxEntryBytes; got != sns.DefaultMaxMessageSize {
		t.Errorf("MaxEntryBytes = %d without a MaximumMessageSize attribute, want %d", got, sns.DefaultMaxMessageSize)
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
		wantSent  [][]string
		delivered float64
		rejected  float64
		retried   float64
	}{
		{
			name: "partial: retryable and sender-fault entries",
			respond: firstThen(func(_ int, entries []sentEntry, w http.ResponseWriter, _ *http.Request) {
				batchResponse(w, entries,
					failure{"2", false, "InternalError", "internal error"},
					failure{"5", true, "InvalidParameter", "Invalid parameter: Message too long"},
					failure{"7", true, "Throttled", "Rate exceeded"}, // target-side: retried
					failure{"8", false, "KMSThrottling", "KMS throttled"})
			}),
			wantSent:  [][]string{all, {body(2), body(7), body(8)}},
			delivered: 10 - 1, rejected: 1, retried: 3,
		},
		{
			name: "throttled batch",
			respond: firstThen(func(_ int, _ []sentEntry, w http.ResponseWriter, _ *http.Request) {
				apiError(w, http.StatusTooManyRequests, "Throttled", "Sender", "Rate exceeded")
			}),
			wantSent:  [][]string{all, all},
			delivered: 10, retried: 10,
		},
		{
			name: "throttling batch",
			respond: firstThen(func(_ int, _ []sentEntry, w http.ResponseWriter, _ *http.Request) {
				apiError(w, http.StatusBadRequest, "Throttling", "Sender", "Rate exceeded")
			}),
			wantSent:  [][]string{all, all},
			delivered: 10, retried: 10,
		},
		{
			name: "5xx",
			respond: firstThen(func(_ int, _ []sentEntry, w http.ResponseWriter, _ *http.Request) {
				apiError(w, http.StatusInternalServerError, "InternalError", "Receiver", "internal error")
			}),
			wantSent:  [][]string{all, all},
			delivered: 10, retried: 10,
		},
		{
			name: "timeout",
			respond: firstThen(func(_ int, _ []sentEntry, w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-time.After(10 * time.Second):
				}
			}),
			wantSent:  [][]string{all, all},
			delivered: 10, retried: 10,
		},
		{
			name: "authorization error is retried: the operator can fix it",
			respond: firstThen(func(_ int, _ []sentEntry, w http.ResponseWriter, _ *http.Request) {
				apiError(w, http.StatusForbidden, "AuthorizationError", "Sender", "not authorized to perform: SNS:Publish")
			}),
			wantSent:  [][]string{all, all},
			delivered: 10, retried: 10,
		},
		{
			name: "invalid request is rejected, not resent for ever",
			respond: firstThen(func(_ int, _ []sentEntry, w http.ResponseWriter, _ *http.Request) {
				apiError(w, http.StatusBadRequest, "BatchRequestTooLong", "Sender", "The length of all the messages put together is more than the limit.")
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
				t.Errorf("requests:\n%v\nwant:\n%v", sent, tc.wantSent)
			}
			fake.mu.Lock()
			for _, req := range fake.requests {
				for i, e := range req {
					if e.ID != fmt.Sprint(i) {
						t.Errorf("entry %d has Id %q", i, e.ID)
					}
					if a := e.Attributes["type"]; a != [2]string{"String", "keyevent"} {
						t.Errorf("entry %d: type attribute %v", i, a)
					}
					if a := e.Attributes["event"]; a != [2]string{"String", "expired"} {
						t.Errorf("entry %d: event attribute %v", i, a)
					}
					if a := e.Attributes["db"]; a[0] != "Number" || (a[1] != "0" && a[1] != "1") {
						t.Errorf("entry %d: db attribute %v", i, a)
					}
				}
			}
			fake.mu.Unlock()

			metric := func(c float64, name string, want float64) {
				if c != want {
					t.Errorf("%s = %v, want %v", name, c, want)
				}
			}
			metric(testutil.ToFloat64(m.Delivered.WithLabelValues(sns.Name)), "delivered", tc.delivered)
			metric(testutil.ToFloat64(m.Rejected.WithLabelValues(sns.Name, "refused")), "rejected", tc.rejected)
			metric(testutil.ToFloat64(m.Retried.WithLabelValues(sns.Name)), "retried", tc.retried)
			metric(testutil.ToFloat64(m.Dropped.WithLabelValues(sns.Name, bridge.GapShutdown)), "dropped", 0)
		})
	}
}

// TestCheckExplains shows that missing permissions are reported by IAM action
// and a missing topic by the variable to fix.
func TestCheckExplains(t *testing.T) {
	const arn = "arn:aws:sns:us-east-1:000000000000:keyrelay"
	denied := func(w http.ResponseWriter, _ *http.Request) {
		apiError(w, http.StatusForbidden, "AuthorizationError", "Sender", "User is not authorized")
	}
	newClient := func(f *fakeSNS) *awssns.Client {
		srv := httptest.NewServer(f)
		t.Cleanup(srv.Close)
		cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion("us-east-1"),
			config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "")),
			config.WithBaseEndpoint(srv.URL))
		if err != nil {
			t.Fatal(err)
		}
		return awssns.NewFromConfig(cfg)
	}
	ctx := context.Background()

	_, err := sns.New(ctx, sns.Options{Client: newClient(&fakeSNS{getAttrs: denied}), TopicARN: arn})
	if err == nil || !strings.Contains(err.Error(), "allow sns:GetTopicAttributes on "+arn) {
		t.Errorf("New without sns:GetTopicAttributes = %v", err)
	}

	_, err = sns.New(ctx, sns.Options{Client: newClient(&fakeSNS{getAttrs: func(w http.ResponseWriter, _ *http.Request) {
		apiError(w, http.StatusNotFound, "NotFound", "Sender", "Topic does not exist")
	}}), TopicARN: arn})
	if err == nil || !strings.Contains(err.Error(), "KEYRELAY_SNS_TOPIC_ARN") {
		t.Errorf("New on a missing topic = %v", err)
	}

	s, err := sns.New(ctx, sns.Options{Client: newClient(&fakeSNS{respond: func(_ int, _ []sentEntry, w http.ResponseWriter, r *http.Request) {
		denied(w, r)
	}}), TopicARN: arn})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctx); err == nil || !strings.Contains(err.Error(), "allow sns:Publish on "+arn) {
		t.Errorf("Check without sns:Publish = %v", err)
	}

	f := &fakeSNS{
		getAttrs: func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, `<GetTopicAttributesResponse %s><GetTopicAttributesResult><Attributes>`+
				`<entry><key>MaximumMessageSize</key><value>1048576</value></entry>`+
				`</Attributes></GetTopicAttributesResult></GetTopicAttributesResponse>`, xmlns)
		},
		respond: func(_ int, _ []sentEntry, w http.ResponseWriter, _ *http.Request) {
			apiError(w, http.StatusBadRequest, "EmptyBatchRequest", "Sender", "The batch request doesn't contain any entries.")
		},
	}
	if s, err = sns.New(ctx, sns.Options{Client: newClient(f), TopicARN: arn}); err != nil {
		t.Fatal(err)
	}
	if lim := s.Limits(); lim.MaxEntryBytes != 1<<20 || lim.MaxBatchBytes != 1<<20 {
		t.Errorf("Limits = %+v for a 1 MiB topic", lim)
	}
	if err := s.Check(ctx); err != nil {
		t.Errorf("Check with both permissions = %v", err)
	}
	if got := f.bodies(); len(got) != 1 || len(got[0]) != 0 {
		t.Errorf("Check sent %v, want one empty probe", got)
	}
}
