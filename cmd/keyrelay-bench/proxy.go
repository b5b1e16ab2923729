package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// billChunk is the payload size AWS bills as one SQS/SNS request.
// https://aws.amazon.com/sqs/pricing/ ("each 64 KB chunk of a payload is
// billed as 1 request")
const billChunk = 64 << 10

// proxy is a reverse proxy in front of fauxqs that counts keyrelay's
// send requests, their bytes and billed requests, counts the connections
// keyrelay opens (a reused connection is opened once), and can play an
// outage (503 to every send).
type proxy struct {
	URL     string
	srv     *http.Server
	ln      net.Listener
	outage  atomic.Bool
	sends   atomic.Int64 // SendMessageBatch / PublishBatch requests forwarded
	bytes   atomic.Int64 // their body bytes
	billed  atomic.Int64 // sum over them of ceil(body / 64 KiB)
	refused atomic.Int64 // sends answered 503 during an outage
	conns   atomic.Int64 // connections accepted
}

func startProxy(target string) (*proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{URL: "http://" + ln.Addr().String(), ln: ln}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}
	rp.ErrorLog = nil
	p.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			target := r.Header.Get("X-Amz-Target")
			send := strings.HasSuffix(target, ".SendMessageBatch") || strings.HasSuffix(target, ".SendMessage")
			if !send && r.Method == http.MethodPost && r.Header.Get("X-Amz-Target") == "" {
				// Query protocol (SNS): the action is in the form body.
				body, _ := io.ReadAll(r.Body)
				r.Body = io.NopCloser(bytes.NewReader(body))
				send = bytes.Contains(body, []byte("Action=PublishBatch")) || bytes.Contains(body, []byte("Action=Publish&"))
			}
			if send {
				if p.outage.Load() {
					p.refused.Add(1)
					w.Header().Set("Content-Type", "application/x-amz-json-1.0")
					w.WriteHeader(http.StatusServiceUnavailable)
					_, _ = io.WriteString(w, `{"__type":"com.amazonaws.sqs#ServiceUnavailable","message":"keyrelay-bench: simulated outage"}`)
					return
				}
				n := r.ContentLength
				if n < 0 {
					body, _ := io.ReadAll(r.Body)
					r.Body = io.NopCloser(bytes.NewReader(body))
					n = int64(len(body))
				}
				p.sends.Add(1)
				p.bytes.Add(n)
				p.billed.Add(max(1, (n+billChunk-1)/billChunk))
			}
			rp.ServeHTTP(w, r)
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				p.conns.Add(1)
			}
		},
	}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

func (p *proxy) close() { _ = p.srv.Close() }
