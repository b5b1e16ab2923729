package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/arn"
	"github.com/kelseyhightower/envconfig"
	"github.com/redis/go-redis/v9"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/bridge/iamauth"
	"github.com/keyrelay/keyrelay/bridge/spool"
	"github.com/keyrelay/keyrelay/sinks/awsbatch"
)

// envPrefix is the prefix of every variable.
const envPrefix = "KEYRELAY"

// Config is keyrelay's whole configuration, read from KEYRELAY_* variables.
// The struct is the single source of `keyrelay help` and the README table;
// the desc tags are user documentation.
type Config struct {
	RedisConfig
	ContinuityConfig
	FilterConfig
	SinkConfig
	BufferConfig
	SpoolConfig
	HAConfig
	OpsConfig
}

// HAConfig is the pair (or more) of instances with exact handover.
type HAConfig struct {
	HA      bool          `envconfig:"HA" default:"false" desc:"true: instances sharing KEYRELAY_NAME elect one leader through a lease in Redis; the leader publishes, the others subscribe, hold what they receive and take over from the leader's last delivered record (record ids are then the same in every instance). Needs KEYRELAY_SPOOL_DIR and markers"`
	HALease time.Duration `envconfig:"HA_LEASE" default:"5s" desc:"with KEYRELAY_HA: the leader's lease; a killed or cut-off leader is replaced within about this long, and a leader that cannot renew it stands by after three quarters of it"`
}

// RedisConfig is the Redis endpoint and the subscription's health checks.
type RedisConfig struct {
	RedisURL         string           `envconfig:"REDIS_URL" default:"redis://localhost:6379" desc:"Redis/Valkey primary endpoint (with cluster mode enabled: the configuration endpoint, or any node): redis://host:port, or rediss:// for TLS; user:password@ allowed"`
	RedisMode        bridge.RedisMode `envconfig:"REDIS_MODE" default:"auto" desc:"auto asks the endpoint (INFO cluster); standalone: the one primary the endpoint names; cluster: every primary of a cluster with cluster mode enabled, following the topology. A mode the server contradicts stops start-up"`
	ClusterRefresh   time.Duration    `envconfig:"CLUSTER_REFRESH_INTERVAL" default:"5s" desc:"cluster mode: how often the topology is read again (also at once when a subscription breaks or a node is demoted, and fast until every shard has a primary)"`
	RedisUsername    string           `envconfig:"REDIS_USERNAME" desc:"RBAC user name; overrides the URL's"`
	RedisPassword    string           `envconfig:"REDIS_PASSWORD" desc:"AUTH token or RBAC password; overrides the URL's; never logged"`
	RedisCAFile      string           `envconfig:"REDIS_CA_FILE" desc:"PEM file of CA certificates for rediss:// (default: the system roots)"`
	HealthInterval   time.Duration    `envconfig:"REDIS_HEALTH_INTERVAL" default:"1s" desc:"the subscription pings itself this often, busy or not (the answer anchors gap windows like a marker); it is dead when a ping stays unanswered for twice this long while nothing arrives"`
	FailoverInterval time.Duration    `envconfig:"REDIS_FAILOVER_CHECK_INTERVAL" default:"5s" desc:"how often a fresh connection checks that the endpoint still names the subscribed primary; 0 disables"`

	// The password from a file instead (secrets that are files).
	RedisPasswordFile string `envconfig:"REDIS_PASSWORD_FILE" desc:"file holding the AUTH token or RBAC password, instead of KEYRELAY_REDIS_PASSWORD (overrides the URL's; one trailing newline is ignored; never logged): a Kubernetes secret volume, or a systemd credential (LoadCredential=NAME:…): its path, or NAME alone, taken in $CREDENTIALS_DIRECTORY; read at start"`

	// IAM authentication (ElastiCache Valkey 7.2+ / Redis OSS 7.0+).
	RedisIAMAuth       bool   `envconfig:"REDIS_IAM_AUTH" default:"false" desc:"authenticate as an IAM-enabled ElastiCache user with a fresh SigV4 token per connection (needs rediss://, KEYRELAY_REDIS_USERNAME and KEYRELAY_REDIS_IAM_CACHE_ID); connections are renewed after 11 h"`
	RedisIAMCacheID    string `envconfig:"REDIS_IAM_CACHE_ID" desc:"with IAM auth: the replication group id (or serverless cache name) the token is signed for"`
	RedisIAMServerless bool   `envconfig:"REDIS_IAM_SERVERLESS" default:"false" desc:"with IAM auth: KEYRELAY_REDIS_IAM_CACHE_ID names a serverless cache"`
}

