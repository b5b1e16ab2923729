package sqs

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// exchange is one request a test client made and the answer it got.
type exchange struct {
	header http.Header
	body   []byte
}

// recordingClient is an SQS client whose HTTP client records each request
// and answers it with status and answer. It is tuned (Tune), with the SDK's
// own protocol unless hand.
func recordingClient(hand bool, status int, answer string, log *[]exchange) *awssqs.Client {
	o := awssqs.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String("http://sqs.test"),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "secret"}, nil
		}),
		HTTPClient: doFunc(func(r *http.Request) (*http.Response, error) {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				return nil, err
			}
			*log = append(*log, exchange{r.Header.Clone(), body})
			return &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {"application/x-amz-json-1.0"}},
				Body: io.NopCloser(strings.NewReader(answer)), ContentLength: int64(len(answer)), Request: r}, nil
		}),
	}
	return awssqs.New(o, func(o *awssqs.Options) {
		sdk := o.Protocol
		Tune(o)
		if !hand {
			o.Protocol = sdk
		}
	})
}

type doFunc func(*http.Request) (*http.Response, error)

func (f doFunc) Do(r *http.Request) (*http.Response, error) { return f(r) }

// sent returns the request the tuned client makes of in, with the SDK's
// protocol (hand false) or batchProtocol (true).
func sent(t *testing.T, hand bool, in *awssqs.SendMessageBatchInput) exchange {
	t.Helper()
	var log []exchange
	_, err := recordingClient(hand, 200, `{"Successful":[]}`, &log).SendMessageBatch(context.Background(), in)
	if err != nil || len(log) != 1 {
		t.Fatalf("SendMessageBatch: %v, %d requests", err, len(log))
	}
	return log[0]
}

// awkward holds what JSON escaping must get right.
var awkward = []string{
	`{"type":"keyevent","key":"a\"b\\c"}`,
	"line\nfeed\rreturn\ttab",
	"\x00\x01\x1f\x7f control and DEL",
	"invalid \xff utf-8 \xe2\x82 truncated",
	"separators \u2028 \u2029 and é ü 日本 🙂",
	"<html>&amp;</html>",
	"",
}

func entry(id, body string, attrs map[string]types.MessageAttributeValue) types.SendMessageBatchRequestEntry {
	return types.SendMessageBatchRequestEntry{Id: aws.String(id), MessageBody: aws.String(body), MessageAttributes: attrs}
}

func stringAttr(dataType, v string) types.MessageAttributeValue {
	return types.MessageAttributeValue{DataType: aws.String(dataType), StringValue: aws.String(v)}
}

// TestBatchProtocolSameRequest: the hand-written SendMessageBatch is the
// SDK's, byte for byte where the SDK's order is fixed (one attribute or
// none), as JSON where it is not, with the same headers.
func TestBatchProtocolSameRequest(t *testing.T) {
	url := "http://sqs.test/000000000000/q"
	var ins []*awssqs.SendMessageBatchInput
	for _, s := range awkward {
		ins = append(ins,
			&awssqs.SendMessageBatchInput{QueueUrl: aws.String(url), Entries: []types.SendMessageBatchRequestEntry{entry("0", s, nil)}},
			&awssqs.SendMessageBatchInput{QueueUrl: aws.String(url), Entries: []types.SendMessageBatchRequestEntry{
				entry("0", "x", map[string]types.MessageAttributeValue{"event": stringAttr("String", s+"x")})}})
	}
	fifo := entry("1", "body", map[string]types.MessageAttributeValue{"type": stringAttr("String", "keyevent")})
	fifo.MessageGroupId, fifo.MessageDeduplicationId = aws.String("group\"1"), aws.String("01HZX")
	ins = append(ins, &awssqs.SendMessageBatchInput{QueueUrl: aws.String(url + ".fifo"), Entries: []types.SendMessageBatchRequestEntry{
		entry("0", "a", nil), fifo}})
	multi := map[string]types.MessageAttributeValue{"type": stringAttr("String", "keyevent"),
		"event": stringAttr("String", "set"), "db": stringAttr("Number", "0")}
	var full []types.SendMessageBatchRequestEntry
	for i := range 10 {
		full = append(full, entry(string(rune('0'+i)), `{"type":"keyevent","key":"session:`+strings.Repeat("k", i)+`"}`, multi))
	}
	ins = append(ins, &awssqs.SendMessageBatchInput{QueueUrl: aws.String(url), Entries: full})

	for i, in := range ins {
		if !plainBatch(in) {
			t.Fatalf("input %d: not plain", i)
		}
		want, got := sent(t, false, in), sent(t, true, in)
		multiAttrs := slices.ContainsFunc(in.Entries, func(e types.SendMessageBatchRequestEntry) bool { return len(e.MessageAttributes) > 1 })
		if !multiAttrs && !bytes.Equal(got.body, want.body) {
			t.Errorf("input %d: body\n got %q\nwant %q", i, got.body, want.body)
		}
		var g, w any
		if err := json.Unmarshal(got.body, &g); err != nil {
			t.Fatalf("input %d: %v: %q", i, err, got.body)
		}
		if err := json.Unmarshal(want.body, &w); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("input %d: JSON\n got %s\nwant %s", i, got.body, want.body)
		}
		for _, h := range []string{"Authorization", "X-Amz-Date"} { // signed over the body and the time
			got.header.Del(h)
			want.header.Del(h)
		}
		if !reflect.DeepEqual(got.header, want.header) {
			t.Errorf("input %d: headers\n got %v\nwant %v", i, got.header, want.header)
		}
	}
}

