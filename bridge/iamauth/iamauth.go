package iamauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/config"
)

const (
	// TokenLifetime is how long a token is valid (X-Amz-Expires): 15
	// minutes, the documented maximum.
	TokenLifetime = 900 * time.Second
	// ConnectionLimit is how long ElastiCache keeps an IAM-authenticated
	// connection before it disconnects it.
	ConnectionLimit = 12 * time.Hour
	// PlannedReconnectAfter is the connection age at which a long-lived
	// connection (a subscription) should be replaced: an hour before
	// ConnectionLimit.
	PlannedReconnectAfter = 11 * time.Hour

	signingService = "elasticache"
	// emptyPayloadHash is the SHA-256 of an empty body: the token is a GET.
	emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

// cacheIDPattern is the documented form of replication group ids and
// serverless cache names: a letter, then letters, digits and single hyphens.
var cacheIDPattern = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9]*(-[a-zA-Z0-9]+)*$`)

// ValidateCacheID reports whether id can be a replication group id or a
// serverless cache name (at most 40 characters of the documented form).
func ValidateCacheID(id string) error {
	if len(id) > 40 || !cacheIDPattern.MatchString(id) {
		return errors.New("must be a replication group id or serverless cache name: a letter, then letters, digits and single hyphens, at most 40 characters")
	}
	return nil
}

// Config names what a token grants access to.
type Config struct {
	// CacheID is the replication group id (node-based) or the serverless
	// cache name; it is signed in lower case, as ElastiCache stores it.
	CacheID string
	// UserID is the IAM-enabled ElastiCache user id, which is also the user
	// name sent with AUTH.
	UserID string
	// Serverless selects ResourceType=ServerlessCache.
	Serverless bool
}

// Generator signs tokens with the credentials and region of an aws.Config.
// It is safe for concurrent use.
type Generator struct {
	cfg    Config
	region string
	creds  aws.CredentialsProvider
	signer *v4.Signer
	// now is the signing clock; tests fix it.
	now func() time.Time
}

// New returns a Generator for c, signing with awsCfg's credentials (the SDK's
// standard chain: task role, instance profile, environment) and region.
func New(awsCfg aws.Config, c Config) (*Generator, error) {
	if err := ValidateCacheID(c.CacheID); err != nil {
		return nil, fmt.Errorf("iamauth: cache id %q: %w", c.CacheID, err)
	}
	if c.UserID == "" {
		return nil, errors.New("iamauth: a user id is required")
	}
	if awsCfg.Region == "" {
		return nil, errors.New("iamauth: no AWS region: set AWS_REGION")
	}
	if awsCfg.Credentials == nil {
		return nil, errors.New("iamauth: no AWS credentials provider")
	}
	return &Generator{cfg: c, region: awsCfg.Region, creds: awsCfg.Credentials, signer: v4.NewSigner(), now: time.Now}, nil
}

// Token returns a fresh token: the presigned URL without its scheme, valid
// for TokenLifetime.
func (g *Generator) Token(ctx context.Context) (string, error) {
	creds, err := g.creds.Retrieve(ctx)
	if err != nil {
		return "", fmt.Errorf("iamauth: retrieve AWS credentials: %w", err)
	}
	q := url.Values{}
	q.Set("Action", "connect")
	q.Set("User", g.cfg.UserID)
	if g.cfg.Serverless {
		q.Set("ResourceType", "ServerlessCache")
	}
	q.Set("X-Amz-Expires", fmt.Sprint(int(TokenLifetime.Seconds())))
	u := url.URL{Scheme: "http", Host: strings.ToLower(g.cfg.CacheID), Path: "/", RawQuery: q.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", fmt.Errorf("iamauth: %w", err)
	}
	signed, _, err := g.signer.PresignHTTP(ctx, creds, req, emptyPayloadHash, signingService, g.region, g.now().UTC())
	if err != nil {
		return "", fmt.Errorf("iamauth: presign: %w", err)
	}
	return strings.TrimPrefix(signed, "http://"), nil
}

// CredentialsProvider returns a go-redis Options.CredentialsProviderContext:
// go-redis calls it for every new connection, so each connection
// authenticates with a fresh token as the user UserID.
func (g *Generator) CredentialsProvider() func(ctx context.Context) (username, password string, err error) {
	return func(ctx context.Context) (string, string, error) {
		tok, err := g.Token(ctx)
		if err != nil {
			return "", "", err
		}
		return g.cfg.UserID, tok, nil
	}
}

// DefaultCredentialsProvider is CredentialsProvider with the AWS
// configuration loaded from the SDK's standard chain (config.LoadDefaultConfig)
// on first use, so that building redis options does no I/O. A failed load is
// retried on the next connection.
func DefaultCredentialsProvider(c Config) func(ctx context.Context) (username, password string, err error) {
	var (
		mu  sync.Mutex
		gen *Generator
	)
	return func(ctx context.Context) (string, string, error) {
		mu.Lock()
		if gen == nil {
			awsCfg, err := config.LoadDefaultConfig(ctx)
			if err != nil {
				mu.Unlock()
				return "", "", fmt.Errorf("iamauth: load AWS configuration: %w", err)
			}
			if gen, err = New(awsCfg, c); err != nil {
				mu.Unlock()
				return "", "", err
			}
		}
		g := gen
		mu.Unlock()
		return g.CredentialsProvider()(ctx)
	}
}