// ContinuityConfig is keyrelay's own channel and keys in Redis.
type ContinuityConfig struct {
	Name           string        `envconfig:"NAME" default:"keyrelay" desc:"names the group of instances that relay one cache (letters, digits, . _ -); keyrelay's own channel and keys are keyrelay:NAME:… and never become records"`
	MarkerInterval time.Duration `envconfig:"MARKER_INTERVAL" default:"1s" desc:"how often keyrelay publishes a continuity marker on its channel keyrelay:NAME:markers and reads it back: a gap's since is the send time of the last marker that came back; 0 disables markers and the alive key keyrelay:NAME:alive that restart gaps rest on (gap windows then rest on the subscription's pings)"`
}

// Prefix is the start of every key and channel keyrelay uses itself.
func (c ContinuityConfig) Prefix() string { return "keyrelay:" + c.Name + ":" }

// MarkerChannel is the channel of the continuity markers.
func (c ContinuityConfig) MarkerChannel() string { return c.Prefix() + "markers" }

// FilterConfig selects what is forwarded.
type FilterConfig struct {
	Channels bridge.ChannelKind `envconfig:"CHANNELS" default:"keyevent" desc:"notification channels to read: keyevent or keyspace"`
	Events   []string           `envconfig:"EVENTS" desc:"comma-separated event names to forward, e.g. expired,evicted (empty: all)"`
	Keys     []string           `envconfig:"KEYS" desc:"comma-separated Redis glob patterns, matched as Redis's KEYS matches them (a [ class left open is refused); only matching keys are forwarded (empty: all)"`
	DBs      []int              `envconfig:"DBS" desc:"comma-separated database numbers (empty: all)"`
}

// SinkConfig selects and configures the sinks.
type SinkConfig struct {
	Sinks       []string         `envconfig:"SINKS" default:"stdout" desc:"comma-separated sinks, each gets every record: stdout, sqs, sns"`
	SQSQueueURL string           `envconfig:"SQS_QUEUE_URL" desc:"SQS queue URL; required when sqs is a sink; a name ending in .fifo is a FIFO queue"`
	SNSTopicARN string           `envconfig:"SNS_TOPIC_ARN" desc:"SNS topic ARN; required when sns is a sink; a name ending in .fifo is a FIFO topic"`
	FIFOGroup   awsbatch.GroupBy `envconfig:"FIFO_GROUP" default:"key" desc:"FIFO message group id: key, event, db, or fixed:NAME (a constant group)"`
	MaxInFlight int              `envconfig:"SINK_MAX_IN_FLIGHT" default:"4" desc:"concurrent batches per SQS/SNS sink (FIFO targets always use 1, to keep order)"`
	Pack        awsbatch.Packing `envconfig:"PACK" default:"off" desc:"off: one record per SQS/SNS message; ndjson: many records per message, one JSON record per line, with the type, event and db attributes all its records share (cuts billed requests about 30-fold; standard queues and topics only)"`
}

// BufferConfig is the buffer between the reader and each sink, batching and
// retry.
type BufferConfig struct {
	BufferRecords int             `envconfig:"BUFFER_RECORDS" default:"100000" desc:"records buffered per sink while it is slow or down"`
	BufferBytes   int64           `envconfig:"BUFFER_BYTES" default:"67108864" desc:"encoded bytes buffered per sink (64 MiB)"`
	Overflow      bridge.Overflow `envconfig:"OVERFLOW" default:"drop-newest" desc:"what a full buffer drops: drop-newest or drop-oldest; either way a gap record reports it"`
	BatchLinger   time.Duration   `envconfig:"BATCH_LINGER" default:"20ms" desc:"the longest a batch waits to fill before it is sent, counted from the arrival of its first record"`
	RetryInitial  time.Duration   `envconfig:"RETRY_INITIAL" default:"100ms" desc:"first retry back-off (doubles, with jitter)"`
	RetryMax      time.Duration   `envconfig:"RETRY_MAX" default:"10s" desc:"longest retry back-off"`
	StallTimeout  time.Duration   `envconfig:"SINK_STALL_TIMEOUT" default:"10s" desc:"a publish blocked longer than this (a standard output nobody reads) makes /readyz fail"`
}

