package main

import (
	"errors"
	"strings"
	"testing"
)

// TestPackConfig checks KEYRELAY_PACK: off by default, ndjson accepted for
// standard targets, anything else and packing towards a FIFO target refused
// with a message naming the variable.
func TestPackConfig(t *testing.T) {
	const queue = "https://sqs.us-east-1.amazonaws.com/123456789012/events"
	const topic = "arn:aws:sns:us-east-1:123456789012:events"
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string // "" valid, else part of the error
	}{
		{"default is off", map[string]string{"KEYRELAY_SINKS": "sqs", "KEYRELAY_SQS_QUEUE_URL": queue}, ""},
		{"ndjson on standard targets", map[string]string{"KEYRELAY_PACK": "ndjson", "KEYRELAY_SINKS": "sqs,sns,stdout",
			"KEYRELAY_SQS_QUEUE_URL": queue, "KEYRELAY_SNS_TOPIC_ARN": topic}, ""},
		{"unknown format", map[string]string{"KEYRELAY_PACK": "json-array"}, `KEYRELAY_PACK="json-array": must be off or ndjson`},
		{"FIFO queue", map[string]string{"KEYRELAY_PACK": "ndjson", "KEYRELAY_SINKS": "sqs", "KEYRELAY_SQS_QUEUE_URL": queue + ".fifo"},
			`KEYRELAY_PACK="ndjson": packing is not available for the FIFO sqs target`},
		{"FIFO topic", map[string]string{"KEYRELAY_PACK": "ndjson", "KEYRELAY_SINKS": "sns", "KEYRELAY_SNS_TOPIC_ARN": topic + ".fifo"},
			`KEYRELAY_PACK="ndjson": packing is not available for the FIFO sns target`},
		{"FIFO queue not used", map[string]string{"KEYRELAY_PACK": "ndjson", "KEYRELAY_SINKS": "sns",
			"KEYRELAY_SQS_QUEUE_URL": queue + ".fifo", "KEYRELAY_SNS_TOPIC_ARN": topic},
			`KEYRELAY_SQS_QUEUE_URL="` + queue + `.fifo": only used when sqs is a sink`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearKeyrelayEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cfg, err := loadConfig()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("loadConfig = %v", err)
				}
				if want := tc.env["KEYRELAY_PACK"]; want != "" && string(cfg.Pack) != want || want == "" && cfg.Pack != "off" {
					t.Errorf("Pack = %q", cfg.Pack)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a configuration error containing %q", err, tc.want)
			}
		})
	}
}
