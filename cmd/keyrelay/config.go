package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/redis/go-redis/v9"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/bridge/iamauth"
	"github.com/keyrelay/keyrelay/sinks/awsbatch"
)

// envPrefix is the prefix of every variable.
const envPrefix = "KEYRELAY"

// Config is keyrelay's whole configuration, read from KEYRELAY_* variables.
// The struct is the single source of `keyrelay help` and the README table;
// the desc tags are user documentation.
type Config struct {
	RedisConfig
	FilterConfig
	SinkConfig
	BufferConfig
	OpsConfig
}

// RedisConfig is the Redis endpoint and the subscription's health checks.
type RedisConfig struct {
	RedisURL         string        `envconfig:"REDIS_URL" default:"redis://localhost:6379" desc:"Redis/Valkey primary endpoint: redis://host:port, or rediss:// for TLS; user:password@ allowed"`
	RedisUsername    string        `envconfig:"REDIS_USERNAME" desc:"RBAC user name; overrides the URL's"`
	RedisPassword    string        `envconfig:"REDIS_PASSWORD" desc:"AUTH token or RBAC password; overrides the URL's; never logged"`
	RedisCAFile      string        `envconfig:"REDIS_CA_FILE" desc:"PEM file of CA certificates for rediss:// (default: the system roots)"`
	HealthInterval   time.Duration `envconfig:"REDIS_HEALTH_INTERVAL" default:"1s" desc:"ping an idle subscription after this long; it is dead after twice this long without an answer"`
	FailoverInterval time.Duration `envconfig:"REDIS_FAILOVER_CHECK_INTERVAL" default:"5s" desc:"how often a fresh connection checks that the endpoint still names the subscribed primary; 0 disables"`

	// IAM authentication (ElastiCache Valkey 7.2+ / Redis OSS 7.0+).
	RedisIAMAuth       bool   `envconfig:"REDIS_IAM_AUTH" default:"false" desc:"authenticate as an IAM-enabled ElastiCache user with a fresh SigV4 token per connection (needs rediss://, KEYRELAY_REDIS_USERNAME and KEYRELAY_REDIS_IAM_CACHE_ID); connections are renewed after 11 h"`
	RedisIAMCacheID    string `envconfig:"REDIS_IAM_CACHE_ID" desc:"with IAM auth: the replication group id (or serverless cache name) the token is signed for"`
	RedisIAMServerless bool   `envconfig:"REDIS_IAM_SERVERLESS" default:"false" desc:"with IAM auth: KEYRELAY_REDIS_IAM_CACHE_ID names a serverless cache"`
}

// FilterConfig selects what is forwarded.
type FilterConfig struct {
	Channels bridge.ChannelKind `envconfig:"CHANNELS" default:"keyevent" desc:"notification channels to read: keyevent or keyspace"`
	Events   []string           `envconfig:"EVENTS" desc:"comma-separated event names to forward, e.g. expired,evicted (empty: all)"`
	Keys     []string           `envconfig:"KEYS" desc:"comma-separated Redis glob patterns; only matching keys are forwarded (empty: all)"`
	DBs      []int              `envconfig:"DBS" desc:"comma-separated database numbers (empty: all)"`
}

// SinkConfig selects and configures the sinks.
type SinkConfig struct {
	Sinks       []string `envconfig:"SINKS" default:"stdout" desc:"comma-separated sinks, each gets every record: stdout, sqs, sns"`
	SQSQueueURL string   `envconfig:"SQS_QUEUE_URL" desc:"SQS queue URL; required when sqs is a sink; a name ending in .fifo is a FIFO queue"`
	SNSTopicARN string   `envconfig:"SNS_TOPIC_ARN" desc:"SNS topic ARN; required when sns is a sink; a name ending in .fifo is a FIFO topic"`
	FIFOGroup   string   `envconfig:"FIFO_GROUP" default:"key" desc:"FIFO message group id: key, event, db, or fixed:NAME (a constant group)"`
	MaxInFlight int      `envconfig:"SINK_MAX_IN_FLIGHT" default:"4" desc:"concurrent batches per SQS/SNS sink (FIFO targets always use 1, to keep order)"`
	Pack        string   `envconfig:"PACK" default:"off" desc:"off: one record per SQS/SNS message; ndjson: many records per message, one JSON record per line, with the type, event and db attributes all its records share (cuts billed requests about 30-fold; standard queues and topics only)"`
}