// SpoolConfig is the durable spool: records on disk between the reader and
// the sinks, so that a crash or a restart loses none.
type SpoolConfig struct {
	SpoolDir          string           `envconfig:"SPOOL_DIR" desc:"directory of the durable spool: every record is written there before any sink sees it, and survives a crash or restart of keyrelay until each sink has accepted it (created if missing; one keyrelay per directory). Empty: records wait in memory and a crash loses them"`
	SpoolMaxBytes     int64            `envconfig:"SPOOL_MAX_BYTES" default:"1073741824" desc:"with a spool: the most its segment files may take on disk (1 GiB; at least two segments). When it is reached KEYRELAY_OVERFLOW applies, and a gap record reports the exact count"`
	SpoolSegmentBytes int64            `envconfig:"SPOOL_SEGMENT_BYTES" default:"67108864" desc:"with a spool: size of one segment file (64 MiB); space is freed a whole file at a time, once every sink has passed it"`
	SpoolSync         spool.SyncPolicy `envconfig:"SPOOL_SYNC" default:"interval" desc:"with a spool: interval fsyncs every second (a power loss or OS crash can cost the last second; a process crash costs nothing); every fsyncs each batch before it is handed on"`
}

// OpsConfig is logging, HTTP and shutdown.
type OpsConfig struct {
	HTTPAddr        string        `envconfig:"HTTP_ADDR" default:":9180" desc:"address of /healthz, /readyz and /metrics; empty disables"`
	LogLevel        LogLevel      `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	LogFormat       LogFormat     `envconfig:"LOG_FORMAT" default:"json" desc:"json or text; logs go to stderr"`
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"25s" desc:"how long a stop may spend delivering buffered records (ECS kills after its stopTimeout, 30 s by default)"`
	EMFInterval     time.Duration `envconfig:"EMF_INTERVAL" default:"0" desc:"how often one CloudWatch embedded-metric-format line (namespace keyrelay) is written to stderr, which CloudWatch Logs (the ECS awslogs driver) turns into metrics without a collector; also once at the stop; 0 (off) or from 1s to 1h"`
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
		if strings.HasPrefix(name, envPrefix+"_") && !slices.Contains(configVariables(), name) && !serviceLink(name) {
			if _, bad := restore[name]; !bad {
				problems = append(problems, fmt.Errorf("%s: unknown variable (see keyrelay help)", name))
			}
		}
	}
	cfg.Events, cfg.Keys, cfg.Sinks = trimList(cfg.Events), trimList(cfg.Keys), trimList(cfg.Sinks)
	if err := cfg.Validate(); err != nil {
		problems = append(problems, err.(interface{ Unwrap() []error }).Unwrap()...)
	}
	if len(problems) > 0 {
		return nil, &ConfigError{Problems: problems}
	}
	return &cfg, nil
}

// serviceLinkRE matches the names Kubernetes gives the variables of a
// Service's link (its name upper-cased, '-' as '_'): NAME_SERVICE_HOST,
// NAME_SERVICE_PORT, NAME_SERVICE_PORT_<PORTNAME>, NAME_PORT,
// NAME_PORT_<N>_<PROTO> and its _PROTO, _PORT, _ADDR.
var serviceLinkRE = regexp.MustCompile(`^` + envPrefix + `(_[A-Z0-9_]+)?_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT|PORT_[0-9]+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)$`)

// serviceLink reports the variables Kubernetes injects for a Service named
// keyrelay or keyrelay-… (KEYRELAY_SERVICE_HOST, KEYRELAY_PORT_9180_TCP_ADDR,
// KEYRELAY_METRICS_SERVICE_PORT, …): they are not keyrelay's and must not
// stop it. Every one of its names ends in SERVICE_HOST, SERVICE_PORT…, or
// PORT…, which no keyrelay variable does.
func serviceLink(name string) bool {
	return serviceLinkRE.MatchString(name) && !slices.Contains(configVariables(), name)
}

