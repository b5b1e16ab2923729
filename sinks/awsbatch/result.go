package awsbatch

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/keyrelay/keyrelay/bridge"
)

// MaxBatchEntries is the most entries SendMessageBatch and PublishBatch take.
// https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessageBatch.html
// https://docs.aws.amazon.com/sns/latest/api/API_PublishBatch.html
const MaxBatchEntries = 10

// EntryID is the batch entry Id of the entry at index i: its decimal index,
// which is unique within the request and valid (alphanumerics, at most 80).
func EntryID(i int) string { return strconv.Itoa(i) }

// Failure is one entry of a batch response's Failed list
// (BatchResultErrorEntry in both SQS and SNS).
type Failure struct {
	ID          string
	Code        string
	Message     string
	SenderFault bool
}

// EntryError is the failure of one batch entry as the service reported it.
type EntryError struct {
	Service     string // "sqs" or "sns"
	Code        string
	Message     string
	SenderFault bool
}

func (e *EntryError) Error() string {
	fault := "service fault"
	if e.SenderFault {
		fault = "sender fault"
	}
	return fmt.Sprintf("%s: entry failed (%s): %s: %s", e.Service, fault, e.Code, e.Message)
}

// retryableEntryCodes are per-entry codes that describe the target rather
// than the entry: they are retried even when SenderFault is true, because
// they pass (throttling) or the operator can fix them while keyrelay runs
// (the queue's or topic's KMS key). Compared case-insensitively; any code
// starting with "kms" is included too.
var retryableEntryCodes = map[string]bool{
	"throttled": true, "throttling": true, "throttlingexception": true,
	"requestthrottled": true, "internalerror": true, "serviceunavailable": true,
}

// entryRetryable reports whether a per-entry failure is worth resending.
func entryRetryable(f Failure) bool {
	code := strings.ToLower(f.Code)
	return !f.SenderFault || retryableEntryCodes[code] || strings.HasPrefix(code, "kms")
}

// batchFailures maps a batch response onto the bridge contract. n is the
// number of entries sent (ids EntryID(0) … EntryID(n-1)); succeeded are the
// Ids of the Successful list. It returns the failed entries, none when every
// entry succeeded: a sender-fault failure is Permanent (the entry is refused
// for good) unless its code describes the target (throttling, KMS), anything
// else is retryable. An entry the response names in neither list is reported
// as a retryable failure: at least once beats silently assuming delivery.
func batchFailures(service string, n int, succeeded []string, failed []Failure) []bridge.EntryError {
	state := make([]byte, n) // 0 unknown, 1 succeeded, 2 failed
	var pe bridge.PartialError
	for _, f := range failed {
		i, ok := entryIndex(f.ID, n)
		if !ok || state[i] != 0 {
			continue
		}
		state[i] = 2
		err := error(&EntryError{Service: service, Code: f.Code, Message: f.Message, SenderFault: f.SenderFault})
		if !entryRetryable(f) {
			err = bridge.Permanent(err)
		}
		pe.Failed = append(pe.Failed, bridge.EntryError{Index: i, Err: err})
	}
	for _, id := range succeeded {
		if i, ok := entryIndex(id, n); ok && state[i] == 0 {
			state[i] = 1
		}
	}
	for i, s := range state {
		if s == 0 {
			pe.Failed = append(pe.Failed, bridge.EntryError{Index: i,
				Err: fmt.Errorf("%s: entry %d is missing from the batch response", service, i)})
		}
	}
	return pe.Failed
}

func entryIndex(id string, n int) (int, bool) {
	i, err := strconv.Atoi(id)
	if err != nil || i < 0 || i >= n || EntryID(i) != id {
		return 0, false
	}
	return i, true
}
