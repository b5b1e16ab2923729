package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
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
	var awsCfg *aws.Config
	loadAWS := func() (*aws.Config, error) {
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
			awsCfg = &c
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
func buildAWSSink(name string, cfg *Config, loadAWS func() (*aws.Config, error), log *slog.Logger) (bridge.Sink, error) {
	awsCfg, err := loadAWS()
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
		return sqs.New(awssqs.NewFromConfig(*awsCfg, func(o *awssqs.Options) {
			o.Region = regionOr(o.Region, sqsURLRegion(cfg.SQSQueueURL))
		}), cfg.SQSQueueURL, opt)
	}
	return sns.New(awssns.NewFromConfig(*awsCfg, func(o *awssns.Options) {
		o.Region = regionOr(o.Region, arnRegion(cfg.SNSTopicARN))
	}), cfg.SNSTopicARN, opt)
}

// regionOr returns region, or else the target's own region: without
// AWS_REGION (a plain EC2 instance) the queue URL or topic ARN still says
// where the target is.
func regionOr(region, fromTarget string) string {
	if region != "" {
		return region
	}
	return fromTarget
}

// sqsURLRegion returns the region of https://sqs.REGION.amazonaws.com/…, or "".
func sqsURLRegion(queueURL string) string {
	u, err := url.Parse(queueURL)
	if err != nil {
		return ""
	}
	parts := strings.Split(u.Hostname(), ".")
	if len(parts) >= 4 && parts[0] == "sqs" && strings.HasPrefix(strings.Join(parts[2:], "."), "amazonaws.com") {
		return parts[1]
	}
	return ""
}

// arnRegion returns the region of arn:PARTITION:sns:REGION:ACCOUNT:NAME, or "".
func arnRegion(arn string) string {
	parts := strings.Split(arn, ":")
	if len(parts) == 6 && parts[0] == "arn" {
		return parts[3]
	}
	return ""
}
