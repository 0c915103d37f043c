package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/failsafehttp"
	"github.com/failsafe-go/failsafe-go/timeout"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/policy"
)

// env is what the scenarios share: the settings of the run, the dev CA of
// every certificate, and what to close at the end.
type env struct {
	cleanups
	cfg config
	ca  *identity.DevCA
}

// trustDomain is the trust domain of the dev CA and of every policy.
const trustDomain = "mesh.local"

// w3c is the propagator of every traced stack, so that all of them inject
// the same headers.
var w3c = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// telemetry is the pair of OTel providers a stack reports to.
type telemetry struct {
	mp metric.MeterProvider
	tp trace.TracerProvider
}

// telemetryOff records nothing: the noop providers.
func telemetryOff() telemetry {
	return telemetry{metricnoop.NewMeterProvider(), tracenoop.NewTracerProvider()}
}

// otelSDK returns new providers of the OTel SDK as a service would run them,
// minus the network: metrics into a manual reader, every span sampled by the
// default sampler and handed to a batch processor whose exporter discards.
func (e *env) otelSDK() telemetry {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())),
		sdktrace.WithBatcher(discardExporter{}))
	e.add(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	return telemetry{mp, tp}
}

type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

// newTransport is the http.Transport of every HTTP row: the settings of
// http.DefaultTransport, enough idle connections for 8 callers, and
// HTTP/1.1 everywhere (with and without TLS) so that rows compare alike.
func (e *env) newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	t.ForceAttemptHTTP2 = false
	e.add(t.CloseIdleConnections)
	return t
}

// settings are resilience settings, rendered both as the inmesh policy
// and as failsafe-go policies so that the rows of both do the same.
type settings struct {
	timeout         time.Duration
	attempts        int              // total tries; 1: no retries
	backoff         [2]time.Duration // initial, max
	breakerFailures int              // consecutive failures that open it; 0: no breaker (or the rate form)
	breakerOpen     time.Duration    // open_for of either form
	breakerRate     breakerRate      // inmesh only: the failure-rate form when its rate is set
	outlierFailures int              // inmesh only; 0: no outlier detection
	// concurrency is the inmesh concurrency block's YAML flow mapping
	// ("{max: 4}"); "": none. inmesh only.
	concurrency string
}

// breakerRate is the failure-rate form of inmesh's breaker: open when
// rate of the calls of the last window failed, minCalls at least; probes
// half-open requests.
type breakerRate struct {
	rate     float64
	window   time.Duration
	minCalls int
	probes   int
}

// chainSettings are the full chain of the HTTP and gRPC rows: real users
// always set a timeout.
var chainSettings = settings{
	timeout:         2 * time.Second,
	attempts:        2,
	backoff:         [2]time.Duration{time.Millisecond, 2 * time.Millisecond},
	breakerFailures: 5,
	breakerOpen:     30 * time.Second,
	outlierFailures: 5,
}

// yaml renders s as the fields of a service of the policy.
func (s settings) yaml() string {
	var b strings.Builder
	if s.timeout > 0 {
		fmt.Fprintf(&b, "    timeout: %v\n", s.timeout)
	}
	if s.attempts > 1 {
		fmt.Fprintf(&b, "    retry: {attempts: %d, backoff: {initial: %v, max: %v}, budget: {ratio: 0.2, min_per_second: 10}}\n",
			s.attempts, s.backoff[0], s.backoff[1])
	}
	if s.breakerFailures > 0 {
		fmt.Fprintf(&b, "    circuit_breaker: {consecutive_failures: %d, open_for: %v}\n", s.breakerFailures, s.breakerOpen)
	}
	if r := s.breakerRate; r.rate > 0 {
		fmt.Fprintf(&b, "    circuit_breaker: {failure_rate: %v, window: %v, min_calls: %d, open_for: %v, half_open_requests: %d}\n",
			r.rate, r.window, r.minCalls, s.breakerOpen, r.probes)
	}
	if s.outlierFailures > 0 {
		fmt.Fprintf(&b, "    outlier_detection: {consecutive_failures: %d}\n", s.outlierFailures)
	}
	if s.concurrency != "" {
		fmt.Fprintf(&b, "    concurrency: %s\n", s.concurrency)
	}
	return b.String()
}

// chainPolicy is a policy whose service billing runs the full chain: a
// header route that does not match, a 90/10 split over subsets v1 and v2,
// round robin, and s. v1 and v2 are the endpoints of the subsets; with v2
// empty, both subsets hold v1. tlsMode is "strict" or "disable".
func chainPolicy(tlsMode string, s settings, v1, v2 string) string {
	eps := fmt.Sprintf("      - {address: %s, labels: {version: v1}}\n", v1)
	v2sel := "v1"
	if v2 != "" {
		eps += fmt.Sprintf("      - {address: %s, labels: {version: v2}}\n", v2)
		v2sel = "v2"
	}
	return fmt.Sprintf(`trust_domain: %s
services:
  enrollment: {}
  billing:
    tls: %s
    endpoints:
%s    subsets: {v1: {version: v1}, v2: {version: %s}}
%s    routes:
      - name: canary
        match: {headers: {x-canary: "true"}}
        split: [{subset: v2, weight: 100}]
      - name: default
        split: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]
`, trustDomain, tlsMode, eps, v2sel, s.yaml())
}

