package sns

import (
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	awssns "github.com/aws/aws-sdk-go-v2/service/sns"

	"github.com/keyrelay/keyrelay/sinks/awsbatch"
)

// Tune sets an SNS client's options for the sink's request path; New applies
// it to a *sns.Client it is given (see TunedClient). It is sqs.Tune where
// SNS has the same settings:
//
//   - one attempt per call, set once (aws.NopRetryer), instead of a
//     per-call option that copies and wraps the retryer: the bridge retries,
//     resending only the failed entries (awsbatch.Transport). Throttling
//     still comes back as the SDK's error, classified retryable.
//   - the endpoint resolved once per set of parameters (region, FIPS,
//     dual-stack, custom endpoint) instead of running the endpoint rules on
//     every request (awsbatch.EndpointCache).
//   - no invocation id (a random UUID per request), retry-attempt header
//     or Lambda recursion-detection header (awsbatch.TuneStack).
//   - a request written with one write system call, and its connection
//     kept (awsbatch.TuneHTTPClient).
//
// PublishBatch's body is the SDK's (the query protocol's form encoding);
// signing (SigV4 with the configured credentials), the user agent, the
// request id and the error types of the answers are unchanged. Tune
// applied twice is Tune applied once.
func Tune(o *awssns.Options) {
	o.Retryer = aws.NopRetryer{}
	if _, ok := o.EndpointResolverV2.(*awsbatch.EndpointCache[awssns.EndpointParameters]); !ok && o.EndpointResolverV2 != nil {
		o.EndpointResolverV2 = awsbatch.NewEndpointCache(o.EndpointResolverV2.ResolveEndpoint, func(p awssns.EndpointParameters) awsbatch.EndpointKey {
			return awsbatch.EndpointKeyOf(p.Region, p.Endpoint, p.UseDualStack, p.UseFIPS)
		})
	}
	if c := awsbatch.TuneHTTPClient(o.HTTPClient); c != nil {
		o.HTTPClient = c
	}
	o.APIOptions = append(slices.Clip(o.APIOptions), awsbatch.TuneStack)
}

// TunedClient returns a client with c's options, Tune applied.
func TunedClient(c *awssns.Client) *awssns.Client {
	return awssns.New(c.Options(), Tune)
}
