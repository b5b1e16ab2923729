package awsbatch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	smithy "github.com/aws/smithy-go"

	"github.com/keyrelay/keyrelay/bridge"
)

// DefaultAttemptTimeout bounds one batch request: a request that hangs longer
// is abandoned and the bridge retries it.
const DefaultAttemptTimeout = 10 * time.Second

// DefaultMaxInFlight is the number of concurrent batch requests to a
// standard queue or topic when the caller does not choose.
const DefaultMaxInFlight = 4

// OneAttempt turns the SDK's own retries off for a batch request, whatever
// retryer the client was built with: the bridge retries (with back-off,
// resending only the failed entries), and SDK retries on top would multiply
// the attempts and resend entries behind the bridge's back.
func OneAttempt(r aws.Retryer) aws.Retryer { return retry.AddWithMaxAttempts(r, 1) }

// IsFIFO reports whether a queue URL or topic ARN names a FIFO target.
func IsFIFO(target string) bool { return strings.HasSuffix(target, ".fifo") }

// Code returns the AWS error code of err, or "" when err is not an API error
// (a transport error, a timeout). SQS's legacy prefix
// "AWS.SimpleQueueService." is removed.
func Code(err error) string {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return ""
	}
	return strings.TrimPrefix(ae.ErrorCode(), "AWS.SimpleQueueService.")
}

// badRequestCodes are request-level errors that describe the request itself:
// sending the same entries again fails the same way, so retrying would stall
// the sink for ever. keyrelay's batching avoids them; if one happens anyway
// the batch is rejected (logged and counted), not resent.
var badRequestCodes = map[string]bool{
	"BatchRequestTooLong":          true,
	"TooManyEntriesInBatchRequest": true,
	"EmptyBatchRequest":            true,
	"BatchEntryIdsNotDistinct":     true,
	"InvalidBatchEntryId":          true,
	"InvalidMessageContents":       true, // SQS
	"InvalidParameter":             true, // SNS: the request's content, never the topic's state
	"ParameterValueInvalid":        true, // SNS
	"ValidationError":              true,
	"ValidationException":          true,
}

// requestError classifies the error of a whole batch request. Errors about
// the request's own content (badRequestCodes) are Permanent. Everything else
// is retryable: throttling (including SNS Throttled and SQS KmsThrottled,
// which the SDK does not retry by default), 5xx, transport errors and
// timeouts, and also missing permissions, a missing queue or topic and KMS
// key problems, because the operator can fix those while keyrelay runs and a
// permanent refusal would throw away every record meanwhile.
func requestError(service, op string, err error) error {
	if err == nil {
		return nil
	}
	code := Code(err)
	err = fmt.Errorf("%s: %s: %w", service, op, err)
	if badRequestCodes[code] {
		return bridge.Permanent(err)
	}
	return err
}

// attemptContext bounds one request by timeout (DefaultAttemptTimeout when
// not positive).
func attemptContext(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout <= 0 {
		timeout = DefaultAttemptTimeout
	}
	return context.WithTimeout(ctx, timeout)
}

// IsAccessDenied reports whether err says the caller lacks a permission:
// SQS AccessDenied/AccessDeniedException, SNS AuthorizationError.
func IsAccessDenied(err error) bool {
	code := Code(err)
	return strings.Contains(code, "AccessDenied") || code == "AuthorizationError"
}

// explainCheck turns the error of a request about the target (`keyrelay
// check`, reading its attributes) into an operator's sentence: a missing
// permission names the IAM action and the resource; other errors pass
// through with their code.
func explainCheck(err error, action, resource, notFound string, isNotFound func(error) bool) error {
	switch {
	case err == nil:
		return nil
	case IsAccessDenied(err):
		return fmt.Errorf("access denied: allow %s on %s in keyrelay's IAM policy (%w)", action, resource, err)
	case isNotFound(err):
		return fmt.Errorf("%s (%w)", notFound, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("no answer in time: check the endpoint, network path (VPC endpoint, NAT) and AWS_REGION (%w)", err)
	}
	return err
}
