package sqs

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"sync"
	"unicode/utf8"

	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// batchProtocol is the client's protocol (awsJson 1.0) with
// SendMessageBatch's request body written, and its successful answer read,
// by hand: the SDK's schema-driven serializer grows its buffer by doubling
// and walks every field through interfaces, and its deserializer allocates
// every field of every result entry, about 130 allocations and 35 KB per
// request of 10 records together. Everything else goes to the SDK's
// protocol: other operations, errors, and any request or answer the hand
// path does not cover.
//
// The request is the SDK's, byte for byte up to the order of its JSON
// members: the same headers (learnt from the SDK's protocol on the first
// request), the same members, strings escaped as the SDK escapes them
// (see appendString). Entries that set anything keyrelay does not
// send (delays, system attributes, binary or list attributes) go to the
// SDK's serializer, and TestBatchProtocolCoversTypes fails when an SDK
// upgrade adds a field the hand path would not send.
//
// The answer's Successful entries get their Id only, and its Failed entries
// their Id, Code, Message and SenderFault: what the sink reads
// (awsbatch.Results). An answer it cannot read simply (escaped Ids or
// codes, a malformed body) is read by the SDK's protocol.
type batchProtocol struct {
	smithyhttp.ClientProtocol

	once    sync.Once
	headers http.Header // what the SDK's protocol sets on a SendMessageBatch request
	err     error
}

func newBatchProtocol(next smithyhttp.ClientProtocol) smithyhttp.ClientProtocol {
	if next == nil {
		return nil
	}
	if p, ok := next.(*batchProtocol); ok {
		return p
	}
	return &batchProtocol{ClientProtocol: next}
}

// SerializeRequest implements smithyhttp.ClientProtocol.
func (p *batchProtocol) SerializeRequest(ctx context.Context, schema *smithy.OperationSchema, in smithy.Serializable, req *smithyhttp.Request) error {
	batch, ok := in.(*awssqs.SendMessageBatchInput)
	if !ok || !plainBatch(batch) {
		return p.ClientProtocol.SerializeRequest(ctx, schema, in, req)
	}
	p.once.Do(func() { p.headers, p.err = p.learnHeaders(ctx, schema) })
	if p.err != nil {
		return p.ClientProtocol.SerializeRequest(ctx, schema, in, req)
	}
	req.Method = http.MethodPost
	if len(req.URL.Path) == 0 {
		req.URL.Path = "/"
	}
	for k, v := range p.headers {
		req.Header[k] = append([]string(nil), v...)
	}
	sreq, err := req.SetStream(bytes.NewReader(appendBatch(make([]byte, 0, batchSize(batch)), batch)))
	if err != nil {
		return err
	}
	*req = *sreq
	return nil
}

// learnHeaders serializes an empty SendMessageBatch with the SDK's protocol
// and returns the headers it set.
func (p *batchProtocol) learnHeaders(ctx context.Context, schema *smithy.OperationSchema) (http.Header, error) {
	req := smithyhttp.NewStackRequest().(*smithyhttp.Request)
	if err := p.ClientProtocol.SerializeRequest(ctx, schema, &awssqs.SendMessageBatchInput{}, req); err != nil {
		return nil, err
	}
	h := req.Header.Clone()
	h.Del("Content-Length")
	return h, nil
}

// DeserializeResponse implements smithyhttp.ClientProtocol.
func (p *batchProtocol) DeserializeResponse(ctx context.Context, schema *smithy.OperationSchema, types *smithy.TypeRegistry,
	resp *smithyhttp.Response, out smithy.Deserializable) error {
	o, ok := out.(*awssqs.SendMessageBatchOutput)
	if !ok || resp.StatusCode < 200 || resp.StatusCode >= 300 || resp.Body == nil {
		return p.ClientProtocol.DeserializeResponse(ctx, schema, types, resp, out)
	}
	buf := bodyBufs.Get().(*bytes.Buffer)
	defer bodyBufs.Put(buf)
	buf.Reset()
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return &smithy.DeserializationError{Err: err}
	}
	if readBatchResult(buf.Bytes(), o) {
		return nil
	}
	*o = awssqs.SendMessageBatchOutput{}
	resp.Body = io.NopCloser(bytes.NewReader(bytes.Clone(buf.Bytes())))
	return p.ClientProtocol.DeserializeResponse(ctx, schema, types, resp, out)
}

