package awsbatch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/keyrelay/keyrelay/bridge"
)

// scripted is a Transport that answers from memory: attributes with a
// MaximumMessageSize, batches with send.
type scripted struct {
	id      string
	maxSize string
	send    func(n int, msgs []Message) ([]string, []Failure, error)

	mu   sync.Mutex
	sent [][]Message
}

func (t *scripted) Target() Target {
	return Target{Service: "sqs", Kind: "queue", ID: t.id, SendOp: "SendMessageBatch",
		IsNotFound: func(error) bool { return false }, DefaultMessageBytes: 1 << 20}
}

func (t *scripted) SendBatch(_ context.Context, msgs []Message) ([]string, []Failure, error) {
	t.mu.Lock()
	n := len(t.sent)
	t.sent = append(t.sent, msgs)
	t.mu.Unlock()
	return t.send(n, msgs)
}

func (t *scripted) Attributes(context.Context) (map[string]string, error) {
	return map[string]string{"MaximumMessageSize": t.maxSize}, nil
}

func (t *scripted) ProbeSend(context.Context) error { return nil }

// newScripted returns a sink over t whose limits are read.
func newScripted(tb testing.TB, t *scripted, opt Options) *Sink {
	s, err := New(t, opt)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close(context.Background()) })
	s.Limits()
	return s
}

// allOK answers every message as accepted.
func allOK(_ int, msgs []Message) ([]string, []Failure, error) {
	ids := make([]string, len(msgs))
	for i := range msgs {
		ids[i] = EntryID(i)
	}
	return ids, nil, nil
}

// TestPublishPackedOutcomes maps message outcomes onto entries: all entries
// of a failed message fail with its error (permanent for a sender fault),
// the entries of a successful one are not listed, and a failed single
// request comes back as its own error, classified.
func TestPublishPackedOutcomes(t *testing.T) {
	batch := packEntries(30, func(i int) string { return fmt.Sprint("k", i) }) // 6 groups: event × db
	tr := &scripted{id: "q", maxSize: "1048576", send: func(int, []Message) ([]string, []Failure, error) {
		return []string{"0", "2", "3", "4"}, []Failure{
			{ID: "1", Code: "InternalError", SenderFault: false},
			{ID: "5", Code: "InvalidParameterValue", SenderFault: true},
		}, nil
	}}
	s := newScripted(t, tr, Options{Pack: PackNDJSON})
	err := s.Publish(context.Background(), batch)
	var pe *bridge.PartialError
	if !errors.As(err, &pe) || len(tr.sent) != 1 || len(tr.sent[0]) != 6 {
		t.Fatalf("Publish = %v after %d requests", err, len(tr.sent))
	}
	want := map[int]bool{}
	for _, i := range tr.sent[0][1].Entries {
		want[i] = false
	}
	for _, i := range tr.sent[0][5].Entries {
		want[i] = true
	}
	got := map[int]bool{}
	for _, f := range pe.Failed {
		got[f.Index] = bridge.IsPermanent(f.Err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("failed entries (index: permanent) %v, want %v", got, want)
	}

	reqErr := errors.New("throttled")
	tr.send = func(int, []Message) ([]string, []Failure, error) { return nil, nil, reqErr }
	err = s.Publish(context.Background(), batch)
	if !errors.Is(err, reqErr) || errors.As(err, &pe) || bridge.IsPermanent(err) {
		t.Errorf("failed request: %v, want its error, retryable", err)
	}
}

// TestPublishSplits: a batch larger than the target's request takes more
// than one request. On a standard target a failed request does not stop the
// others; on a FIFO target nothing is sent after it, and the entries not
// sent fail retryably.
func TestPublishSplits(t *testing.T) {
	batch := packEntries(10, func(i int) string { return fmt.Sprint("k", i) })
	failFirst := func(n int, msgs []Message) ([]string, []Failure, error) {
		if n == 0 {
			return nil, nil, errors.New("connection reset")
		}
		return allOK(n, msgs)
	}
	for _, fifo := range []bool{false, true} {
		id := "q"
		if fifo {
			id = "q.fifo"
		}
		t.Run(id, func(t *testing.T) {
			// Requests of 1 KiB: a few records each.
			tr := &scripted{id: id, maxSize: "1024", send: failFirst}
			s := newScripted(t, tr, Options{})
			err := s.Publish(context.Background(), batch)
			var pe *bridge.PartialError
			if !errors.As(err, &pe) {
				t.Fatalf("Publish = %v, want a partial error", err)
			}
			first := len(tr.sent[0])
			if fifo && (len(tr.sent) != 1 || len(pe.Failed) != len(batch)) {
				t.Errorf("FIFO: %d requests, %d failed entries; want 1 request, every entry failed", len(tr.sent), len(pe.Failed))
			}
			if !fifo && (len(tr.sent) < 2 || len(pe.Failed) != first) {
				t.Errorf("standard: %d requests, %d failed entries; want all requests sent, the %d entries of the first failed",
					len(tr.sent), len(pe.Failed), first)
			}
			for _, f := range pe.Failed {
				if bridge.IsPermanent(f.Err) {
					t.Errorf("entry %d failed for good: %v", f.Index, f.Err)
				}
				if f.Index >= first && !strings.Contains(f.Err.Error(), "not sent") {
					t.Errorf("entry %d: %v, want a not-sent error", f.Index, f.Err)
				}
			}
		})
	}
}

// TestPublishHoldsBack: while the limits are unknown, a record over the
// smallest message size fails retryably, unsent, with the reason; once
// known, one over the target's size is refused for good.
func TestPublishHoldsBack(t *testing.T) {
	small := packEntries(1, func(int) string { return "k" })[0]
	big := packEntries(1, func(int) string { return strings.Repeat("k", 1500) })[0]
	tr := &scripted{id: "q", maxSize: "2048", send: allOK}
	s := newScripted(t, tr, Options{})

	setSizes(s, false, MinMessageSize)
	err := s.Publish(context.Background(), []*bridge.Entry{small, big})
	var pe *bridge.PartialError
	if !errors.As(err, &pe) || len(pe.Failed) != 1 || pe.Failed[0].Index != 1 || bridge.IsPermanent(pe.Failed[0].Err) ||
		!strings.Contains(pe.Failed[0].Err.Error(), "held back") {
		t.Fatalf("Publish with unknown limits = %v, want entry 1 held back", err)
	}
	if len(tr.sent) != 1 || len(tr.sent[0]) != 1 {
		t.Errorf("sent %d requests, want the small entry alone", len(tr.sent))
	}

	setSizes(s, true, 1024)
	err = s.Publish(context.Background(), []*bridge.Entry{small, big})
	var tl *TooLargeError
	if !errors.As(err, &pe) || len(pe.Failed) != 1 || !bridge.IsPermanent(pe.Failed[0].Err) || !errors.As(pe.Failed[0].Err, &tl) {
		t.Fatalf("Publish with known limits = %v, want entry 1 refused for good", err)
	}
}

// setSizes makes s believe its target's MaximumMessageSize is maxMessage,
// read or not.
func setSizes(s *Sink, known bool, maxMessage int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.known, s.cur = known, s.target.sizesFor(maxMessage)
}
