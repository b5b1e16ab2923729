package awsbatch

import (
	"context"

	"github.com/keyrelay/keyrelay/bridge"
)

// split makes one message of each entry of batch, with its FIFO ids on a
// FIFO target, and groups the messages into requests (chunk). Entries whose
// message exceeds sz.msg are refused, permanently (a *TooLargeError).
func (s *Sink) split(batch []*bridge.Entry, sz sizes) (requests [][]Message, refused []bridge.EntryError) {
	index := make([]int, len(batch))
	msgs := make([]Message, 0, len(batch))
	attrs := make([]Attribute, 0, MaxRecordAttributes*len(batch)) // one array for the batch's attributes
	for i, e := range batch {
		index[i] = i
		start := len(attrs)
		attrs = AppendAttributes(attrs, &e.Record)
		m := Message{Entries: index[i : i+1 : i+1], Body: e.Body, Attrs: attrs[start:len(attrs):len(attrs)], Size: EntrySize(e)}
		if m.Size > sz.msg {
			refused = append(refused, bridge.EntryError{Index: i, Err: bridge.Permanent(&TooLargeError{Size: m.Size, Max: sz.msg})})
			continue
		}
		if s.fifo {
			m.GroupID, m.DeduplicationID = s.opt.GroupBy.GroupID(&e.Record), e.Record.ID
		}
		msgs = append(msgs, m)
	}
	return chunk(msgs, sz.req), refused
}

// chunk groups msgs, in order, into requests of at most MaxBatchEntries
// messages and reqCap bytes.
func chunk(msgs []Message, reqCap int) [][]Message {
	var requests [][]Message
	start, size := 0, 0
	for i, m := range msgs {
		if i > start && (i-start == MaxBatchEntries || size+m.Size > reqCap) {
			requests = append(requests, msgs[start:i:i])
			start, size = i, 0
		}
		size += m.Size
	}
	if start < len(msgs) {
		requests = append(requests, msgs[start:])
	}
	return requests
}

// send sends requests, one attempt each, in order, and maps every message's
// outcome onto its records: all records of a failed message fail with that
// message's error (see batchFailures), and a request that fails as a whole
// fails each of its records with its error (see requestError). refused are
// failures found before sending. When the batch was one request, refused
// nothing, and that request failed as a whole, its error is returned as is.
//
// On a FIFO target send stops at the first request that is not wholly
// accepted: the records of the later ones fail retryably, unsent, so that
// no record is sent ahead of an earlier one of its group that must be
// resent.
func (s *Sink) send(ctx context.Context, requests [][]Message, refused []bridge.EntryError) error {
	failed := refused
	var stopped error
	for _, msgs := range requests {
		if stopped != nil {
			failed = appendFailed(failed, msgs, stopped)
			continue
		}
		fails, err := s.sendRequest(ctx, msgs)
		if err != nil {
			if len(requests) == 1 && len(failed) == 0 {
				return err
			}
			failed = appendFailed(failed, msgs, err)
		}
		for _, f := range fails {
			for _, i := range msgs[f.Index].Entries {
				failed = append(failed, bridge.EntryError{Index: i, Err: f.Err})
			}
		}
		if s.fifo && (err != nil || len(fails) > 0) {
			stopped = s.errorf("not sent: an earlier request of the batch failed, and a FIFO %s must receive each group in order", s.target.Kind)
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return &bridge.PartialError{Failed: failed}
}

// sendRequest makes one batch request of msgs and returns the failures of
// its messages (indexes into msgs), or the classified error of the whole
// request.
func (s *Sink) sendRequest(ctx context.Context, msgs []Message) ([]bridge.EntryError, error) {
	ctx, cancel := attemptContext(ctx, s.opt.AttemptTimeout)
	defer cancel()
	succeeded, failed, err := s.t.SendBatch(ctx, msgs)
	if err != nil {
		return nil, requestError(s.target.Service, s.target.SendOp, err)
	}
	return batchFailures(s.target.Service, len(msgs), succeeded, failed), nil
}

// appendFailed fails every record of msgs with err.
func appendFailed(failed []bridge.EntryError, msgs []Message, err error) []bridge.EntryError {
	for _, m := range msgs {
		for _, i := range m.Entries {
			failed = append(failed, bridge.EntryError{Index: i, Err: err})
		}
	}
	return failed
}
