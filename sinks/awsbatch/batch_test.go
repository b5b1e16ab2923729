package awsbatch

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	smithy "github.com/aws/smithy-go"

	"github.com/keyrelay/keyrelay/bridge"
)

func TestAttributesAndEntrySize(t *testing.T) {
	now := time.Now()
	for _, rec := range []bridge.Record{
		{Type: bridge.TypeKeyEvent, ID: "x", Time: now, DB: 0, Event: "set", Key: "k"},
		{Type: bridge.TypeKeyEvent, ID: "x", Time: now, DB: 15, Event: "expired", Key: "k\xff"},
		{Type: bridge.TypeKeyEvent, ID: "x", Time: now, DB: 123456, Event: "", Key: ""},
		{Type: bridge.TypeGap, ID: "x", Time: now, Reason: bridge.GapOverflow, Dropped: 3},
	} {
		e := &bridge.Entry{Record: rec, Body: rec.AppendJSON(nil)}
		want := len(e.Body)
		names := map[string]string{}
		for _, a := range Attributes(&rec) {
			want += len(a.Name) + len(a.DataType) + len(a.Value)
			names[a.Name] = a.DataType + ":" + a.Value
		}
		if got := EntrySize(e); got != want {
			t.Errorf("%+v: EntrySize = %d, want %d (body plus attribute names, types and values)", rec, got, want)
		}
		if names["type"] != "String:"+rec.Type {
			t.Errorf("%+v: type attribute %q", rec, names["type"])
		}
		if rec.Type == bridge.TypeGap {
			if len(names) != 1 {
				t.Errorf("gap record attributes %v, want type only", names)
			}
			continue
		}
		if want := fmt.Sprintf("Number:%d", rec.DB); names["db"] != want {
			t.Errorf("db attribute %q, want %q", names["db"], want)
		}
		if _, ok := names["event"]; ok != (rec.Event != "") || (ok && names["event"] != "String:"+rec.Event) {
			t.Errorf("event attribute %q for event %q", names["event"], rec.Event)
		}
	}
}

// batchResult is batchFailures as a Publish returns it.
func batchResult(service string, n int, succeeded []string, failed []Failure) error {
	if f := batchFailures(service, n, succeeded, failed); len(f) > 0 {
		return &bridge.PartialError{Failed: f}
	}
	return nil
}

func TestBatchFailures(t *testing.T) {
	err := batchResult("sqs", 5, []string{"0", "2"}, []Failure{
		{ID: "1", Code: "InternalError", Message: "boom", SenderFault: false},
		{ID: "3", Code: "InvalidMessageContents", Message: "bad", SenderFault: true},
		{ID: "99", Code: "X"}, // not ours: ignored
	})
	var pe *bridge.PartialError
	if !errors.As(err, &pe) {
		t.Fatalf("batchFailures = %v, want failures", err)
	}
	got := map[int]bool{} // index -> permanent
	for _, f := range pe.Failed {
		got[f.Index] = bridge.IsPermanent(f.Err)
	}
	want := map[int]bool{1: false, 3: true, 4: false} // 4: in neither list
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("failed (index: permanent) = %v, want %v", got, want)
	}
	var ee *EntryError
	if !errors.As(pe.Failed[1].Err, &ee) || ee.Code != "InvalidMessageContents" || ee.Message != "bad" {
		t.Errorf("entry error %v does not carry code and message", pe.Failed[1].Err)
	}

	if err := batchResult("sns", 3, []string{"0", "1", "2"}, nil); err != nil {
		t.Errorf("all successful: %v", err)
	}
	// Throttling and KMS codes describe the target: retried even as sender faults.
	err = batchResult("sqs", 2, nil, []Failure{{ID: "0", Code: "KmsThrottled", SenderFault: true}, {ID: "1", Code: "Throttled", SenderFault: true}})
	if !errors.As(err, &pe) || len(pe.Failed) != 2 || bridge.IsPermanent(pe.Failed[0].Err) || bridge.IsPermanent(pe.Failed[1].Err) {
		t.Errorf("throttled sender faults: %v, want both retryable", err)
	}
}

func TestRequestError(t *testing.T) {
	api := func(code string) error { return &smithy.GenericAPIError{Code: code, Message: "m"} }
	for _, tc := range []struct {
		err       error
		permanent bool
	}{
		{api("RequestThrottled"), false},
		{api("KmsThrottled"), false},
		{api("Throttled"), false},
		{api("Throttling"), false},
		{api("InternalError"), false},
		{api("AccessDenied"), false},
		{api("AuthorizationError"), false},
		{api("AWS.SimpleQueueService.NonExistentQueue"), false},
		{api("NotFound"), false},
		{api("KMSDisabled"), false},
		{context.DeadlineExceeded, false},
		{errors.New("dial tcp: connection refused"), false},
		{api("AWS.SimpleQueueService.BatchRequestTooLong"), true},
		{api("BatchRequestTooLong"), true},
		{api("TooManyEntriesInBatchRequest"), true},
		{api("InvalidParameter"), true},
	} {
		err := requestError("sqs", "SendMessageBatch", tc.err)
		if bridge.IsPermanent(err) != tc.permanent {
			t.Errorf("%v: permanent = %v, want %v", tc.err, !tc.permanent, tc.permanent)
		}
		if !errors.Is(err, tc.err) {
			t.Errorf("%v: the cause is not wrapped", tc.err)
		}
	}
}