// BufferConfig is the buffer between the reader and each sink, batching and
// retry.
type BufferConfig struct {
	BufferRecords int             `envconfig:"BUFFER_RECORDS" default:"100000" desc:"records buffered per sink while it is slow or down"`
	BufferBytes   int64           `envconfig:"BUFFER_BYTES" default:"67108864" desc:"encoded bytes buffered per sink (64 MiB)"`
	Overflow      bridge.Overflow `envconfig:"OVERFLOW" default:"drop-newest" desc:"what a full buffer drops: drop-newest or drop-oldest; either way a gap record reports it"`
	BatchLinger   time.Duration   `envconfig:"BATCH_LINGER" default:"20ms" desc:"how long a batch waits to fill before it is sent"`
	RetryInitial  time.Duration   `envconfig:"RETRY_INITIAL" default:"100ms" desc:"first retry back-off (doubles, with jitter)"`
	RetryMax      time.Duration   `envconfig:"RETRY_MAX" default:"10s" desc:"longest retry back-off"`
}

// OpsConfig is logging, HTTP and shutdown.
type OpsConfig struct {
	HTTPAddr        string        `envconfig:"HTTP_ADDR" default:":9180" desc:"address of /healthz, /readyz and /metrics; empty disables"`
	LogLevel        LogLevel      `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	LogFormat       LogFormat     `envconfig:"LOG_FORMAT" default:"json" desc:"json or text; logs go to stderr"`
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"25s" desc:"how long a stop may spend delivering buffered records (ECS kills after its stopTimeout, 30 s by default)"`
}

// LogLevel is a slog level name.
type LogLevel string

// Decode implements envconfig.Decoder.
func (l *LogLevel) Decode(s string) error {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(s)); err != nil || strings.ContainsAny(s, "+-") {
		return errors.New("must be debug, info, warn or error")
	}
	*l = LogLevel(s)
	return nil
}

// Level returns the slog level.
func (l LogLevel) Level() slog.Level {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(l))
	return lv
}

// LogFormat is json or text.
type LogFormat string

// Decode implements envconfig.Decoder.
func (f *LogFormat) Decode(s string) error {
	if s != "json" && s != "text" {
		return errors.New("must be json or text")
	}
	*f = LogFormat(s)
	return nil
}

// ConfigError is every configuration problem found at once. It maps to exit
// status 2.
type ConfigError struct{ Problems []error }

func (e *ConfigError) Error() string {
	msgs := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		msgs[i] = p.Error()
	}
	return "invalid configuration:\n  " + strings.Join(msgs, "\n  ")
}

// Unwrap returns the problems.
func (e *ConfigError) Unwrap() []error { return e.Problems }

// secretVars are never echoed in error messages.
var secretVars = map[string]bool{envPrefix + "_REDIS_PASSWORD": true, envPrefix + "_REDIS_URL": true}

// loadConfig reads and validates the configuration from the process
// environment, reporting every problem at once.
func loadConfig() (*Config, error) {
	var problems []error
	// envconfig stops at the first value it cannot parse: note it, hide the
	// variable and go on, so that one run reports every bad value.
	var cfg Config
	restore := map[string]string{}
	defer func() {
		for k, v := range restore {
			os.Setenv(k, v)
		}
	}()
	for {
		cfg = Config{}
		err := envconfig.Process(envPrefix, &cfg)
		var pe *envconfig.ParseError
		if err == nil {
			break
		}
		if !errors.As(err, &pe) {
			return nil, &ConfigError{Problems: append(problems, err)}
		}
		problems = append(problems, varError(pe.KeyName, pe.Value, parseReason(pe)))
		restore[pe.KeyName] = pe.Value
		os.Unsetenv(pe.KeyName)
	}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, envPrefix+"_") && !slices.Contains(configVariables(), name) {
			if _, bad := restore[name]; !bad {
				problems = append(problems, fmt.Errorf("%s: unknown variable (see keyrelay help)", name))
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		problems = append(problems, err.(interface{ Unwrap() []error }).Unwrap()...)
	}
	if len(problems) > 0 {
		return nil, &ConfigError{Problems: problems}
	}
	return &cfg, nil
}

func parseReason(pe *envconfig.ParseError) string {
	switch pe.TypeName {
	case "Duration":
		return "must be a duration such as 500ms, 5s or 1m"
	case "int", "int64":
		return "must be a whole number"
	case "[]int":
		return "must be comma-separated whole numbers"
	}
	var inner = pe.Err
	if ne, ok := inner.(interface{ Unwrap() error }); ok && ne.Unwrap() != nil {
		inner = ne.Unwrap()
	}
	return inner.Error()
}

func varError(name, value, reason string) error {
	if secretVars[name] {
		return fmt.Errorf("%s: %s", name, reason)
	}
	return fmt.Errorf("%s=%q: %s", name, value, reason)
}

