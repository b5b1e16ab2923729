package sqs

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"slices"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	smithyendpoints "github.com/aws/smithy-go/endpoints"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Tune sets an SQS client's options for the sink's request path; New applies
// it to a *sqs.Client it is given (see TunedClient). Each setting removes
// per-request work that SendMessageBatch does not need, measured by
// BenchmarkSendMessageBatch:
//
//   - one attempt per call, set once (aws.NopRetryer), instead of a
//     per-call option that copies and wraps the retryer: the bridge retries,
//     resending only the failed entries (awsbatch.Transport). Throttling
//     still comes back as the SDK's error, classified retryable.
//   - no MD5 check of each message body in the answer: the request travels
//     over TLS, and a mismatch would fail a batch SQS has already accepted,
//     so that the bridge would send it twice.
//   - the endpoint resolved once per set of parameters (region, FIPS,
//     dual-stack, custom endpoint) instead of running the endpoint rules on
//     every request.
//   - no invocation id (a random UUID per request), retry-attempt header
//     or Lambda recursion-detection header: none of them is signed
//     content SQS needs, and the first costs a crypto/rand read per request.
//   - a request written with one write system call instead of two or more:
//     net/http is given the serialized body as an in-memory reader, which
//     it writes with the headers instead of flushing them first, through a
//     buffer of WriteBufferSize instead of 4 KiB (a SendMessageBatch of 10
//     typical records is about 5 KiB). See keepAlive and TuneTransport.
//   - SendMessageBatch's request body written, and its answer read, by
//     hand, without the SDK's allocations (batchProtocol).
//   - the request body handed to net/http without the SDK's WriteTo, whose
//     io.EOF after the SDK closes the body made net/http drop the connection
//     of one request in ten or so: a new TCP (and TLS) connection each time.
//
// Signing (SigV4 with the configured credentials), the user agent, the
// request id and the error types of the answers are unchanged.
func Tune(o *awssqs.Options) {
	o.Retryer = aws.NopRetryer{}
	o.DisableMessageChecksumValidation = true
	o.EndpointResolverV2 = &cachedEndpoint{next: o.EndpointResolverV2}
	o.Protocol = newBatchProtocol(o.Protocol)
	if b, ok := o.HTTPClient.(*awshttp.BuildableClient); ok {
		o.HTTPClient = b.WithTransportOptions(TuneTransport)
	}
	if o.HTTPClient != nil {
		o.HTTPClient = keepAlive{o.HTTPClient}
	}
	o.APIOptions = append(slices.Clip(o.APIOptions), removeUnneeded)
}

// TunedClient returns a client with c's options, Tune applied.
func TunedClient(c *awssqs.Client) *awssqs.Client {
	return awssqs.New(c.Options(), Tune)
}

// WriteBufferSize is the size of the buffer net/http writes a request
// through (TuneTransport): a request of up to that size, headers and body,
// goes out in one write system call; a larger one (packed messages, large
// records) in one per WriteBufferSize. It costs that much memory per
// connection, one connection per request in flight.
const WriteBufferSize = 64 << 10

// TuneTransport sets t's write buffer to WriteBufferSize, unless t already
// has a larger one. Tune applies it to the SDK's buildable HTTP client (the
// one cmd/keyrelay and the SDK's default configuration build); a client of
// another kind is left as it is.
func TuneTransport(t *http.Transport) {
	t.WriteBufferSize = max(t.WriteBufferSize, WriteBufferSize)
}

// removeUnneeded removes the middlewares Tune names from a request's stack,
// and adds inMemoryBody.
func removeUnneeded(stack *middleware.Stack) error {
	_, _ = stack.Build.Remove("ClientRequestID")
	_, _ = stack.Build.Remove("RecursionDetection")
	_, _ = stack.Finalize.Remove("RetryMetricsHeader")
	return stack.Finalize.Add(inMemoryBody{}, middleware.After)
}

// cachedEndpoint remembers the endpoint next resolved for the last
// parameters: a client resolves the same ones for every request.
type cachedEndpoint struct {
	next awssqs.EndpointResolverV2

	mu  sync.Mutex
	key endpointKey
	ep  smithyendpoints.Endpoint
	ok  bool
}

// endpointKey is awssqs.EndpointParameters by value: nil and a zero value
// differ to the endpoint rules, so the key tells them apart.
type endpointKey struct {
	region, endpoint                     string
	dualStack, fips                      bool
	hasRegion, hasEndpoint, hasDS, hasFS bool
}

func (c *cachedEndpoint) ResolveEndpoint(ctx context.Context, p awssqs.EndpointParameters) (smithyendpoints.Endpoint, error) {
	key := endpointKey{region: aws.ToString(p.Region), endpoint: aws.ToString(p.Endpoint),
		dualStack: aws.ToBool(p.UseDualStack), fips: aws.ToBool(p.UseFIPS),
		hasRegion: p.Region != nil, hasEndpoint: p.Endpoint != nil, hasDS: p.UseDualStack != nil, hasFS: p.UseFIPS != nil}
	c.mu.Lock()
	if c.ok && c.key == key {
		ep := c.ep
		c.mu.Unlock()
		return ep, nil
	}
	c.mu.Unlock()
	ep, err := c.next.ResolveEndpoint(ctx, p)
	if err != nil {
		return ep, err
	}
	c.mu.Lock()
	c.key, c.ep, c.ok = key, ep, true
	c.mu.Unlock()
	return ep, nil
}

// keepAlive hands requests to the HTTP client with a body net/http writes
// well: the request's serialized bytes themselves when the SDK made them a
// *bytes.Reader (inMemoryBody put it in the request's context), else the
// SDK's body without its WriteTo.
//
// The bytes, as an io.NopCloser over a *bytes.Reader, are a body net/http
// knows to be in memory: it writes the headers and the body through its
// buffer in one write system call, where it flushes the headers on their
// own before any other body, in case the server answers early.
//
// The SDK closes a request's body once the answer is in; net/http may
// still be making its last read of the body then (to check that it holds
// no more than Content-Length), and the SDK body's WriteTo answers that
// read with io.EOF as an error, which makes net/http close the connection.
// Its Read answers (0, io.EOF), which net/http expects; so does the
// bytes.Reader, which the SDK's Close does not touch.
type keepAlive struct{ next awssqs.HTTPClient }

func (k keepAlive) Do(r *http.Request) (*http.Response, error) {
	if r.Body != nil && r.Body != http.NoBody {
		if b, ok := r.Context().Value(bodyKey{}).(*bytes.Reader); ok && int64(b.Len()) == r.ContentLength {
			r.Body = io.NopCloser(b)
		} else {
			r.Body = readOnly{r.Body}
		}
	}
	return k.next.Do(r)
}

// readOnly is an io.ReadCloser and nothing else.
type readOnly struct{ io.ReadCloser }

// bodyKey is the context key of a request's serialized body, a
// *bytes.Reader at its start.
type bodyKey struct{}

// inMemoryBody, the last finalize middleware (after signing, which reads
// the body and rewinds it), puts the request's serialized body in the
// context the SDK builds the net/http request with, for keepAlive.
type inMemoryBody struct{}

func (inMemoryBody) ID() string { return "keyrelayInMemoryBody" }

func (inMemoryBody) HandleFinalize(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (
	middleware.FinalizeOutput, middleware.Metadata, error) {
	if req, ok := in.Request.(*smithyhttp.Request); ok {
		if b, ok := req.GetStream().(*bytes.Reader); ok {
			ctx = context.WithValue(ctx, bodyKey{}, b)
		}
	}
	return next.HandleFinalize(ctx, in)
}