// TestBatchProtocolFallsBack: an entry with anything the hand path does not
// write goes to the SDK's serializer, and is sent in full.
func TestBatchProtocolFallsBack(t *testing.T) {
	url := aws.String("http://sqs.test/000000000000/q")
	delayed := entry("0", "a", nil)
	delayed.DelaySeconds = 5
	system := entry("0", "a", nil)
	system.MessageSystemAttributes = map[string]types.MessageSystemAttributeValue{"AWSTraceHeader": {DataType: aws.String("String"), StringValue: aws.String("Root=1")}}
	binary := entry("0", "a", map[string]types.MessageAttributeValue{"b": {DataType: aws.String("Binary"), BinaryValue: []byte{1, 2}}})
	for i, e := range []types.SendMessageBatchRequestEntry{delayed, system, binary} {
		in := &awssqs.SendMessageBatchInput{QueueUrl: url, Entries: []types.SendMessageBatchRequestEntry{e}}
		if plainBatch(in) {
			t.Fatalf("entry %d: plain", i)
		}
		want, got := sent(t, false, in), sent(t, true, in)
		if !bytes.Equal(got.body, want.body) {
			t.Errorf("entry %d: body\n got %q\nwant %q", i, got.body, want.body)
		}
	}
}

// TestBatchProtocolCoversTypes fails when the SDK's request types gain a
// field: plainBatch and appendBatch must then learn it (or refuse it).
func TestBatchProtocolCoversTypes(t *testing.T) {
	for _, c := range []struct {
		v      any
		fields []string
	}{
		{awssqs.SendMessageBatchInput{}, []string{"Entries", "QueueUrl"}},
		{types.SendMessageBatchRequestEntry{}, []string{"Id", "MessageBody", "DelaySeconds", "MessageAttributes",
			"MessageDeduplicationId", "MessageGroupId", "MessageSystemAttributes"}},
		{types.MessageAttributeValue{}, []string{"DataType", "BinaryListValues", "BinaryValue", "StringListValues", "StringValue"}},
	} {
		var got []string
		for f := range reflect.TypeOf(c.v).Fields() {
			if f.IsExported() {
				got = append(got, f.Name)
			}
		}
		slices.Sort(got)
		slices.Sort(c.fields)
		if !slices.Equal(got, c.fields) {
			t.Errorf("%T: fields %v, the hand-written SendMessageBatch knows %v", c.v, got, c.fields)
		}
	}
}

// outcome is what the sink reads of a SendMessageBatch answer.
type outcome struct {
	Succeeded []string
	Failed    [][4]string
	Err       bool
}

