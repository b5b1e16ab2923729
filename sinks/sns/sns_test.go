package sns_test

import (
	"context"
	"strings"
	"testing"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/bridge/bridgetest"
	"github.com/keyrelay/keyrelay/sinks/awsbatch/awsbatchtest"
	"github.com/keyrelay/keyrelay/sinks/sns"
)

// TestFauxqs runs the sink against the fauxqs emulator: the contract on a
// standard and a FIFO topic, read back through an SQS queue subscribed with
// raw message delivery; limits read from the topic; and the error New gives
// for a missing topic.
func TestFauxqs(t *testing.T) {
	bridgetest.StartFauxqs(t)
	sqsc, snsc := awsbatchtest.Clients(t)
	ctx := context.Background()

	for _, fifo := range []bool{false, true} {
		name := "standard"
		if fifo {
			name = "fifo"
		}
		t.Run("contract "+name, func(t *testing.T) {
			bridgetest.RunSinkContract(t, func(t *testing.T) (bridge.Sink, func() [][]byte) {
				arn, url := awsbatchtest.CreateTopicToQueue(t, sqsc, snsc, awsbatchtest.UniqueName("contract", fifo))
				s, err := sns.New(ctx, sns.Options{Client: snsc, TopicARN: arn})
				if err != nil {
					t.Fatal(err)
				}
				return s, awsbatchtest.NewReader(t, sqsc, url).Bodies
			})
		})
	}

	t.Run("limits follow the topic", func(t *testing.T) {
		arn, _ := awsbatchtest.CreateTopicToQueue(t, sqsc, snsc, awsbatchtest.UniqueName("default", false))
		s, err := sns.New(ctx, sns.Options{Client: snsc, TopicARN: arn, MaxInFlight: 2})
		if err != nil {
			t.Fatal(err)
		}
		want := bridge.Limits{MaxEntries: 10, MaxBatchBytes: 262144, MaxEntryBytes: 262144, MaxInFlight: 2}
		if got := s.Limits(); got != want {
			t.Errorf("Limits = %+v, want %+v (256 KiB when the topic sets no MaximumMessageSize)", got, want)
		}

		farn, _ := awsbatchtest.CreateTopicToQueue(t, sqsc, snsc, awsbatchtest.UniqueName("fifo", true))
		f, err := sns.New(ctx, sns.Options{Client: snsc, TopicARN: farn, MaxInFlight: 8})
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Limits().MaxInFlight; got != 1 {
			t.Errorf("FIFO MaxInFlight = %d, want 1 (keeps group order)", got)
		}
	})

	t.Run("missing topic is explained", func(t *testing.T) {
		arn, _ := awsbatchtest.CreateTopicToQueue(t, sqsc, snsc, awsbatchtest.UniqueName("exists", false))
		missing := arn[:strings.LastIndex(arn, ":")+1] + "no-such-topic"
		_, err := sns.New(ctx, sns.Options{Client: snsc, TopicARN: missing})
		if err == nil || !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), "KEYRELAY_SNS_TOPIC_ARN") {
			t.Errorf("New on a missing topic = %v, want an explanation naming KEYRELAY_SNS_TOPIC_ARN", err)
		}
	})

	t.Run("required IAM actions", func(t *testing.T) {
		want := []string{"sns:Publish", "sns:GetTopicAttributes"}
		if strings.Join(sns.RequiredIAMActions, ",") != strings.Join(want, ",") {
			t.Errorf("RequiredIAMActions = %v, want %v", sns.RequiredIAMActions, want)
		}
	})
}