func parseReason(pe *envconfig.ParseError) string {
	switch pe.TypeName {
	case "time.Duration", "Duration":
		return "must be a duration such as 500ms, 5s or 1m"
	case "int", "int64":
		return "must be a whole number"
	case "bool":
		return "must be true or false"
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

// problems collects configuration problems, each naming its variable.
type problems struct{ errs []error }

// bad records a problem with KEYRELAY_<suffix>=value.
func (p *problems) bad(suffix, value, reason string) {
	p.errs = append(p.errs, varError(envPrefix+"_"+suffix, value, reason))
}

// interval checks a duration against its bounds; zeroOK allows 0 (off).
func (p *problems) interval(suffix string, d, lo, hi time.Duration, zeroOK bool) {
	if (d == 0 && zeroOK) || (d >= lo && d <= hi) {
		return
	}
	allowed := fmt.Sprintf("must be from %s to %s", lo, hi)
	if zeroOK {
		allowed = fmt.Sprintf("must be 0 (off) or from %s to %s", lo, hi)
	}
	p.bad(suffix, d.String(), allowed)
}

// Validate checks every field and returns all problems, joined. It does not
// change the configuration (lists are trimmed at load).
func (c *Config) Validate() error {
	var p problems
	c.RedisConfig.validate(&p)
	c.ContinuityConfig.validate(&p)
	c.FilterConfig.validate(&p)
	c.SinkConfig.validate(&p)
	c.BufferConfig.validate(&p)
	c.SpoolConfig.validate(&p)
	c.validateHA(&p)
	c.OpsConfig.validate(&p)
	return errors.Join(p.errs...)
}

// Warnings are configuration oddities that do not stop start-up; the daemon
// logs them.
func (c *Config) Warnings() []string {
	var w []string
	for _, e := range c.Events {
		if !bridge.KnownEvent(e) {
			w = append(w, fmt.Sprintf("KEYRELAY_EVENTS: %q is not an event name Redis publishes (a module's own event, or a typo?)", e))
		}
	}
	return w
}

func (c *RedisConfig) validate(p *problems) {
	if opt, err := c.redisOptions(); err != nil {
		var ve *varErr
		if errors.As(err, &ve) {
			p.errs = append(p.errs, varError(ve.name, ve.value, ve.reason))
		} else {
			p.bad("REDIS_URL", "", err.Error())
		}
	} else if c.RedisIAMAuth {
		if opt.TLSConfig == nil {
			p.bad("REDIS_IAM_AUTH", "true", "needs a rediss:// KEYRELAY_REDIS_URL: ElastiCache accepts IAM authentication only with in-transit encryption")
		}
		if opt.Username == "" {
			p.bad("REDIS_USERNAME", "", "required with KEYRELAY_REDIS_IAM_AUTH=true: the IAM-enabled ElastiCache user (its user name and user id are identical)")
		}
		if c.RedisPasswordFile != "" {
			p.bad("REDIS_PASSWORD_FILE", c.RedisPasswordFile, "must be empty with KEYRELAY_REDIS_IAM_AUTH=true: the IAM token is the password")
		} else if opt.Password != "" {
			p.bad("REDIS_PASSWORD", "", "must be empty with KEYRELAY_REDIS_IAM_AUTH=true (also in the URL): the IAM token is the password")
		}
		if c.RedisIAMCacheID == "" {
			p.bad("REDIS_IAM_CACHE_ID", "", "required with KEYRELAY_REDIS_IAM_AUTH=true: the replication group id (or serverless cache name)")
		} else if err := iamauth.ValidateCacheID(c.RedisIAMCacheID); err != nil {
			p.bad("REDIS_IAM_CACHE_ID", c.RedisIAMCacheID, err.Error())
		}
	} else {
		if c.RedisIAMCacheID != "" {
			p.bad("REDIS_IAM_CACHE_ID", c.RedisIAMCacheID, "only used with KEYRELAY_REDIS_IAM_AUTH=true")
		}
		if c.RedisIAMServerless {
			p.bad("REDIS_IAM_SERVERLESS", "true", "only used with KEYRELAY_REDIS_IAM_AUTH=true")
		}
	}
	p.interval("REDIS_HEALTH_INTERVAL", c.HealthInterval, 100*time.Millisecond, time.Minute, false)
	p.interval("REDIS_FAILOVER_CHECK_INTERVAL", c.FailoverInterval, 100*time.Millisecond, time.Hour, true)
	p.interval("CLUSTER_REFRESH_INTERVAL", c.ClusterRefresh, time.Second, 5*time.Minute, false)
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func (c *ContinuityConfig) validate(p *problems) {
	if !nameRE.MatchString(c.Name) {
		p.bad("NAME", c.Name, "must be 1 to 64 letters, digits, '.', '_' or '-'")
	}
	p.interval("MARKER_INTERVAL", c.MarkerInterval, 100*time.Millisecond, time.Minute, true)
}

func (c *FilterConfig) validate(p *problems) {
	for _, e := range c.Events {
		switch {
		case strings.ContainsAny(e, " \t\r\n*?[]"):
			p.bad("EVENTS", strings.Join(c.Events, ","), fmt.Sprintf("event %q: event names have no spaces or glob characters", e))
		case strings.ToLower(e) != e:
			p.bad("EVENTS", strings.Join(c.Events, ","), fmt.Sprintf("event %q: Redis's event names are lower case (%s)", e, strings.ToLower(e)))
		}
	}
	for _, k := range c.Keys {
		if err := bridge.CheckGlob(k); err != nil {
			p.bad("KEYS", strings.Join(c.Keys, ","), fmt.Sprintf("pattern %q: %v", k, err))
		}
	}
	for _, db := range c.DBs {
		if db < 0 {
			p.bad("DBS", fmt.Sprint(c.DBs), "database numbers are 0 or more")
			break
		}
	}
}

func (c *SinkConfig) validate(p *problems) {
	if len(c.Sinks) == 0 {
		p.bad("SINKS", "", "name at least one sink: stdout, sqs, sns")
	}
	seen := map[string]bool{}
	for _, s := range c.Sinks {
		switch {
		case s != "stdout" && s != "sqs" && s != "sns":
			p.bad("SINKS", strings.Join(c.Sinks, ","), fmt.Sprintf("unknown sink %q: allowed are stdout, sqs, sns", s))
		case seen[s]:
			p.bad("SINKS", strings.Join(c.Sinks, ","), fmt.Sprintf("sink %q named twice", s))
		}
		seen[s] = true
	}
	switch {
	case seen["sqs"] && c.SQSQueueURL == "":
		p.bad("SQS_QUEUE_URL", "", "required when sqs is a sink")
	case seen["sqs"]:
		if arn.IsARN(c.SQSQueueURL) {
			p.bad("SQS_QUEUE_URL", c.SQSQueueURL, "is a queue ARN: give the queue URL, such as https://sqs.us-east-1.amazonaws.com/123456789012/my-queue (aws sqs get-queue-url)")
		} else if u, err := url.Parse(c.SQSQueueURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			p.bad("SQS_QUEUE_URL", c.SQSQueueURL, "must be a queue URL such as https://sqs.us-east-1.amazonaws.com/123456789012/my-queue")
		}
	case c.SQSQueueURL != "":
		p.bad("SQS_QUEUE_URL", c.SQSQueueURL, "only used when sqs is a sink (KEYRELAY_SINKS=…,sqs)")
	}
	switch {
	case seen["sns"] && c.SNSTopicARN == "":
		p.bad("SNS_TOPIC_ARN", "", "required when sns is a sink")
	case seen["sns"]:
		if err := checkTopicARN(c.SNSTopicARN); err != nil {
			p.bad("SNS_TOPIC_ARN", c.SNSTopicARN, "must be a topic ARN such as arn:aws:sns:us-east-1:123456789012:my-topic: "+err.Error())
		}
	case c.SNSTopicARN != "":
		p.bad("SNS_TOPIC_ARN", c.SNSTopicARN, "only used when sns is a sink (KEYRELAY_SINKS=…,sns)")
	}
	if !seen["sqs"] && !seen["sns"] {
		// Variables of the AWS sinks, set explicitly without one.
		for _, v := range []string{"FIFO_GROUP", "PACK", "SINK_MAX_IN_FLIGHT"} {
			if val, ok := os.LookupEnv(envPrefix + "_" + v); ok {
				p.bad(v, val, "only used with an sqs or sns sink")
			}
		}
	}
	for _, t := range [][2]string{{"sqs", c.SQSQueueURL}, {"sns", c.SNSTopicARN}} {
		if seen[t[0]] && awsbatch.CheckPacking(c.Pack, t[1]) != nil {
			p.bad("PACK", string(c.Pack), fmt.Sprintf("packing is not available for the FIFO %s target %s (per-record deduplication and group order); use off", t[0], t[1]))
		}
	}
	if c.MaxInFlight < 1 || c.MaxInFlight > 64 {
		p.bad("SINK_MAX_IN_FLIGHT", fmt.Sprint(c.MaxInFlight), "must be 1 to 64")
	}
}

// checkTopicARN checks an SNS topic ARN, arn:PARTITION:sns:REGION:ACCOUNT:NAME
// (the SNS API reference's form), parsed by the SDK's arn package.
func checkTopicARN(s string) error {
	a, err := arn.Parse(s)
	switch {
	case err != nil:
		return err
	case a.Service != "sns":
		return fmt.Errorf("the service is %q, not sns", a.Service)
	case a.Region == "" || a.AccountID == "":
		return errors.New("the region and the account id are required")
	case a.Resource == "" || strings.Contains(a.Resource, ":"):
		return errors.New("the resource must be a topic name (a subscription ARN has one more part)")
	}
	return nil
}

func (c *BufferConfig) validate(p *problems) {
	if c.BufferRecords < 1 {
		p.bad("BUFFER_RECORDS", fmt.Sprint(c.BufferRecords), "must be at least 1")
	}
	if c.BufferBytes < 1024 {
		p.bad("BUFFER_BYTES", fmt.Sprint(c.BufferBytes), "must be at least 1024")
	}
	p.interval("BATCH_LINGER", c.BatchLinger, 0, 10*time.Second, false)
	p.interval("RETRY_INITIAL", c.RetryInitial, 10*time.Millisecond, time.Minute, false)
	if c.RetryMax < c.RetryInitial {
		p.bad("RETRY_MAX", c.RetryMax.String(), "must be at least KEYRELAY_RETRY_INITIAL")
	} else {
		p.interval("RETRY_MAX", c.RetryMax, 10*time.Millisecond, 10*time.Minute, false)
	}
	p.interval("SINK_STALL_TIMEOUT", c.StallTimeout, time.Second, time.Hour, false)
}

func (c *SpoolConfig) validate(p *problems) {
	if c.SpoolSegmentBytes < 4096 {
		p.bad("SPOOL_SEGMENT_BYTES", fmt.Sprint(c.SpoolSegmentBytes), "must be at least 4096")
	} else if c.SpoolMaxBytes < 2*c.SpoolSegmentBytes {
		p.bad("SPOOL_MAX_BYTES", fmt.Sprint(c.SpoolMaxBytes), fmt.Sprintf("must be at least two segments (2 × KEYRELAY_SPOOL_SEGMENT_BYTES = %d)", 2*c.SpoolSegmentBytes))
	}
}

func (c *Config) validateHA(p *problems) {
	p.interval("HA_LEASE", c.HALease, time.Second, time.Minute, false)
	if !c.HA {
		return
	}
	if c.SpoolDir == "" {
		p.bad("HA", "true", "needs KEYRELAY_SPOOL_DIR: the leader's delivered position is its spool's")
	}
	if c.MarkerInterval == 0 {
		p.bad("HA", "true", "needs markers (KEYRELAY_MARKER_INTERVAL above 0): record ids are placed after them")
	} else if c.HALease > 0 && c.MarkerInterval > c.HALease/2 {
		p.bad("MARKER_INTERVAL", c.MarkerInterval.String(), fmt.Sprintf("with KEYRELAY_HA it must be at most half of KEYRELAY_HA_LEASE (%s)", c.HALease))
	}
}

func (c *OpsConfig) validate(p *problems) {
	if c.HTTPAddr != "" {
		if _, port, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			p.bad("HTTP_ADDR", c.HTTPAddr, "must be host:port or :port, e.g. :9180 (empty disables)")
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			p.bad("HTTP_ADDR", c.HTTPAddr, "the port must be a number from 0 to 65535")
		}
	}
	p.interval("SHUTDOWN_TIMEOUT", c.ShutdownTimeout, time.Second, time.Hour, false)
	p.interval("EMF_INTERVAL", c.EMFInterval, time.Second, time.Hour, true)
}

type varErr struct{ name, value, reason string }

func (e *varErr) Error() string { return e.name + ": " + e.reason }

// redisOptions builds the go-redis options from the URL and its overrides.
func (c *RedisConfig) redisOptions() (*redis.Options, error) {
	const urlForm = "must be redis://[user:password@]host:port[/db] or rediss://…"
	opt, err := redis.ParseURL(c.RedisURL)
	if err != nil {
		// The URL may hold a password: never echo it, nor url.Error's
		// copy of it.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, &varErr{envPrefix + "_REDIS_URL", "", urlForm + ": " + redactURL(strings.TrimPrefix(err.Error(), "redis: "), c.RedisURL)}
	}
	if u, err := url.Parse(c.RedisURL); err == nil {
		for k := range u.Query() {
			if k == "skip_verify" || strings.Contains(strings.ToLower(k), "insecure") {
				return nil, &varErr{envPrefix + "_REDIS_URL", "", fmt.Sprintf("option %q is refused: keyrelay never skips TLS verification (for a private CA set KEYRELAY_REDIS_CA_FILE)", k)}
			}
		}
	}
	if opt.TLSConfig != nil && opt.TLSConfig.InsecureSkipVerify {
		return nil, &varErr{envPrefix + "_REDIS_URL", "", "keyrelay never skips TLS verification (for a private CA set KEYRELAY_REDIS_CA_FILE)"}
	}
	if _, port, err := net.SplitHostPort(opt.Addr); err != nil {
		return nil, &varErr{envPrefix + "_REDIS_URL", "", urlForm}
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, &varErr{envPrefix + "_REDIS_URL", "", urlForm + ": the port must be 1 to 65535"}
	}
	if c.RedisUsername != "" {
		opt.Username = c.RedisUsername
	}
	if c.RedisPassword != "" && c.RedisPasswordFile != "" {
		return nil, &varErr{envPrefix + "_REDIS_PASSWORD_FILE", c.RedisPasswordFile, "set either KEYRELAY_REDIS_PASSWORD or KEYRELAY_REDIS_PASSWORD_FILE, not both"}
	}
	if c.RedisPassword != "" {
		opt.Password = c.RedisPassword
	}
	if c.RedisPasswordFile != "" && !c.RedisIAMAuth { // with IAM auth validate refuses it
		path := c.passwordFilePath()
		pass, err := readPasswordFile(path)
		if err != nil {
			reason := err.Error()
			if path != c.RedisPasswordFile {
				reason = path + " ($CREDENTIALS_DIRECTORY): " + reason
			}
			return nil, &varErr{envPrefix + "_REDIS_PASSWORD_FILE", c.RedisPasswordFile, reason}
		}
		opt.Password = pass
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

// passwordFilePath is KEYRELAY_REDIS_PASSWORD_FILE, a relative name taken
// in systemd's $CREDENTIALS_DIRECTORY when systemd sets it: the unit's
// LoadCredential=NAME:… is then KEYRELAY_REDIS_PASSWORD_FILE=NAME in the
// unit, and in a transient unit (systemd-run -p LoadCredential=…) alike,
// whose directory has another name.
func (c *RedisConfig) passwordFilePath() string {
	if dir := os.Getenv("CREDENTIALS_DIRECTORY"); dir != "" && !filepath.IsAbs(c.RedisPasswordFile) {
		return filepath.Join(dir, c.RedisPasswordFile)
	}
	return c.RedisPasswordFile
}

// readPasswordFile reads a password file: a systemd credential or a
// Kubernetes secret key. One trailing newline (echo's, an editor's) is not
// part of the password. Errors name the path, never the content.
func readPasswordFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is in the message already
		}
		return "", fmt.Errorf("cannot read the password file: %w", err)
	}
	pass, _ := strings.CutSuffix(string(b), "\n")
	pass, _ = strings.CutSuffix(pass, "\r")
	if pass == "" {
		return "", errors.New("the password file is empty")
	}
	if strings.ContainsAny(pass, "\r\n") {
		return "", errors.New("the password file holds more than one line")
	}
	return pass, nil
}

// redactURL removes the user information of raw (which may hold a password)
// from msg.
func redactURL(msg, raw string) string {
	_, rest, ok := strings.Cut(raw, "://")
	if !ok {
		rest = raw
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.LastIndexByte(rest, '@'); i > 0 {
		msg = strings.ReplaceAll(msg, rest[:i], "REDACTED")
		if _, pass, ok := strings.Cut(rest[:i], ":"); ok && pass != "" {
			msg = strings.ReplaceAll(msg, pass, "REDACTED")
		}
	}
	return msg
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