// bodyBufs hold answers while they are read: nothing read keeps their
// bytes.
var bodyBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// plainBatch reports whether the hand path writes in as the SDK would: a
// queue URL, and entries with an Id, a body, string attributes and FIFO
// ids at most.
func plainBatch(in *awssqs.SendMessageBatchInput) bool {
	if in.QueueUrl == nil || len(in.Entries) == 0 {
		return false
	}
	for i := range in.Entries {
		e := &in.Entries[i]
		if e.Id == nil || e.MessageBody == nil || e.DelaySeconds != 0 || e.MessageSystemAttributes != nil {
			return false
		}
		for _, v := range e.MessageAttributes {
			if v.DataType == nil || v.StringValue == nil || v.BinaryValue != nil || v.BinaryListValues != nil || v.StringListValues != nil {
				return false
			}
		}
	}
	return true
}

// batchSize is a capacity for in's body that escaping rarely exceeds.
func batchSize(in *awssqs.SendMessageBatchInput) int {
	n := 32 + len(*in.QueueUrl)
	for i := range in.Entries {
		e := &in.Entries[i]
		n += 64 + len(*e.Id) + len(*e.MessageBody)*9/8
		for k, v := range e.MessageAttributes {
			n += 48 + len(k) + len(*v.DataType) + len(*v.StringValue)
		}
		if e.MessageGroupId != nil {
			n += 24 + len(*e.MessageGroupId)
		}
		if e.MessageDeduplicationId != nil {
			n += 32 + len(*e.MessageDeduplicationId)
		}
	}
	return n
}

