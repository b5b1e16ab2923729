package awsbatch_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/bridge/bridgetest"
	"github.com/keyrelay/keyrelay/sinks/awsbatch"
	"github.com/keyrelay/keyrelay/sinks/awsbatch/awsbatchtest"
	"github.com/keyrelay/keyrelay/sinks/sns"
	"github.com/keyrelay/keyrelay/sinks/sqs"
)

// TestFaults drives each sink through a bridge.Relay against a server that
// fails in scripted ways, with the service's real answers, and asserts
// exactly which entries are sent again: only the ones that failed
// retryably, unchanged; never an accepted one; a refused one is counted, not
// resent. Exactly two requests in the retried cases also proves that the SDK
// does not retry on its own.
func TestFaults(t *testing.T) {
	all := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	tests := []struct {
		name      string
		only      string    // a kind's name: the case is that service's own
		err       string    // the first request fails with the kind's error of this name; a kind without one skips the case
		hang      bool      // the first request gets no answer
		failed    []failure // else these entries of the first request fail
		resent    []int     // the entries of the second request; nil: none
		delivered float64
		rejected  float64
		retried   float64
	}{
		{
			name: "partial: retryable and sender-fault entries", only: sqs.Name,
			failed: []failure{
				{"3", false, "InternalError", "internal error"},
				{"6", true, "InvalidMessageContents", "invalid characters"},
				{"9", true, "KmsThrottled", "KMS is throttling"}, // target-side: retried
			},
			resent: []int{3, 9}, delivered: 10 - 1, rejected: 1, retried: 2,
		},
		{
			name: "partial: retryable and sender-fault entries", only: sns.Name,
			failed: []failure{
				{"2", false, "InternalError", "internal error"},
				{"5", true, "InvalidParameter", "Invalid parameter: Message too long"},
				{"7", true, "Throttled", "Rate exceeded"}, // target-side: retried
				{"8", false, "KMSThrottling", "KMS throttled"},
			},
			resent: []int{2, 7, 8}, delivered: 10 - 1, rejected: 1, retried: 3,
		},
		{name: "throttled batch", err: "throttled", resent: all, delivered: 10, retried: 10},
		{name: "KMS throttled batch", err: "kms throttled", resent: all, delivered: 10, retried: 10},
		{name: "throttling batch", err: "throttling", resent: all, delivered: 10, retried: 10},
		{name: "5xx", err: "internal", resent: all, delivered: 10, retried: 10},
		{name: "timeout", hang: true, resent: all, delivered: 10, retried: 10},
		{name: "access denied is retried: the operator can fix it", err: "denied", resent: all, delivered: 10, retried: 10},
		{name: "malformed request is rejected, not resent for ever", err: "too long", rejected: 10},
	}
	forEachKind(t, func(t *testing.T, k *kind) {
		for _, tc := range tests {
			apiErr, ok := k.errs[tc.err]
			if tc.only != "" && tc.only != k.name || tc.err != "" && !ok {
				continue
			}
			t.Run(tc.name, func(t *testing.T) {
				// Received now: the batch linger counts from a record's arrival.
				recs := awsbatchtest.Records(10)
				f := &fakeServer{respond: func(n int, _ []sentMessage) reply {
					switch {
					case n > 0:
						return reply{}
					case tc.hang:
						return reply{hang: true}
					case tc.err != "":
						return reply{err: &apiErr}
					}
					return reply{failed: tc.failed}
				}}
				c, target := k.startFake(t, f)
				s := k.open(t, c, target, awsbatch.Options{MaxInFlight: 1, AttemptTimeout: 300 * time.Millisecond})
				if got := s.Limits().MaxEntryBytes; got != 262144 {
					t.Errorf("MaxEntryBytes = %d on a 256 KiB target", got)
				}
				m := awsbatchtest.Deliver(t, s, recs)

				bodies := func(idx []int) []string {
					var out []string
					for _, i := range idx {
						out = append(out, awsbatchtest.Body(recs[i]))
					}
					return out
				}
				want := [][]string{bodies(all)}
				if tc.resent != nil {
					want = append(want, bodies(tc.resent))
				}
				if sent := f.bodies(); fmt.Sprint(sent) != fmt.Sprint(want) {
					t.Errorf("requests:\n%s\nwant:\n%s", flat(sent), flat(want))
				}
				// Ids are the index in each request; attributes travel unchanged.
				for _, req := range f.batches() {
					for i, m := range req {
						if m.ID != fmt.Sprint(i) {
							t.Errorf("entry %d has Id %q", i, m.ID)
						}
						if a := m.Attrs["type"]; a != [2]string{"String", "keyevent"} {
							t.Errorf("entry %d: type attribute %v", i, a)
						}
						if a := m.Attrs["event"]; a != [2]string{"String", "expired"} {
							t.Errorf("entry %d: event attribute %v", i, a)
						}
						if a := m.Attrs["db"]; a[0] != "Number" || (a[1] != "0" && a[1] != "1") {
							t.Errorf("entry %d: db attribute %v", i, a)
						}
					}
				}
				assertMetrics(t, m, k.name, tc.delivered, tc.rejected, tc.retried)
			})
		}
	})
}

