package awsbatch_test

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// sentMessage is one batch entry as a fake server received it.
type sentMessage struct {
	ID, Body string
	Attrs    map[string][2]string // name -> data type, string value
}

// failure is one entry of a scripted response's Failed list.
type failure struct {
	ID          string
	SenderFault bool
	Code        string
	Message     string
}

// apiError is an error response as the service sends it.
type apiError struct {
	Status   int
	Code     string // the error code (SQS: the query-compatible code)
	JSONType string // SQS only: the JSON __type
	Fault    string // Sender or Receiver
	Message  string
}

// reply scripts the answer to one batch request: per-entry failures in a
// 200 answer, an error of the whole request, or no answer until the client
// gives up.
type reply struct {
	failed []failure
	err    *apiError
	hang   bool
}

// protocol is a service's wire protocol, as the SDK speaks it.
type protocol interface {
	// decode names the request's operation ("attributes", "batch", or the
	// service's name for another) and returns a batch's entries.
	decode(r *http.Request) (op string, msgs []sentMessage, err error)
	writeBatch(w http.ResponseWriter, msgs []sentMessage, failed []failure)
	writeAttributes(w http.ResponseWriter, r *http.Request, attrs map[string]string)
	writeError(w http.ResponseWriter, e apiError)
}

// fakeServer answers attribute reads and batch requests as scripted and
// records every batch request (Check's empty probe included).
type fakeServer struct {
	proto protocol
	// attrs answers the n-th attribute read (0-based): the attributes, or
	// an error. nil: the default attributes of the kind.
	attrs        func(n int) (map[string]string, *apiError)
	defaultAttrs map[string]string
	// respond answers the n-th batch request; nil: every entry succeeds.
	respond func(n int, msgs []sentMessage) reply

	mu        sync.Mutex
	requests  [][]sentMessage
	attrsRead []bool // per request: had an attribute read succeeded before it
	attrCalls int
	attrsOK   bool
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	op, msgs, err := f.proto.decode(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	switch op {
	case "attributes":
		f.mu.Lock()
		n := f.attrCalls
		f.attrCalls++
		f.mu.Unlock()
		attrs, e := f.defaultAttrs, (*apiError)(nil)
		if f.attrs != nil {
			attrs, e = f.attrs(n)
		}
		if e != nil {
			f.proto.writeError(w, *e)
			return
		}
		f.mu.Lock()
		f.attrsOK = true
		f.mu.Unlock()
		f.proto.writeAttributes(w, r, attrs)
	case "batch":
		f.mu.Lock()
		n := len(f.requests)
		f.requests = append(f.requests, msgs)
		f.attrsRead = append(f.attrsRead, f.attrsOK)
		f.mu.Unlock()
		var rep reply
		if f.respond != nil {
			rep = f.respond(n, msgs)
		}
		switch {
		case rep.hang:
			select { // past the attempt timeout
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		case rep.err != nil:
			f.proto.writeError(w, *rep.err)
		default:
			f.proto.writeBatch(w, msgs, rep.failed)
		}
	default:
		f.proto.writeError(w, apiError{Status: http.StatusBadRequest, Code: "InvalidAction", JSONType: "InvalidAction",
			Fault: "Sender", Message: "unsupported operation " + op})
	}
}

// batches returns the batch requests received so far.
func (f *fakeServer) batches() [][]sentMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

// bodies returns the message bodies of each batch request.
func (f *fakeServer) bodies() [][]string {
	var out [][]string
	for _, req := range f.batches() {
		var bodies []string
		for _, m := range req {
			bodies = append(bodies, m.Body)
		}
		out = append(out, bodies)
	}
	return out
}

// attributeReads returns how many attribute reads the server answered.
func (f *fakeServer) attributeReads() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attrCalls
}

func succeeded(msgs []sentMessage, failed []failure) []sentMessage {
	return slices.DeleteFunc(slices.Clone(msgs), func(m sentMessage) bool {
		return slices.ContainsFunc(failed, func(f failure) bool { return f.ID == m.ID })
	})
}

// sqsProtocol is SQS's AWS JSON 1.0 with the query-compatible error header.
type sqsProtocol struct{}

func (sqsProtocol) decode(r *http.Request) (string, []sentMessage, error) {
	switch target := r.Header.Get("X-Amz-Target"); target {
	case "AmazonSQS.GetQueueAttributes":
		return "attributes", nil, nil
	case "AmazonSQS.SendMessageBatch":
		var in struct {
			Entries []struct {
				ID                string `json:"Id"`
				MessageBody       string
				MessageAttributes map[string]struct{ DataType, StringValue string }
			}
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			return "", nil, err
		}
		msgs := make([]sentMessage, len(in.Entries))
		for i, e := range in.Entries {
			msgs[i] = sentMessage{ID: e.ID, Body: e.MessageBody, Attrs: map[string][2]string{}}
			for name, a := range e.MessageAttributes {
				msgs[i].Attrs[name] = [2]string{a.DataType, a.StringValue}
			}
		}
		return "batch", msgs, nil
	default:
		return target, nil, nil
	}
}

func (sqsProtocol) writeBatch(w http.ResponseWriter, msgs []sentMessage, failed []failure) {
	type success struct {
		ID               string `json:"Id"`
		MessageId        string
		MD5OfMessageBody string
	}
	type fail struct {
		ID          string `json:"Id"`
		SenderFault bool
		Code        string
		Message     string
	}
	out := struct {
		Successful []success
		Failed     []fail
	}{Successful: []success{}, Failed: []fail{}}
	for _, m := range succeeded(msgs, failed) {
		sum := md5.Sum([]byte(m.Body)) // the SDK checks it
		out.Successful = append(out.Successful, success{m.ID, "msg-" + m.ID, hex.EncodeToString(sum[:])})
	}
	for _, f := range failed {
		out.Failed = append(out.Failed, fail(f))
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	_ = json.NewEncoder(w).Encode(out)
}

func (sqsProtocol) writeAttributes(w http.ResponseWriter, _ *http.Request, attrs map[string]string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	_ = json.NewEncoder(w).Encode(map[string]any{"Attributes": attrs})
}

func (sqsProtocol) writeError(w http.ResponseWriter, e apiError) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.Header().Set("x-amzn-query-error", e.Code+";"+e.Fault)
	w.WriteHeader(e.Status)
	fmt.Fprintf(w, `{"__type":%q,"message":%q}`, e.JSONType, e.Message)
}

// snsProtocol is SNS's query protocol: form-encoded requests, XML responses.
type snsProtocol struct{}

const snsXMLNS = `xmlns="http://sns.amazonaws.com/doc/2010-03-31/"`

func (snsProtocol) decode(r *http.Request) (string, []sentMessage, error) {
	if err := r.ParseForm(); err != nil {
		return "", nil, err
	}
	switch action := r.PostForm.Get("Action"); action {
	case "GetTopicAttributes":
		return "attributes", nil, nil
	case "PublishBatch":
		return "batch", parseSNSEntries(r.PostForm), nil
	default:
		return action, nil, nil
	}
}

// parseSNSEntries reads PublishBatchRequestEntries.member.N.* in the order
// of N.
func parseSNSEntries(form url.Values) []sentMessage {
	const prefix = "PublishBatchRequestEntries.member."
	byN := map[int]*sentMessage{}
	for k, v := range form {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		num, field, _ := strings.Cut(rest, ".")
		n, _ := strconv.Atoi(num)
		m := byN[n]
		if m == nil {
			m = &sentMessage{Attrs: map[string][2]string{}}
			byN[n] = m
		}
		switch {
		case field == "Id":
			m.ID = v[0]
		case field == "Message":
			m.Body = v[0]
		case strings.HasPrefix(field, "MessageAttributes.entry.") && strings.HasSuffix(field, ".Name"):
			base := strings.TrimSuffix(k, ".Name")
			m.Attrs[v[0]] = [2]string{form.Get(base + ".Value.DataType"), form.Get(base + ".Value.StringValue")}
		}
	}
	out := make([]sentMessage, 0, len(byN))
	for _, n := range slices.Sorted(maps.Keys(byN)) {
		out = append(out, *byN[n])
	}
	return out
}

func (snsProtocol) writeBatch(w http.ResponseWriter, msgs []sentMessage, failed []failure) {
	var b strings.Builder
	fmt.Fprintf(&b, `<PublishBatchResponse %s><PublishBatchResult><Successful>`, snsXMLNS)
	for _, m := range succeeded(msgs, failed) {
		fmt.Fprintf(&b, `<member><Id>%s</Id><MessageId>msg-%s</MessageId></member>`, m.ID, m.ID)
	}
	b.WriteString(`</Successful><Failed>`)
	for _, f := range failed {
		fmt.Fprintf(&b, `<member><Id>%s</Id><Code>%s</Code><Message>%s</Message><SenderFault>%t</SenderFault></member>`,
			f.ID, f.Code, html.EscapeString(f.Message), f.SenderFault)
	}
	b.WriteString(`</Failed></PublishBatchResult><ResponseMetadata><RequestId>r-2</RequestId></ResponseMetadata></PublishBatchResponse>`)
	w.Header().Set("Content-Type", "text/xml")
	fmt.Fprint(w, b.String())
}

func (snsProtocol) writeAttributes(w http.ResponseWriter, r *http.Request, attrs map[string]string) {
	var b strings.Builder
	fmt.Fprintf(&b, `<GetTopicAttributesResponse %s><GetTopicAttributesResult><Attributes>`, snsXMLNS)
	fmt.Fprintf(&b, `<entry><key>TopicArn</key><value>%s</value></entry>`, html.EscapeString(r.PostForm.Get("TopicArn")))
	for k, v := range attrs {
		fmt.Fprintf(&b, `<entry><key>%s</key><value>%s</value></entry>`, k, html.EscapeString(v))
	}
	b.WriteString(`</Attributes></GetTopicAttributesResult><ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata></GetTopicAttributesResponse>`)
	w.Header().Set("Content-Type", "text/xml")
	fmt.Fprint(w, b.String())
}

func (snsProtocol) writeError(w http.ResponseWriter, e apiError) {
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(e.Status)
	fmt.Fprintf(w, `<ErrorResponse %s><Error><Type>%s</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>r-3</RequestId></ErrorResponse>`,
		snsXMLNS, e.Fault, e.Code, html.EscapeString(e.Message))
}
