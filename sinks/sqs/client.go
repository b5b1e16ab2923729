package sqs

import (
	"context"
	"io"
	"net/http"
	"slices"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	smithyendpoints "github.com/aws/smithy-go/endpoints"
	"github.com/aws/smithy-go/middleware"
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
	if o.HTTPClient != nil {
		o.HTTPClient = keepAlive{o.HTTPClient}
	}
	o.APIOptions = append(slices.Clip(o.APIOptions), removeUnneeded)
}

// TunedClient returns a client with c's options, Tune applied.
func TunedClient(c *awssqs.Client) *awssqs.Client {
	return awssqs.New(c.Options(), Tune)
}

// removeUnneeded removes the middlewares Tune names from a request's stack.
func removeUnneeded(stack *middleware.Stack) error {
	_, _ = stack.Build.Remove("ClientRequestID")
	_, _ = stack.Build.Remove("RecursionDetection")
	_, _ = stack.Finalize.Remove("RetryMetricsHeader")
	return nil
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

// keepAlive hands requests to the HTTP client with a body that has no
// WriteTo. The SDK closes a request's body once the answer is in; net/http
// may still be making its last read of the body then (to check that it
// holds no more than Content-Length), and the SDK body's WriteTo answers
// that read with io.EOF as an error, which makes net/http close the
// connection. Its Read answers (0, io.EOF), which net/http expects.
type keepAlive struct{ next awssqs.HTTPClient }

func (k keepAlive) Do(r *http.Request) (*http.Response, error) {
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = readOnly{r.Body}
	}
	return k.next.Do(r)
}

// readOnly is an io.ReadCloser and nothing else.
type readOnly struct{ io.ReadCloser }