// assertMetrics checks the relay's accounting of one sink; nothing may be
// dropped.
func assertMetrics(t *testing.T, m *bridge.Metrics, sink string, delivered, rejected, retried float64) {
	t.Helper()
	for name, c := range map[string][2]float64{
		"delivered": {testutil.ToFloat64(m.Delivered.WithLabelValues(sink)), delivered},
		"rejected":  {testutil.ToFloat64(m.Rejected.WithLabelValues(sink, "refused")), rejected},
		"retried":   {testutil.ToFloat64(m.Retried.WithLabelValues(sink)), retried},
		"dropped":   {testutil.ToFloat64(m.Dropped.WithLabelValues(sink, bridge.GapShutdown)), 0},
	} {
		if c[0] != c[1] {
			t.Errorf("%s = %v, want %v", name, c[0], c[1])
		}
	}
}

func flat(reqs [][]string) string {
	var out []string
	for i, r := range reqs {
		out = append(out, fmt.Sprintf("request %d:", i))
		for _, b := range r {
			out = append(out, "  "+b)
		}
	}
	return strings.Join(out, "\n")
}

// TestPackedFaults: one packed batch of three messages (one per event)
// where the server fails one message retryably and refuses another as the
// sender's fault. Exactly the records of the retryable message are sent
// again (repacked into one message); none of the accepted message; the
// refused message's records are rejected, counted, not resent.
func TestPackedFaults(t *testing.T) {
	refusal := map[string]failure{
		sqs.Name: {"2", true, "InvalidParameterValue", "refused"},
		sns.Name: {"2", true, "InvalidParameter", "Invalid parameter: Message too long"},
	}
	ids := bridge.NewIDGenerator()
	now := time.Now()
	var recs []bridge.Record
	for i := range 30 {
		ev := []string{"expired", "set", "del"}[i%3]
		recs = append(recs, bridge.Record{Type: bridge.TypeKeyEvent, ID: ids.New(now), Time: now, Source: "127.0.0.1:6379",
			DB: 3, Event: ev, Key: fmt.Sprintf("key-%d", i)})
	}
	forEachKind(t, func(t *testing.T, k *kind) {
		f := &fakeServer{respond: func(n int, _ []sentMessage) reply {
			if n > 0 {
				return reply{}
			}
			return reply{failed: []failure{{"1", false, "InternalError", "internal error"}, refusal[k.name]}}
		}}
		c, target := k.startFake(t, f)
		s := k.open(t, c, target, awsbatch.Options{MaxInFlight: 1, Pack: awsbatch.PackNDJSON})
		m := awsbatchtest.Deliver(t, s, recs)
		byEvent := map[string][]string{} // as sent: Deliver stamps the times
		for _, rec := range recs {
			byEvent[rec.Event] = append(byEvent[rec.Event], awsbatchtest.Body(rec))
		}

		var got [][][]string // request -> message -> records
		for i, req := range f.batches() {
			got = append(got, nil)
			for j, msg := range req {
				if msg.ID != fmt.Sprint(j) {
					t.Errorf("request %d: message %d has Id %q", i, j, msg.ID)
				}
				lines := strings.Split(msg.Body, "\n")
				got[i] = append(got[i], lines)
				first, err := bridgetest.ParseRecord([]byte(lines[0]))
				if err != nil {
					t.Fatalf("body %q: %v", msg.Body, err)
				}
				want := map[string][2]string{"type": {"String", "keyevent"}, "db": {"Number", "3"},
					"event": {"String", first.Event}, "count": {"Number", fmt.Sprint(len(lines))}}
				if fmt.Sprint(msg.Attrs) != fmt.Sprint(want) {
					t.Errorf("request %d message %d: attributes %v, want %v", i, j, msg.Attrs, want)
				}
			}
		}
		want := [][][]string{{byEvent["expired"], byEvent["set"], byEvent["del"]}, {byEvent["set"]}}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("requests (messages of records):\n%v\nwant:\n%v", got, want)
		}
		assertMetrics(t, m, k.name, 20, 10, 10)
	})
}