// appendBatch appends in's JSON body (plainBatch) to b, members in the
// SDK's order (by name; a map's in its iteration order).
func appendBatch(b []byte, in *awssqs.SendMessageBatchInput) []byte {
	b = append(b, `{"Entries":[`...)
	for i := range in.Entries {
		e := &in.Entries[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"Id":`...)
		b = appendString(b, *e.Id)
		if e.MessageAttributes != nil {
			b = append(b, `,"MessageAttributes":{`...)
			first := true
			for k, v := range e.MessageAttributes {
				if !first {
					b = append(b, ',')
				}
				first = false
				b = appendString(b, k)
				b = append(b, `:{"DataType":`...)
				b = appendString(b, *v.DataType)
				b = append(b, `,"StringValue":`...)
				b = appendString(b, *v.StringValue)
				b = append(b, '}')
			}
			b = append(b, '}')
		}
		b = append(b, `,"MessageBody":`...)
		b = appendString(b, *e.MessageBody)
		if e.MessageDeduplicationId != nil {
			b = append(b, `,"MessageDeduplicationId":`...)
			b = appendString(b, *e.MessageDeduplicationId)
		}
		if e.MessageGroupId != nil {
			b = append(b, `,"MessageGroupId":`...)
			b = appendString(b, *e.MessageGroupId)
		}
		b = append(b, '}')
	}
	b = append(b, `],"QueueUrl":`...)
	b = appendString(b, *in.QueueUrl)
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, escaped as the SDK's JSON
// serializer escapes it: quote, backslash, control characters and DEL
// escaped (\n, \r, \t or \u00XX), U+2028 and U+2029 escaped, each invalid
// UTF-8 byte replaced by U+FFFD, the rest as it is.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < 0x7f {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			switch {
			case r == utf8.RuneError && size == 1:
				b = append(b, s[start:i]...)
				b = utf8.AppendRune(b, utf8.RuneError)
			case r == '\u2028' || r == '\u2029':
				b = append(b, s[start:i]...)
				b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			default:
				i += size
				continue
			}
			i += size
			start = i
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// readBatchResult reads a SendMessageBatch answer into o (the Ids of the
// Successful entries; Id, Code, Message and SenderFault of the Failed
// ones). It reports false, leaving o partly set, when data is not a JSON
// object it reads simply: a string it needs holds an escape, or the JSON is
// malformed.
func readBatchResult(data []byte, o *awssqs.SendMessageBatchOutput) bool {
	r := jsonReader{data: data}
	ok := r.object(func(key []byte) bool {
		switch string(key) {
		case "Successful":
			return r.array(func() bool {
				var e types.SendMessageBatchResultEntry
				ok := r.object(func(key []byte) bool {
					if string(key) == "Id" {
						return r.stringPtr(&e.Id)
					}
					return r.skip()
				})
				if o.Successful == nil {
					o.Successful = make([]types.SendMessageBatchResultEntry, 0, maxEntries)
				}
				o.Successful = append(o.Successful, e)
				return ok
			})
		case "Failed":
			return r.array(func() bool {
				var e types.BatchResultErrorEntry
				ok := r.object(func(key []byte) bool {
					switch string(key) {
					case "Id":
						return r.stringPtr(&e.Id)
					case "Code":
						return r.stringPtr(&e.Code)
					case "Message":
						return r.stringPtr(&e.Message)
					case "SenderFault":
						return r.boolean(&e.SenderFault)
					}
					return r.skip()
				})
				o.Failed = append(o.Failed, e)
				return ok
			})
		}
		return r.skip()
	})
	r.space()
	return ok && r.i == len(r.data)
}

// maxEntries is SendMessageBatch's limit on entries, the capacity the
// Successful list starts with.
const maxEntries = 10

// jsonReader reads the JSON of a SendMessageBatch answer: objects, arrays,
// strings without escapes where they are read, anything where it is
// skipped.
type jsonReader struct {
	data []byte
	i    int
}

func (r *jsonReader) space() {
	for r.i < len(r.data) {
		switch r.data[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

// consume skips spaces and then c, or reports false.
func (r *jsonReader) consume(c byte) bool {
	r.space()
	if r.i < len(r.data) && r.data[r.i] == c {
		r.i++
		return true
	}
	return false
}

// object reads an object, calling member for each key with the reader at
// its value; null is an object without members.
func (r *jsonReader) object(member func(key []byte) bool) bool {
	if r.literal("null") {
		return true
	}
	if !r.consume('{') {
		return false
	}
	if r.consume('}') {
		return true
	}
	for {
		r.space()
		key, ok := r.rawString()
		if !ok || !r.consume(':') || !member(key) {
			return false
		}
		if r.consume(',') {
			continue
		}
		return r.consume('}')
	}
}

// array reads an array, calling elem for each element; null is an empty
// array.
func (r *jsonReader) array(elem func() bool) bool {
	if r.literal("null") {
		return true
	}
	if !r.consume('[') {
		return false
	}
	if r.consume(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if r.consume(',') {
			continue
		}
		return r.consume(']')
	}
}

// rawString reads a string without escapes and returns its bytes.
func (r *jsonReader) rawString() ([]byte, bool) {
	if r.i >= len(r.data) || r.data[r.i] != '"' {
		return nil, false
	}
	end := bytes.IndexByte(r.data[r.i+1:], '"')
	if end < 0 {
		return nil, false
	}
	s := r.data[r.i+1 : r.i+1+end]
	if bytes.IndexByte(s, '\\') >= 0 || !utf8.Valid(s) {
		return nil, false
	}
	for _, c := range s {
		if c < 0x20 {
			return nil, false
		}
	}
	r.i += end + 2
	return s, true
}

// stringPtr reads a string without escapes, or null, into *p. The Ids of a
// full batch are shared, not allocated.
func (r *jsonReader) stringPtr(p **string) bool {
	if r.literal("null") {
		*p = nil
		return true
	}
	r.space()
	s, ok := r.rawString()
	if !ok {
		return false
	}
	if len(s) == 1 && s[0] >= '0' && s[0] <= '9' {
		*p = &digitIDs[s[0]-'0']
	} else {
		v := string(s)
		*p = &v
	}
	return true
}

// digitIDs are the entry Ids "0" to "9" of awsbatch.EntryID.
var digitIDs = func() (ids [10]string) {
	for i := range ids {
		ids[i] = strconv.Itoa(i)
	}
	return ids
}()

func (r *jsonReader) boolean(p *bool) bool {
	switch {
	case r.literal("true"):
		*p = true
	case r.literal("false"), r.literal("null"):
		*p = false
	default:
		return false
	}
	return true
}

// literal consumes word (after spaces) if it is next.
func (r *jsonReader) literal(word string) bool {
	r.space()
	if bytes.HasPrefix(r.data[r.i:], []byte(word)) {
		r.i += len(word)
		return true
	}
	return false
}

// skip skips one value of any kind.
func (r *jsonReader) skip() bool {
	r.space()
	if r.i >= len(r.data) {
		return false
	}
	switch c := r.data[r.i]; {
	case c == '{':
		return r.object(func([]byte) bool { return r.skip() })
	case c == '[':
		return r.array(r.skip)
	case c == '"':
		for i := r.i + 1; i < len(r.data); i++ {
			switch c := r.data[i]; {
			case c == '"':
				r.i = i + 1
				return true
			case c < 0x20:
				return false
			case c == '\\':
				if i+1 >= len(r.data) {
					return false
				}
				switch r.data[i+1] {
				case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
					i++
				case 'u':
					if i+6 > len(r.data) {
						return false
					}
					if _, err := strconv.ParseUint(string(r.data[i+2:i+6]), 16, 16); err != nil {
						return false
					}
					i += 5
				default:
					return false
				}
			}
		}
		return false
	case c == 't':
		return r.literal("true")
	case c == 'f':
		return r.literal("false")
	case c == 'n':
		return r.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		start := r.i
		for r.i < len(r.data) && bytes.IndexByte([]byte("+-.eE0123456789"), r.data[r.i]) >= 0 {
			r.i++
		}
		_, err := strconv.ParseFloat(string(r.data[start:r.i]), 64)
		return err == nil
	}
	return false
}