func readAnswer(t *testing.T, hand bool, status int, answer string) outcome {
	t.Helper()
	var log []exchange
	in := &awssqs.SendMessageBatchInput{QueueUrl: aws.String("http://sqs.test/000000000000/q"),
		Entries: []types.SendMessageBatchRequestEntry{entry("0", "a", nil)}}
	out, err := recordingClient(hand, status, answer, &log).SendMessageBatch(context.Background(), in)
	if err != nil {
		return outcome{Err: true}
	}
	var o outcome
	for _, e := range out.Successful {
		o.Succeeded = append(o.Succeeded, aws.ToString(e.Id))
	}
	for _, f := range out.Failed {
		sender := "false"
		if f.SenderFault {
			sender = "true"
		}
		o.Failed = append(o.Failed, [4]string{aws.ToString(f.Id), aws.ToString(f.Code), aws.ToString(f.Message), sender})
	}
	return o
}

// TestBatchProtocolSameAnswer: the hand-read answer gives the sink what the
// SDK's reading gives it, including answers it leaves to the SDK.
func TestBatchProtocolSameAnswer(t *testing.T) {
	for i, answer := range []string{
		`{"Successful":[{"Id":"0","MessageId":"6c5a3b1e","MD5OfMessageBody":"0cc175b9c0f1b6a831c399e269772661"},{"Id":"1","MessageId":"x"}]}`,
		`{"Failed":[{"Id":"3","Code":"InternalError","Message":"try again","SenderFault":false},{"Id":"12","Code":"InvalidMessageContents","SenderFault":true}],"Successful":[]}`,
		` { "Successful" : [ { "Id" : "id-42" , "SequenceNumber":"18849" } ] , "Other": {"a":[1,-2.5e3,true,null,"q\"\\u00e9"]}, "Failed" : null } `,
		`{"Failed":[{"Id":"0","Code":"E","Message":"with \"escapes\" \u00e9","SenderFault":true}]}`,
		`{"Successful":[{"Id":"\u0030"}]}`,
		`{}`,
		``,
		`{"Successful":[{"Id":"0"}]`,
		`{"Successful":[{"Id":"0"}]} trailing`,
		`not json`,
	} {
		want, got := readAnswer(t, false, 200, answer), readAnswer(t, true, 200, answer)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("answer %d %q:\n got %+v\nwant %+v", i, answer, got, want)
		}
	}
	errAnswer := `{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"The specified queue does not exist."}`
	if got := readAnswer(t, true, 400, errAnswer); !got.Err {
		t.Errorf("an error answer read as %+v", got)
	}
}

// FuzzReadBatchResult: whatever the answer, the hand reader does not panic,
// and what it accepts, the SDK reads the same.
func FuzzReadBatchResult(f *testing.F) {
	f.Add(`{"Successful":[{"Id":"0"}],"Failed":[{"Id":"1","Code":"c","Message":"m","SenderFault":true}]}`)
	f.Add(`{"a":{"b":[1,2,{"c":"\""}]}}`)
	f.Fuzz(func(t *testing.T, answer string) {
		var o awssqs.SendMessageBatchOutput
		if !readBatchResult([]byte(answer), &o) {
			return
		}
		if want, got := readAnswer(t, false, 200, answer), readAnswer(t, true, 200, answer); !reflect.DeepEqual(got, want) {
			t.Errorf("%q:\n got %+v\nwant %+v", answer, got, want)
		}
	})
}

// BenchmarkAppendBatch is the hand-written body of a SendMessageBatch of 10
// typical records (~200-byte JSON bodies, three attributes each).
func BenchmarkAppendBatch(b *testing.B) {
	attrs := map[string]types.MessageAttributeValue{"type": stringAttr("String", "keyevent"),
		"event": stringAttr("String", "set"), "db": stringAttr("Number", "0")}
	in := &awssqs.SendMessageBatchInput{QueueUrl: aws.String("https://sqs.us-east-1.amazonaws.com/123456789012/keyrelay")}
	for i := range 10 {
		in.Entries = append(in.Entries, entry(string(rune('0'+i)), `{"type":"keyevent","id":"01JF3Z4W8Q2N5V7X9A1B3C5D7E","time":"2026-12-02T09:10:00.123456Z","source":"my-cache.abc123.ng.0001.use1.cache.amazonaws.com:6379","db":0,"event":"set","key":"session:100000000000"}`, attrs))
	}
	b.ReportAllocs()
	var n int
	for b.Loop() {
		n = len(appendBatch(make([]byte, 0, batchSize(in)), in))
	}
	b.ReportMetric(float64(n), "bytes")
}
