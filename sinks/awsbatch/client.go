package awsbatch

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	smithyendpoints "github.com/aws/smithy-go/endpoints"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// The request-path tuning the SQS and SNS clients share (sqs.Tune,
// sns.Tune): an HTTP client that writes a request in one system call and
// keeps its connection (TuneHTTPClient), a stack without the middlewares
// the sinks do not need (TuneStack), and the endpoint resolved once
// (EndpointCache). BenchmarkSendMessageBatch (sinks/sqs) measures them.

// HTTPClient is an AWS SDK client's HTTP client (its Options.HTTPClient).
type HTTPClient interface {
	Do(*http.Request) (*http.Response, error)
}

// WriteBufferSize is the size of the buffer net/http writes a request
// through (TuneTransport): a request of up to that size, headers and body,
// goes out in one write system call; a larger one (packed messages, large
// records) in one per WriteBufferSize. It costs that much memory per
// connection, one connection per request in flight.
const WriteBufferSize = 64 << 10

// TuneTransport sets t's write buffer to WriteBufferSize, unless t already
// has a larger one (net/http's default is 4 KiB).
func TuneTransport(t *http.Transport) {
	t.WriteBufferSize = max(t.WriteBufferSize, WriteBufferSize)
}

// TuneHTTPClient returns c for a sink's requests: the SDK's buildable
// client (the one cmd/keyrelay and the SDK's default configuration build)
// with TuneTransport applied, any client wrapped so that net/http gets each
// request's body in the form it writes best (see keepAlive). A client it
// returned is returned as it is.
func TuneHTTPClient(c HTTPClient) HTTPClient {
	switch c := c.(type) {
	case nil:
		return nil
	case keepAlive:
		return c
	case *awshttp.BuildableClient:
		return keepAlive{c.WithTransportOptions(TuneTransport)}
	}
	return keepAlive{c}
}

// TuneStack is an APIOptions function for the sinks' clients. It removes
// the invocation id (a random UUID per request, a crypto/rand read), the
// retry-attempt header and the Lambda recursion-detection header: none is
// content the services need. It adds inMemoryBody, which keepAlive relies
// on. Adding it twice is harmless.
func TuneStack(stack *middleware.Stack) error {
	_, _ = stack.Build.Remove("ClientRequestID")
	_, _ = stack.Build.Remove("RecursionDetection")
	_, _ = stack.Finalize.Remove("RetryMetricsHeader")
	if _, ok := stack.Finalize.Get(inMemoryBody{}.ID()); ok {
		return nil
	}
	return stack.Finalize.Add(inMemoryBody{}, middleware.After)
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
// read with io.EOF as an error, which makes net/http close the connection:
// a new TCP (and TLS) connection for one request in ten or so. Its Read
// answers (0, io.EOF), which net/http expects; so does the bytes.Reader,
// which the SDK's Close does not touch.
type keepAlive struct{ next HTTPClient }

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

// EndpointKey is a service's endpoint parameters by value: nil and a zero
// value differ to the endpoint rules, so the key tells them apart.
type EndpointKey struct {
	region, endpoint                     string
	dualStack, fips                      bool
	hasRegion, hasEndpoint, hasDS, hasFS bool
}

// EndpointKeyOf returns the key of the endpoint parameters the SQS and SNS
// endpoint rules take.
func EndpointKeyOf(region, endpoint *string, dualStack, fips *bool) EndpointKey {
	return EndpointKey{region: aws.ToString(region), endpoint: aws.ToString(endpoint),
		dualStack: aws.ToBool(dualStack), fips: aws.ToBool(fips),
		hasRegion: region != nil, hasEndpoint: endpoint != nil, hasDS: dualStack != nil, hasFS: fips != nil}
}

// EndpointCache is a service's EndpointResolverV2 (P its
// EndpointParameters) that remembers the endpoint its resolver returned
// for the last parameters: a client resolves the same ones for every
// request, and the endpoint rules cost several allocations each time.
type EndpointCache[P any] struct {
	resolve func(context.Context, P) (smithyendpoints.Endpoint, error)
	key     func(P) EndpointKey

	mu sync.Mutex
	k  EndpointKey
	ep smithyendpoints.Endpoint
	ok bool
}

// NewEndpointCache returns an EndpointCache over resolve; key gives the
// EndpointKey of a set of parameters.
func NewEndpointCache[P any](resolve func(context.Context, P) (smithyendpoints.Endpoint, error), key func(P) EndpointKey) *EndpointCache[P] {
	return &EndpointCache[P]{resolve: resolve, key: key}
}

// ResolveEndpoint implements the service's EndpointResolverV2.
func (c *EndpointCache[P]) ResolveEndpoint(ctx context.Context, p P) (smithyendpoints.Endpoint, error) {
	key := c.key(p)
	c.mu.Lock()
	if c.ok && c.k == key {
		ep := c.ep
		c.mu.Unlock()
		return ep, nil
	}
	c.mu.Unlock()
	ep, err := c.resolve(ctx, p)
	if err != nil {
		return ep, err
	}
	c.mu.Lock()
	c.k, c.ep, c.ok = key, ep, true
	c.mu.Unlock()
	return ep, nil
}
