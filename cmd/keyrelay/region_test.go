package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
)

// TestSinkRegion: AWS_REGION (or the profile's) first, then the target's
// own region, then the instance's.
func TestSinkRegion(t *testing.T) {
	for _, tc := range []struct{ configured, target, instance, want string }{
		{"us-east-1", "eu-west-1", "ap-south-1", "us-east-1"},
		{"", "eu-west-1", "ap-south-1", "eu-west-1"},
		{"", "", "ap-south-1", "ap-south-1"},
		{"", "", "", ""},
	} {
		if got := sinkRegion(tc.configured, tc.target, tc.instance); got != tc.want {
			t.Errorf("sinkRegion(%q, %q, %q) = %q, want %q", tc.configured, tc.target, tc.instance, got, tc.want)
		}
	}
}

// TestTargetRegion: the region of topic ARNs (parsed by the SDK's arn
// package) and of queue URLs.
func TestTargetRegion(t *testing.T) {
	for arn, want := range map[string]string{
		"arn:aws:sns:eu-west-1:123456789012:t":            "eu-west-1",
		"arn:aws-cn:sns:cn-north-1:123456789012:t.fifo":   "cn-north-1",
		"arn:aws-us-gov:sns:us-gov-west-1:123456789012:t": "us-gov-west-1",
		"sns:eu-west-1:123456789012:t":                    "",
		"arn:aws:sns":                                     "",
	} {
		if got := arnRegion(arn); got != want {
			t.Errorf("arnRegion(%q) = %q, want %q", arn, got, want)
		}
	}
	for u, want := range map[string]string{
		"https://sqs.eu-west-1.amazonaws.com/123456789012/q":                "eu-west-1",
		"https://sqs.cn-north-1.amazonaws.com.cn/1/q":                       "cn-north-1",
		"http://127.0.0.1:4566/000000000000/q":                              "",
		"https://vpce-0a1b2c3d-xyz.sqs.eu-central-1.vpce.amazonaws.com/1/q": "eu-central-1",
		"https://us-west-2.queue.amazonaws.com/1/q":                         "us-west-2",
		"https://queue.amazonaws.com/1/q":                                   "us-east-1",
		"https://sqs.amazonaws.com/1/q":                                     "",
		"https://example.com/sqs.eu-west-1.amazonaws.com/q":                 "",
		"https://sqs.eu-west-1.amazonaws.com.evil.example/1/q":              "",
	} {
		if got := sqsURLRegion(u); got != want {
			t.Errorf("sqsURLRegion(%q) = %q, want %q", u, got, want)
		}
	}
}

// TestCheckTopicARN: what KEYRELAY_SNS_TOPIC_ARN accepts.
func TestCheckTopicARN(t *testing.T) {
	for arn, bad := range map[string]string{
		"arn:aws:sns:us-east-1:123456789012:my-topic":      "",
		"arn:aws:sns:us-east-1:123456789012:my-topic.fifo": "",
		"arn:aws:sqs:us-east-1:123456789012:my-queue":      `"sqs", not sns`,
		"arn:aws:sns:us-east-1:123456789012:t:0e5c-subscr": "subscription ARN",
		"arn:aws:sns::123456789012:t":                      "region and the account id",
		"arn:aws:sns:us-east-1:123456789012:":              "topic name",
		"my-topic":                                         "arn: invalid prefix",
	} {
		err := checkTopicARN(arn)
		if bad == "" && err != nil || bad != "" && (err == nil || !strings.Contains(err.Error(), bad)) {
			t.Errorf("checkTopicARN(%q) = %v, want %q", arn, err, bad)
		}
	}
}

// TestIMDSRegion: without AWS_REGION the region comes from the instance
// metadata (IMDSv2: a token, then the instance identity document), here an
// httptest server speaking its protocol; AWS_EC2_METADATA_DISABLED turns
// the lookup off.
func TestIMDSRegion(t *testing.T) {
	imdsEnv(t, fakeIMDS(t, "eu-west-3", nil))
	region, err := imdsRegion(context.Background(), awshttp.NewBuildableClient())
	if err != nil || region != "eu-west-3" {
		t.Fatalf("imdsRegion = %q, %v; want eu-west-3", region, err)
	}
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	if region, err := imdsRegion(context.Background(), awshttp.NewBuildableClient()); err == nil {
		t.Fatalf("imdsRegion with the metadata service disabled = %q, want an error", region)
	}
}

// TestBuildSinksRegion: the sqs sink of a queue URL that names no region
// (an emulator's, here) takes the instance's region when AWS_REGION is
// unset; a queue URL that names one never asks the instance metadata.
func TestBuildSinksRegion(t *testing.T) {
	var asked atomic.Int64
	imdsEnv(t, fakeIMDS(t, "eu-west-3", &asked))
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:1") // nothing is sent anywhere
	for _, tc := range []struct {
		queueURL, wantLog string
		wantAsked         bool
	}{
		{"http://127.0.0.1:1/000000000000/q", "region=eu-west-3", true},
		{"https://sqs.ap-south-1.amazonaws.com/123456789012/q", "", false},
	} {
		asked.Store(0)
		clearKeyrelayEnv(t)
		t.Setenv("KEYRELAY_SINKS", "sqs")
		t.Setenv("KEYRELAY_SQS_QUEUE_URL", tc.queueURL)
		cfg, err := loadConfig()
		if err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		sinks, err := buildSinks(context.Background(), cfg, io.Discard, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range sinks {
			_ = s.Close(context.Background())
		}
		if (asked.Load() > 0) != tc.wantAsked || !strings.Contains(logs.String(), tc.wantLog) {
			t.Errorf("%s: instance metadata asked %d times, log:\n%s", tc.queueURL, asked.Load(), logs.String())
		}
	}
}

// imdsEnv points the SDK at an instance metadata server, with no region or
// profile from anywhere else.
func imdsEnv(t *testing.T, endpoint string) {
	t.Helper()
	for _, k := range []string{"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_EC2_METADATA_DISABLED"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint)
}

// fakeIMDS serves the instance metadata's IMDSv2 token and the instance
// identity document, whose region the SDK reads; asked counts requests.
func fakeIMDS(t *testing.T, region string, asked *atomic.Int64) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if asked != nil {
			asked.Add(1)
		}
		switch {
		case r.Method == http.MethodPut && r.URL.Path == "/latest/api/token":
			w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", "21600")
			w.Write([]byte("token-1"))
		case r.Method == http.MethodGet && r.URL.Path == "/latest/dynamic/instance-identity/document":
			if r.Header.Get("X-Aws-Ec2-Metadata-Token") != "token-1" {
				http.Error(w, "no token", http.StatusUnauthorized)
				return
			}
			w.Write([]byte(`{"region":"` + region + `","availabilityZone":"` + region + `a","instanceId":"i-0123456789abcdef0","accountId":"123456789012"}`))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}