// TestCheckExplains shows that `keyrelay check` reports missing permissions
// by IAM action and a missing target by the variable to fix; Healthy names
// the same while the target's attributes cannot be read; and that New
// fails on none of them.
func TestCheckExplains(t *testing.T) {
	ctx := context.Background()
	forEachKind(t, func(t *testing.T, k *kind) {
		denied, missing, empty := k.errs["denied"], k.errs["missing"], k.errs["empty"]

		for _, tc := range []struct {
			name  string
			attrs func(int) (map[string]string, *apiError)
			want  func(target string) string
		}{
			{"attributes not readable", attrsError(denied), func(target string) string { return "allow " + k.readAction + " on " + target }},
			{"target missing", attrsError(missing), func(string) string { return k.envVar }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c, target := k.startFake(t, &fakeServer{attrs: tc.attrs})
				s := k.open(t, c, target, awsbatch.Options{})
				err := s.Check(ctx)
				t.Logf("check: %v", err)
				if err == nil || !strings.Contains(err.Error(), tc.want(target)) {
					t.Errorf("Check = %v, want it to contain %q", err, tc.want(target))
				}
				s.Limits() // waits for the first read
				if err := s.Healthy(); err == nil || !strings.Contains(err.Error(), tc.want(target)) || !strings.Contains(err.Error(), target) {
					t.Errorf("Healthy = %v, want it to name %s and contain %q", err, target, tc.want(target))
				}
			})
		}

		t.Run("sending not allowed", func(t *testing.T) {
			c, target := k.startFake(t, &fakeServer{respond: func(int, []sentMessage) reply { return reply{err: &denied} }})
			err := k.open(t, c, target, awsbatch.Options{}).Check(ctx)
			if want := "allow " + k.sendAction + " on " + target; err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Check = %v, want it to contain %q", err, want)
			}
		})

		t.Run("both allowed, 1 MiB target", func(t *testing.T) {
			f := &fakeServer{attrs: attrsSize("1048576"), respond: func(int, []sentMessage) reply { return reply{err: &empty} }}
			c, target := k.startFake(t, f)
			s := k.open(t, c, target, awsbatch.Options{})
			if lim := s.Limits(); lim.MaxEntryBytes != 1<<20 || lim.MaxBatchBytes != 1<<20 {
				t.Errorf("Limits = %+v for a 1 MiB target", lim)
			}
			if err := s.Check(ctx); err != nil {
				t.Errorf("Check with both permissions = %v", err)
			}
			if got := f.bodies(); len(got) != 1 || len(got[0]) != 0 {
				t.Errorf("Check sent %v, want one empty probe", got)
			}
			if err := s.Healthy(); err != nil {
				t.Errorf("Healthy = %v", err)
			}
		})

		t.Run("required IAM actions", func(t *testing.T) {
			if want := []string{k.sendAction, k.readAction}; fmt.Sprint(k.iam) != fmt.Sprint(want) {
				t.Errorf("RequiredIAMActions = %v, want %v", k.iam, want)
			}
		})
	})
	if sqs.Name != "sqs" || sns.Name != "sns" || awsbatch.MaxBatchEntries != 10 {
		t.Error("constants changed")
	}
}
