package bridgetest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// The limits of the CloudWatch embedded metric format specification
// (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html):
// a directive names at most 100 metrics, a dimension set at most 30
// dimension keys, and the document is one log event (at most 1 MB; 256 KB
// in older statements of the limit, kept here as the stricter one).
const (
	emfMaxMetrics    = 100
	emfMaxDimensions = 30
	emfMaxBytes      = 256 << 10
)

// emfUnits are the units a MetricDefinition may name (CloudWatch's
// StandardUnit).
var emfUnits = map[string]bool{
	"Seconds": true, "Microseconds": true, "Milliseconds": true,
	"Bytes": true, "Kilobytes": true, "Megabytes": true, "Gigabytes": true, "Terabytes": true,
	"Bits": true, "Kilobits": true, "Megabits": true, "Gigabits": true, "Terabits": true,
	"Percent": true, "Count": true,
	"Bytes/Second": true, "Kilobytes/Second": true, "Megabytes/Second": true, "Gigabytes/Second": true, "Terabytes/Second": true,
	"Bits/Second": true, "Kilobits/Second": true, "Megabits/Second": true, "Gigabits/Second": true, "Terabits/Second": true,
	"Count/Second": true, "None": true,
}

// CheckEMF validates one line of keyrelay's KEYRELAY_EMF_INTERVAL output against the specification: one JSON object on
// one line; _aws holds Timestamp (milliseconds since the epoch, near now)
// and a non-empty CloudWatchMetrics array and nothing else; each directive
// holds exactly Namespace (1 to 255 characters), Dimensions (arrays of at
// most 30 keys, each a top-level string member) and Metrics (at most 100,
// each with a Name that is a top-level number member, a Unit from the list,
// no other member). It returns the root object and the timestamp.
func CheckEMF(t testing.TB, line []byte) (root map[string]any, ts time.Time) {
	t.Helper()
	if len(line) > emfMaxBytes {
		t.Fatalf("EMF line of %d bytes, over %d", len(line), emfMaxBytes)
	}
	if !bytes.HasSuffix(line, []byte("\n")) || bytes.Count(line, []byte("\n")) != 1 {
		t.Fatalf("EMF document is not exactly one line: %q", line)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if err := dec.Decode(&root); err != nil {
		t.Fatalf("EMF line is not a JSON object: %v: %s", err, line)
	}
	if dec.More() {
		t.Fatalf("data after the JSON object: %s", line)
	}
	aws, ok := root["_aws"].(map[string]any)
	if !ok {
		t.Fatalf("no _aws object: %s", line)
	}
	for k := range aws {
		if k != "Timestamp" && k != "CloudWatchMetrics" {
			t.Errorf("_aws has an extra member %q", k)
		}
	}
	tsNum, ok := aws["Timestamp"].(json.Number)
	if !ok {
		t.Fatalf("_aws.Timestamp is not a number: %v", aws["Timestamp"])
	}
	ms, err := tsNum.Int64()
	// Milliseconds since the epoch: after 2020, not in seconds or nanoseconds.
	if err != nil || ms < 1_577_836_800_000 || ms > 1_577_836_800_000*100 {
		t.Fatalf("_aws.Timestamp = %s: not milliseconds since the epoch", tsNum)
	}
	directives, ok := aws["CloudWatchMetrics"].([]any)
	if !ok || len(directives) == 0 {
		t.Fatalf("_aws.CloudWatchMetrics is not a non-empty array: %v", aws["CloudWatchMetrics"])
	}
	for _, d := range directives {
		dir, ok := d.(map[string]any)
		if !ok {
			t.Fatalf("a directive is not an object: %v", d)
		}
		for k := range dir {
			if k != "Namespace" && k != "Dimensions" && k != "Metrics" {
				t.Errorf("directive has an extra member %q", k)
			}
		}
		ns, _ := dir["Namespace"].(string)
		if len(ns) < 1 || len(ns) > 255 {
			t.Errorf("Namespace %q: must be 1 to 255 characters", ns)
		}
		dims, ok := dir["Dimensions"].([]any)
		if !ok {
			t.Fatalf("Dimensions is not an array: %v", dir["Dimensions"])
		}
		for _, set := range dims {
			keys, ok := set.([]any)
			if !ok || len(keys) > emfMaxDimensions {
				t.Fatalf("dimension set %v: must be an array of at most %d keys", set, emfMaxDimensions)
			}
			for _, k := range keys {
				name, _ := k.(string)
				if _, isString := root[name].(string); !isString {
					t.Errorf("dimension %v is not a top-level string member", k)
				}
			}
		}
		metrics, ok := dir["Metrics"].([]any)
		if !ok || len(metrics) > emfMaxMetrics {
			t.Fatalf("Metrics must be an array of at most %d: %v", emfMaxMetrics, dir["Metrics"])
		}
		for _, m := range metrics {
			def, ok := m.(map[string]any)
			if !ok {
				t.Fatalf("a metric definition is not an object: %v", m)
			}
			for k := range def {
				if k != "Name" && k != "Unit" && k != "StorageResolution" {
					t.Errorf("metric definition has an extra member %q", k)
				}
			}
			name, _ := def["Name"].(string)
			if len(name) < 1 || len(name) > 255 {
				t.Errorf("metric Name %q: must be 1 to 255 characters", name)
			}
			if _, isNumber := root[name].(json.Number); !isNumber {
				t.Errorf("metric %q is not a top-level number member: %v", name, root[name])
			}
			if u, has := def["Unit"]; has && !emfUnits[fmt.Sprint(u)] {
				t.Errorf("metric %q: unit %v is not a CloudWatch unit", name, u)
			}
		}
	}
	return root, time.UnixMilli(ms)
}
