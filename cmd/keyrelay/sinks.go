package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/arn"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	awssns "github.com/aws/aws-sdk-go-v2/service/sns"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/sinks/awsbatch"
	"github.com/keyrelay/keyrelay/sinks/sns"
	"github.com/keyrelay/keyrelay/sinks/sqs"
	"github.com/keyrelay/keyrelay/sinks/stdout"
)

// buildSinks creates the configured sinks, explicitly: no registry. It builds
// every sink it can and reports every one it cannot, so that `keyrelay check`
// names all broken targets at once; the daemon refuses to start on any error.
func buildSinks(ctx context.Context, cfg *Config, out io.Writer, log *slog.Logger) ([]bridge.Sink, error) {
	var sinks []bridge.Sink
	var errs []error
	var awsCfg *awsSetup
	loadAWS := func() (*awsSetup, error) {
		if awsCfg == nil {
			// The SDK's standard chain: AWS_REGION, AWS_PROFILE, the task
			// role, AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_SQS/_SNS, …
			// One idle connection per batch in flight, so that every send
			// reuses a connection (the SDK keeps 10 per host by default;
			// KEYRELAY_SINK_MAX_IN_FLIGHT may be up to 64).
			httpClient := awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
				t.MaxIdleConnsPerHost = max(t.MaxIdleConnsPerHost, cfg.MaxInFlight)
			})
			c, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithHTTPClient(httpClient))
			if err != nil {
				return nil, fmt.Errorf("aws configuration: %w", err)
			}
			var region string // from the instance metadata
			if c.Region == "" && (slices.Contains(cfg.Sinks, sqs.Name) && sqsURLRegion(cfg.SQSQueueURL) == "" ||
				slices.Contains(cfg.Sinks, sns.Name) && arnRegion(cfg.SNSTopicARN) == "") {
				// Neither AWS_REGION nor a profile names the region, nor
				// does a target: ask the instance metadata (EC2, ECS on
				// EC2), as the SDK does for credentials.
				if region, err = imdsRegion(ctx, httpClient); err != nil {
					log.Warn("the AWS region is not set (AWS_REGION) and the instance metadata does not say it", "err", err)
				} else {
					log.Info("AWS region from the instance metadata", "region", region)
				}
			}
			awsCfg = &awsSetup{c, region}
		}
		return awsCfg, nil
	}
	for _, name := range cfg.Sinks {
		switch name {
		case stdout.Name:
			sinks = append(sinks, stdout.New(out))
		case sqs.Name, sns.Name:
			s, err := buildAWSSink(name, cfg, loadAWS, log)
			if err != nil {
				errs = append(errs, err) // names the sink, the target and what to fix
				continue
			}
			log.Info("sink ready", "sink", name, "limits", fmt.Sprintf("%+v", s.Limits()))
			sinks = append(sinks, s)
		default:
			errs = append(errs, fmt.Errorf("sink %q is not available in this build", name))
		}
	}
	return sinks, errors.Join(errs...)
}

// buildAWSSink builds the sqs or sns sink. It does no I/O that can fail: a
// target that cannot be read yet is retried in the background (the sink's
// Healthy reports it, its log lines explain it), and `keyrelay check`
// reports it at once.
func buildAWSSink(name string, cfg *Config, loadAWS func() (*awsSetup, error), log *slog.Logger) (bridge.Sink, error) {
	setup, err := loadAWS()
	if err != nil {
		return nil, err
	}
	opt := awsbatch.Options{
		GroupBy:     cfg.FIFOGroup,
		MaxInFlight: cfg.MaxInFlight,
		Pack:        cfg.Pack,
		// The attributes are read with the back-off records are retried with.
		ReadRetryInitial: cfg.RetryInitial,
		ReadRetryMax:     cfg.RetryMax,
		Log:              log,
	}
	if name == sqs.Name {
		return sqs.New(awssqs.NewFromConfig(setup.cfg, func(o *awssqs.Options) {
			o.Region = sinkRegion(o.Region, sqsURLRegion(cfg.SQSQueueURL), setup.imdsRegion)
		}), cfg.SQSQueueURL, opt)
	}
	return sns.New(awssns.NewFromConfig(setup.cfg, func(o *awssns.Options) {
		o.Region = sinkRegion(o.Region, arnRegion(cfg.SNSTopicARN), setup.imdsRegion)
	}), cfg.SNSTopicARN, opt)
}

// awsSetup is the SDK's configuration shared by the AWS sinks.
type awsSetup struct {
	cfg        aws.Config
	imdsRegion string // the instance's region, read only when nothing else says it
}

// sinkRegion picks a sink client's region: the configured one (AWS_REGION,
// the profile's), else the target's own (its queue URL or topic ARN says
// where it is, and requests must go there), else the instance's from the
// instance metadata.
func sinkRegion(configured, fromTarget, fromInstance string) string {
	for _, r := range []string{configured, fromTarget} {
		if r != "" {
			return r
		}
	}
	return fromInstance
}

// imdsRegion asks the EC2 instance metadata service for the region
// (AWS_EC2_METADATA_DISABLED and AWS_EC2_METADATA_SERVICE_ENDPOINT apply),
// for at most imdsRegionTimeout: off EC2 nothing answers.
func imdsRegion(ctx context.Context, httpClient awsconfig.HTTPClient) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, imdsRegionTimeout)
	defer cancel()
	c, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithHTTPClient(httpClient), awsconfig.WithEC2IMDSRegion())
	if err != nil {
		return "", err
	}
	if c.Region == "" {
		return "", errors.New("the instance metadata names no region")
	}
	return c.Region, nil
}

// imdsRegionTimeout bounds the instance metadata request for the region.
const imdsRegionTimeout = 3 * time.Second

// sqsURLRegion returns the region a queue URL names, or "": the current form
// https://sqs.REGION.amazonaws.com/…, an interface VPC endpoint's
// https://vpce-ID.sqs.REGION.vpce.amazonaws.com/…, and the legacy
// https://REGION.queue.amazonaws.com/… and https://queue.amazonaws.com/…
// (us-east-1). Other hosts (an emulator) name none.
func sqsURLRegion(queueURL string) string {
	u, err := url.Parse(queueURL)
	if err != nil {
		return ""
	}
	host := u.Hostname()
	if host == "queue.amazonaws.com" {
		return "us-east-1"
	}
	rest, ok := strings.CutSuffix(host, ".amazonaws.com")
	if !ok {
		rest, ok = strings.CutSuffix(host, ".amazonaws.com.cn")
	}
	if !ok {
		return ""
	}
	labels := strings.Split(rest, ".")
	for i, l := range labels[:len(labels)-1] {
		if l == "sqs" {
			return labels[i+1]
		}
	}
	if len(labels) == 2 && labels[1] == "queue" {
		return labels[0]
	}
	return ""
}

// arnRegion returns the region of an ARN (arn:PARTITION:sns:REGION:ACCOUNT:NAME), or "".
func arnRegion(s string) string {
	a, err := arn.Parse(s)
	if err != nil {
		return ""
	}
	return a.Region
}