// newMesh starts a mesh of service on the policy doc (YAML), reporting to
// tel, with its identity from the run's dev CA. It is closed at the end.
func (e *env) newMesh(service, doc string, tel telemetry) (*mesh.Mesh, error) {
	d, err := policy.Parse([]byte(doc))
	if err != nil {
		return nil, fmt.Errorf("policy of %s: %w", service, err)
	}
	m, err := startMesh(service, d, tel, e.ca.Source(service))
	if err != nil {
		return nil, err
	}
	e.add(func() { _ = m.Close() })
	return m, nil
}

// startMesh starts a mesh of service on doc, reporting to tel, with the
// identity of id.
func startMesh(service string, doc *policy.Document, tel telemetry, id identity.Source) (*mesh.Mesh, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return mesh.New(ctx,
		mesh.WithService(service),
		mesh.WithPolicy(doc),
		mesh.WithLogger(slog.New(slog.DiscardHandler)),
		mesh.WithMeterProvider(tel.mp),
		mesh.WithTracerProvider(tel.tp),
		mesh.WithPropagator(w3c),
		mesh.WithIdentity(id))
}

// failsafeRT wraps next with failsafe-go's policies for s: the timeout
// around everything (as inmesh's timeout bounds the whole call), then the
// retry policy of failsafehttp (5xx, 429 and transport errors; not the
// breaker's refusal, as inmesh), then the breaker, which counts 5xx and
// errors.
func (s settings) failsafeRT(next http.RoundTripper) http.RoundTripper {
	var ps []failsafe.Policy[*http.Response]
	if s.timeout > 0 {
		ps = append(ps, timeout.New[*http.Response](s.timeout))
	}
	if s.attempts > 1 {
		ps = append(ps, failsafehttp.NewRetryPolicyBuilder().
			WithMaxAttempts(s.attempts).
			WithBackoff(s.backoff[0], s.backoff[1]).
			AbortOnErrors(circuitbreaker.ErrOpen).
			ReturnLastFailure(). // the last answer, as the other stacks
			Build())
	}
	if s.breakerFailures > 0 {
		ps = append(ps, circuitbreaker.NewBuilder[*http.Response]().
			HandleIf(func(r *http.Response, err error) bool { return err != nil || r.StatusCode >= 500 }).
			WithFailureThreshold(uint(s.breakerFailures)).
			WithDelay(s.breakerOpen).
			Build())
	}
	return failsafehttp.NewRoundTripper(next, ps...)
}

// otelRT wraps next with otelhttp reporting to tel: one client span and
// the client metrics per call.
func otelRT(next http.RoundTripper, tel telemetry) http.RoundTripper {
	return otelhttp.NewTransport(next,
		otelhttp.WithTracerProvider(tel.tp),
		otelhttp.WithMeterProvider(tel.mp),
		otelhttp.WithPropagators(w3c))
}

// naiveRetry is what a service writes without a library: up to attempts
// tries at once, while the answer is a 5xx or an error.
type naiveRetry struct {
	next     http.RoundTripper
	attempts int
}

func (n naiveRetry) RoundTrip(req *http.Request) (*http.Response, error) {
	for i := 1; ; i++ {
		resp, err := n.next.RoundTrip(req)
		if i == n.attempts || (err == nil && resp.StatusCode < 500) {
			return resp, err
		}
		if err == nil {
			drain(resp)
		}
	}
}

// drain reads and closes resp's body, so that its connection is reused.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
}

// get returns an op that GETs url through rt and wants a 200.
func get(rt http.RoundTripper, url string) func() func() error {
	return func() func() error {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return func() error { return err }
		}
		return func() error {
			resp, err := rt.RoundTrip(req)
			if err != nil {
				return err
			}
			drain(resp)
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
			}
			return nil
		}
	}
}

// wantHTTP1 makes one call through rt and wants a 200 over HTTP/1.1, the
// protocol every HTTP row is meant to speak.
func wantHTTP1(rt http.RoundTripper, url string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return err
	}
	drain(resp)
	if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/1.1" {
		return fmt.Errorf("GET %s: %s over %s, want 200 over HTTP/1.1", url, resp.Status, resp.Proto)
	}
	return nil
}

// listen returns a new listener on a free port of 127.0.0.1, closed at the
// end.
func (e *env) listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e.add(func() { _ = ln.Close() })
	return ln, nil
}

// serveHTTP serves h on ln (with TLS when tlsCfg is set) until the end.
func (e *env) serveHTTP(ln net.Listener, h http.Handler, tlsCfg *tls.Config) {
	srv := &http.Server{Handler: h, TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second, ErrorLog: quietLog}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if tlsCfg != nil {
			_ = srv.ServeTLS(ln, "", "")
		} else {
			_ = srv.Serve(ln)
		}
	}()
	e.add(func() {
		_ = srv.Close()
		<-done
	})
}

// quietLog keeps the servers' connection errors (closed at the end, TLS
// probes) out of the table.
var quietLog = log.New(io.Discard, "", 0)
