package sqs

import (
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/keyrelay/keyrelay/sinks/awsbatch"
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
//     buffer of awsbatch.WriteBufferSize instead of 4 KiB (a
//     SendMessageBatch of 10 typical records is about 5 KiB). See
//     awsbatch.TuneHTTPClient.
//   - SendMessageBatch's request body written, and its answer read, by
//     hand, without the SDK's allocations (batchProtocol).
//   - the request body handed to net/http without the SDK's WriteTo, whose
//     io.EOF after the SDK closes the body made net/http drop the connection
//     of one request in ten or so: a new TCP (and TLS) connection each time.
//
// The settings shared with SNS are awsbatch's (TuneHTTPClient, TuneStack,
// EndpointCache). Tune applied twice is Tune applied once.
//
// Signing (SigV4 with the configured credentials), the user agent, the
// request id and the error types of the answers are unchanged.
func Tune(o *awssqs.Options) {
	o.Retryer = aws.NopRetryer{}
	o.DisableMessageChecksumValidation = true
	if _, ok := o.EndpointResolverV2.(*awsbatch.EndpointCache[awssqs.EndpointParameters]); !ok && o.EndpointResolverV2 != nil {
		o.EndpointResolverV2 = awsbatch.NewEndpointCache(o.EndpointResolverV2.ResolveEndpoint, func(p awssqs.EndpointParameters) awsbatch.EndpointKey {
			return awsbatch.EndpointKeyOf(p.Region, p.Endpoint, p.UseDualStack, p.UseFIPS)
		})
	}
	o.Protocol = newBatchProtocol(o.Protocol)
	if c := awsbatch.TuneHTTPClient(o.HTTPClient); c != nil {
		o.HTTPClient = c
	}
	o.APIOptions = append(slices.Clip(o.APIOptions), awsbatch.TuneStack)
}

// TunedClient returns a client with c's options, Tune applied.
func TunedClient(c *awssqs.Client) *awssqs.Client {
	return awssqs.New(c.Options(), Tune)
}