// Validate checks every field and returns all problems, joined.
func (c *Config) Validate() error {
	var errs []error
	bad := func(suffix, value, reason string) {
		errs = append(errs, varError(envPrefix+"_"+suffix, value, reason))
	}
	if opt, err := c.redisOptions(); err != nil {
		var ve *varErr
		if errors.As(err, &ve) {
			errs = append(errs, varError(ve.name, ve.value, ve.reason))
		} else {
			bad("REDIS_URL", "", err.Error())
		}
	} else if c.RedisIAMAuth {
		if opt.TLSConfig == nil {
			bad("REDIS_IAM_AUTH", "true", "needs a rediss:// KEYRELAY_REDIS_URL: ElastiCache accepts IAM authentication only with in-transit encryption")
		}
		if opt.Username == "" {
			bad("REDIS_USERNAME", "", "required with KEYRELAY_REDIS_IAM_AUTH=true: the IAM-enabled ElastiCache user (its user name and user id are identical)")
		}
		if opt.Password != "" {
			bad("REDIS_PASSWORD", "", "must be empty with KEYRELAY_REDIS_IAM_AUTH=true (also in the URL): the IAM token is the password")
		}
		if c.RedisIAMCacheID == "" {
			bad("REDIS_IAM_CACHE_ID", "", "required with KEYRELAY_REDIS_IAM_AUTH=true: the replication group id (or serverless cache name)")
		} else if err := iamauth.ValidateCacheID(c.RedisIAMCacheID); err != nil {
			bad("REDIS_IAM_CACHE_ID", c.RedisIAMCacheID, err.Error())
		}
	} else {
		if c.RedisIAMCacheID != "" {
			bad("REDIS_IAM_CACHE_ID", c.RedisIAMCacheID, "only used with KEYRELAY_REDIS_IAM_AUTH=true")
		}
		if c.RedisIAMServerless {
			bad("REDIS_IAM_SERVERLESS", "true", "only used with KEYRELAY_REDIS_IAM_AUTH=true")
		}
	}
	if c.HealthInterval < 100*time.Millisecond {
		bad("REDIS_HEALTH_INTERVAL", c.HealthInterval.String(), "must be at least 100ms")
	}
	if c.FailoverInterval < 0 {
		bad("REDIS_FAILOVER_CHECK_INTERVAL", c.FailoverInterval.String(), "must be 0 (off) or positive")
	}
	if c.Channels != bridge.KeyEvent && c.Channels != bridge.KeySpace {
		bad("CHANNELS", string(c.Channels), "must be keyevent or keyspace")
	}
	c.Events = trimList(c.Events)
	for _, e := range c.Events {
		if strings.ContainsAny(e, " \t\r\n*?[]") {
			bad("EVENTS", strings.Join(c.Events, ","), fmt.Sprintf("event %q: event names have no spaces or glob characters", e))
		}
	}
	c.Keys = trimList(c.Keys)
	for _, db := range c.DBs {
		if db < 0 {
			bad("DBS", fmt.Sprint(c.DBs), "database numbers are 0 or more")
			break
		}
	}
	c.Sinks = trimList(c.Sinks)
	if len(c.Sinks) == 0 {
		bad("SINKS", "", "name at least one sink: stdout, sqs, sns")
	}
	seen := map[string]bool{}
	for _, s := range c.Sinks {
		switch {
		case s != "stdout" && s != "sqs" && s != "sns":
			bad("SINKS", strings.Join(c.Sinks, ","), fmt.Sprintf("unknown sink %q: allowed are stdout, sqs, sns", s))
		case seen[s]:
			bad("SINKS", strings.Join(c.Sinks, ","), fmt.Sprintf("sink %q named twice", s))
		}
		seen[s] = true
	}
	if seen["sqs"] {
		if c.SQSQueueURL == "" {
			bad("SQS_QUEUE_URL", "", "required when sqs is a sink")
		} else if u, err := url.Parse(c.SQSQueueURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("SQS_QUEUE_URL", c.SQSQueueURL, "must be a queue URL such as https://sqs.us-east-1.amazonaws.com/123456789012/my-queue")
		}
	}
	if seen["sns"] {
		if c.SNSTopicARN == "" {
			bad("SNS_TOPIC_ARN", "", "required when sns is a sink")
		} else if !strings.HasPrefix(c.SNSTopicARN, "arn:") || strings.Count(c.SNSTopicARN, ":") != 5 {
			bad("SNS_TOPIC_ARN", c.SNSTopicARN, "must be a topic ARN such as arn:aws:sns:us-east-1:123456789012:my-topic")
		}
	}
	if _, err := awsbatch.ParseGroupBy(c.FIFOGroup); err != nil {
		bad("FIFO_GROUP", c.FIFOGroup, err.Error())
	}
	if pack, err := awsbatch.ParsePacking(c.Pack); err != nil {
		bad("PACK", c.Pack, err.Error())
	} else if pack == awsbatch.PackNDJSON {
		for _, t := range [][2]string{{"sqs", c.SQSQueueURL}, {"sns", c.SNSTopicARN}} {
			if seen[t[0]] && awsbatch.IsFIFO(t[1]) {
				bad("PACK", c.Pack, fmt.Sprintf("packing is not available for the FIFO %s target %s (per-record deduplication and group order); use off", t[0], t[1]))
			}
		}
	}
	if c.MaxInFlight < 1 || c.MaxInFlight > 64 {
		bad("SINK_MAX_IN_FLIGHT", fmt.Sprint(c.MaxInFlight), "must be 1 to 64")
	}
	if c.BufferRecords < 1 {
		bad("BUFFER_RECORDS", fmt.Sprint(c.BufferRecords), "must be at least 1")
	}
	if c.BufferBytes < 1024 {
		bad("BUFFER_BYTES", fmt.Sprint(c.BufferBytes), "must be at least 1024")
	}
	if c.BatchLinger < 0 {
		bad("BATCH_LINGER", c.BatchLinger.String(), "must not be negative")
	}
	if c.RetryInitial <= 0 {
		bad("RETRY_INITIAL", c.RetryInitial.String(), "must be positive")
	}
	if c.RetryMax < c.RetryInitial {
		bad("RETRY_MAX", c.RetryMax.String(), "must be at least KEYRELAY_RETRY_INITIAL")
	}
	if c.ShutdownTimeout <= 0 {
		bad("SHUTDOWN_TIMEOUT", c.ShutdownTimeout.String(), "must be positive")
	}
	return errors.Join(errs...)
}

