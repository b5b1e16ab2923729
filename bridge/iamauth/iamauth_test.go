package iamauth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

var fixedTime = time.Date(2026, 11, 23, 18, 16, 53, 0, time.UTC)

func testGenerator(t *testing.T, c Config, sessionToken string) *Generator {
	t.Helper()
	g, err := New(aws.Config{
		Region:      "eu-west-1",
		Credentials: credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", sessionToken),
	}, c)
	if err != nil {
		t.Fatal(err)
	}
	g.now = func() time.Time { return fixedTime }
	return g
}

// TestTokenShape checks the token against the documented form: the presigned
// URL of GET http://<lowercase cache id>/?Action=connect&User=<user id>, for
// the service elasticache, valid for 900 s, without the scheme.
func TestTokenShape(t *testing.T) {
	for _, tc := range []struct {
		name         string
		cfg          Config
		sessionToken string
		wantResource string
	}{
		{name: "replication group", cfg: Config{CacheID: "My-Cache-01", UserID: "keyrelay"}},
		{name: "serverless", cfg: Config{CacheID: "events", UserID: "keyrelay", Serverless: true}, wantResource: "ServerlessCache"},
		{name: "session token", cfg: Config{CacheID: "my-cache", UserID: "keyrelay"}, sessionToken: "FQoGZXIvYXdzE//session"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := testGenerator(t, tc.cfg, tc.sessionToken).Token(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(tok, "://") {
				t.Fatalf("token %q has a scheme", tok)
			}
			host, rawQuery, ok := strings.Cut(tok, "/?")
			if !ok {
				t.Fatalf("token %q is not host/?query", tok)
			}
			if want := strings.ToLower(tc.cfg.CacheID); host != want {
				t.Errorf("host = %q, want the lowercase cache id %q", host, want)
			}
			q, err := url.ParseQuery(rawQuery)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{
				"Action":              "connect",
				"User":                tc.cfg.UserID,
				"X-Amz-Algorithm":     "AWS4-HMAC-SHA256",
				"X-Amz-Credential":    "AKIDEXAMPLE/20261123/eu-west-1/elasticache/aws4_request",
				"X-Amz-Date":          "20261123T181653Z",
				"X-Amz-Expires":       "900",
				"X-Amz-SignedHeaders": "host",
			}
			if tc.wantResource != "" {
				want["ResourceType"] = tc.wantResource
			}
			if tc.sessionToken != "" {
				want["X-Amz-Security-Token"] = tc.sessionToken
			}
			for k, v := range want {
				if got := q.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			sig := q.Get("X-Amz-Signature")
			if len(sig) != 64 || strings.Trim(sig, "0123456789abcdef") != "" {
				t.Errorf("X-Amz-Signature = %q, want 64 lowercase hex digits", sig)
			}
			wantKeys := len(want) + 1 // + X-Amz-Signature
			if len(q) != wantKeys {
				t.Errorf("query has %d parameters, want %d: %v", len(q), wantKeys, q)
			}
		})
	}
}

// TestTokenDeterministic: same credentials, clock and target give the same
// signature; another user or another moment gives another one.
func TestTokenDeterministic(t *testing.T) {
	ctx := context.Background()
	c := Config{CacheID: "my-cache", UserID: "keyrelay"}
	a, _ := testGenerator(t, c, "").Token(ctx)
	b, _ := testGenerator(t, c, "").Token(ctx)
	if a != b {
		t.Fatalf("tokens differ for the same input:\n%s\n%s", a, b)
	}
	other, _ := testGenerator(t, Config{CacheID: "my-cache", UserID: "other"}, "").Token(ctx)
	later := testGenerator(t, c, "")
	later.now = func() time.Time { return fixedTime.Add(time.Second) }
	l, _ := later.Token(ctx)
	for _, tok := range []string{other, l} {
		if sigOf(t, tok) == sigOf(t, a) {
			t.Errorf("signature did not change: %s", tok)
		}
	}
}

func sigOf(t *testing.T, tok string) string {
	t.Helper()
	_, raw, _ := strings.Cut(tok, "?")
	q, err := url.ParseQuery(raw)
	if err != nil {
		t.Fatal(err)
	}
	return q.Get("X-Amz-Signature")
}

// TestCredentialsProviderFreshToken: every call (go-redis makes one per new
// connection) signs anew, with the user id as the user name.
func TestCredentialsProviderFreshToken(t *testing.T) {
	g := testGenerator(t, Config{CacheID: "my-cache", UserID: "keyrelay"}, "")
	clock := fixedTime
	g.now = func() time.Time { clock = clock.Add(time.Minute); return clock }
	provide := g.CredentialsProvider()
	u1, p1, err := provide(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	u2, p2, _ := provide(context.Background())
	if u1 != "keyrelay" || u2 != "keyrelay" {
		t.Errorf("user names %q, %q; want keyrelay", u1, u2)
	}
	if p1 == p2 {
		t.Error("two connections got the same token")
	}
	if !strings.Contains(p2, "X-Amz-Date=20261123T181853Z") {
		t.Errorf("second token not signed at the second moment: %s", p2)
	}
}

type failingCreds struct{}

func (failingCreds) Retrieve(context.Context) (aws.Credentials, error) {
	return aws.Credentials{}, errors.New("no role")
}

func TestCredentialsError(t *testing.T) {
	g, err := New(aws.Config{Region: "us-east-1", Credentials: failingCreds{}}, Config{CacheID: "c", UserID: "u"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.CredentialsProvider()(context.Background()); err == nil || !strings.Contains(err.Error(), "no role") {
		t.Fatalf("err = %v, want the credentials error", err)
	}
}

func TestNewValidates(t *testing.T) {
	creds := credentials.NewStaticCredentialsProvider("a", "b", "")
	for _, tc := range []struct {
		cfg    aws.Config
		c      Config
		errHas string
	}{
		{aws.Config{Region: "us-east-1", Credentials: creds}, Config{CacheID: "my--cache", UserID: "u"}, "cache id"},
		{aws.Config{Region: "us-east-1", Credentials: creds}, Config{CacheID: "1cache", UserID: "u"}, "cache id"},
		{aws.Config{Region: "us-east-1", Credentials: creds}, Config{CacheID: "my.cache.abc.use1.cache.amazonaws.com", UserID: "u"}, "cache id"},
		{aws.Config{Region: "us-east-1", Credentials: creds}, Config{CacheID: "cache"}, "user id"},
		{aws.Config{Credentials: creds}, Config{CacheID: "cache", UserID: "u"}, "AWS_REGION"},
	} {
		if _, err := New(tc.cfg, tc.c); err == nil || !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("New(%+v) err = %v, want one about %s", tc.c, err, tc.errHas)
		}
	}
}

// TestSignatureVerifies recomputes the SigV4 query signature from the token,
// independently of the SDK, as the server does: canonical request GET / with
// the sorted query minus X-Amz-Signature, header host, the SHA-256 of an
// empty payload.
func TestSignatureVerifies(t *testing.T) {
	const secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
	tok, err := testGenerator(t, Config{CacheID: "My-Cache", UserID: "key relay"}, "").Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	host, raw, _ := strings.Cut(tok, "/?")
	q, _ := url.ParseQuery(raw)
	sig := q.Get("X-Amz-Signature")
	q.Del("X-Amz-Signature")
	canonicalQuery := strings.ReplaceAll(q.Encode(), "+", "%20") // url.Values sorts by key
	canonical := strings.Join([]string{"GET", "/", canonicalQuery, "host:" + host, "", "host", emptyPayloadHash}, "\n")
	scope := "20261123/eu-west-1/elasticache/aws4_request"
	toSign := strings.Join([]string{"AWS4-HMAC-SHA256", "20261123T181653Z", scope, hexSHA256(canonical)}, "\n")
	key := hmacSHA256([]byte("AWS4"+secret), "20261123")
	for _, part := range []string{"eu-west-1", "elasticache", "aws4_request"} {
		key = hmacSHA256(key, part)
	}
	if want := hex.EncodeToString(hmacSHA256(key, toSign)); sig != want {
		t.Fatalf("signature %s, recomputed %s\ncanonical request:\n%s", sig, want, canonical)
	}
}

func hexSHA256(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}