type varErr struct{ name, value, reason string }

func (e *varErr) Error() string { return e.name + ": " + e.reason }

// redisOptions builds the go-redis options from the URL and its overrides.
func (c *Config) redisOptions() (*redis.Options, error) {
	opt, err := redis.ParseURL(c.RedisURL)
	if err != nil {
		// The URL may hold a password: never echo it.
		return nil, &varErr{envPrefix + "_REDIS_URL", "", "must be redis://[user:password@]host:port[/db] or rediss://…: " + strings.TrimPrefix(err.Error(), "redis: ")}
	}
	if c.RedisUsername != "" {
		opt.Username = c.RedisUsername
	}
	if c.RedisPassword != "" {
		opt.Password = c.RedisPassword
	}
	if c.RedisCAFile != "" {
		if opt.TLSConfig == nil {
			return nil, &varErr{envPrefix + "_REDIS_CA_FILE", c.RedisCAFile, "is only used with a rediss:// KEYRELAY_REDIS_URL"}
		}
		pem, err := os.ReadFile(c.RedisCAFile)
		if err != nil {
			return nil, &varErr{envPrefix + "_REDIS_CA_FILE", c.RedisCAFile, err.Error()}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &varErr{envPrefix + "_REDIS_CA_FILE", c.RedisCAFile, "holds no PEM certificate"}
		}
		opt.TLSConfig.RootCAs = pool
	}
	if opt.TLSConfig != nil {
		opt.TLSConfig.MinVersion = tls.VersionTLS12
	}
	if c.RedisIAMAuth {
		// A fresh token for every new connection; no I/O until the first.
		opt.CredentialsProviderContext = iamauth.DefaultCredentialsProvider(iamauth.Config{
			CacheID: c.RedisIAMCacheID, UserID: opt.Username, Serverless: c.RedisIAMServerless})
	}
	return opt, nil
}

func trimList(in []string) []string {
	out := in[:0]
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// configVariables lists every variable keyrelay reads, for the unknown
// variable check and for tests of deploy/ files.
func configVariables() []string {
	var b strings.Builder
	if err := envconfig.Usagef(envPrefix, &Config{}, &b, "{{range .}}{{usage_key .}}\n{{end}}"); err != nil {
		panic(err) // the template is a constant
	}
	return strings.Fields(b.String())
}

// usageTable is the template of `keyrelay help --markdown`, the README table.
const usageTable = `| variable | default | meaning |
| --- | --- | --- |
{{range .}}| ` + "`{{usage_key .}}`" + ` | {{with usage_default .}}` + "`{{.}}`" + `{{else}}—{{end}} | {{usage_description .}} |
{{end}}`

// usageList is the template of `keyrelay help`.
const usageList = `{{range .}}  {{usage_key .}}{{with usage_default .}} (default {{.}}){{end}}
      {{usage_description .}}
{{end}}`
