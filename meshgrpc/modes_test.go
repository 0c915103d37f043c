package meshgrpc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/mesh"
)

// Behaviour tests that hold for HTTP and gRPC alike run one body under
// both protocols, in the manner of net/http's run(t, f, modes): run calls
// the body once per mode, and the body speaks to billing through a fleet,
// a protocol-neutral client of a billing fleet started for that mode.

// mode is the protocol of a test run.
type mode string

const (
	modeHTTP mode = "HTTP" // plaintext backends, RoundTripper
	modeGRPC mode = "gRPC" // mTLS backends behind billing's mesh, DialOptions
)

// run runs f as a subtest per mode, both when modes is empty.
func run(t *testing.T, f func(t *testing.T, md mode), modes ...mode) {
	t.Helper()
	if len(modes) == 0 {
		modes = []mode{modeHTTP, modeGRPC}
	}
	for _, md := range modes {
		t.Run(string(md), func(t *testing.T) { f(t, md) })
	}
}

// behaviour is how a backend answers: ok, fail (HTTP 503, gRPC
// Unavailable "sick": the destination's own failure, retryable under
// retry_on [503, unavailable]), or hang until the call ends, after sending
// on started.
type behaviour func(n int64) answer

type answer int

const (
	ok answer = iota
	fail
	hang
)

func alwaysAnswer(a answer) behaviour { return func(int64) answer { return a } }

// fleet is billing's backends in one mode, with a client mesh.
type fleet struct {
	md      mode
	addrs   []string
	hits    []func() int64
	client  *mesh.Mesh
	started chan struct{} // a hanging backend has the call
	grpc    healthpb.HealthClient
}

// httpPolicy is policyFor's HTTP form: billing's endpoints at addrs, plain
// (tls: disable), with settings (YAML lines of billing's, indented by four
// spaces).
func httpPolicy(settings string) func(addrs ...string) string {
	return func(addrs ...string) string {
		var b strings.Builder
		b.WriteString("defaults: {tls: disable} # plain test backends\nservices:\n  billing:\n    endpoints:\n")
		for _, a := range addrs {
			fmt.Fprintf(&b, "      - {address: %s}\n", a)
		}
		b.WriteString(settings)
		return b.String()
	}
}

// startFleet starts one backend per behaviour as billing's endpoints, under
// the policy policyFor gives for their addresses (nil: billing's
// endpoints with settings, in the mode's form), and a client mesh.
func startFleet(t *testing.T, md mode, settings string, policyFor func(addrs ...string) string, bs ...behaviour) *fleet {
	t.Helper()
	f := &fleet{md: md, started: make(chan struct{}, len(bs))}
	if policyFor == nil {
		policyFor = billingPolicy(settings)
		if md == modeHTTP {
			policyFor = httpPolicy(settings)
		}
	}
	switch md {
	case modeHTTP:
		for i, bh := range bs {
			var b *backend
			b = newBackend(t, fmt.Sprint("b", i), func(w http.ResponseWriter, r *http.Request) {
				switch bh(b.hits.Load()) {
				case fail:
					w.WriteHeader(http.StatusServiceUnavailable)
				case hang:
					f.started <- struct{}{}
					<-r.Context().Done()
				}
			})
			f.addrs = append(f.addrs, b.addr())
			f.hits = append(f.hits, b.hits.Load)
		}
		f.client = newTestMesh(t, policyFor(f.addrs...))
	case modeGRPC:
		backends := make([]*grpcBackend, len(bs))
		for i, bh := range bs {
			b := newGRPCBackend(t, fmt.Sprint("b", i))
			b.onCheck(func(ctx context.Context, n int64) (*healthpb.HealthCheckResponse, error) {
				switch bh(n) {
				case fail:
					return nil, grpcstatus.Error(codes.Unavailable, "sick")
				case hang:
					f.started <- struct{}{}
					<-ctx.Done()
					return nil, ctx.Err()
				}
				return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
			})
			backends[i] = b
			f.addrs = append(f.addrs, b.addr())
			f.hits = append(f.hits, b.hits.Load)
		}
		pol := policyFor(f.addrs...)
		server := newTestMesh(t, pol, mesh.WithService("billing"))
		for _, b := range backends {
			b.serve(t, server)
		}
		f.client = newTestMesh(t, pol, mesh.WithService("enrollment"))
		f.grpc = dial(t, f.client, "billing")
	}
	return f
}

// result is how one call ended, in either protocol.
type result struct {
	md     mode
	status int // HTTP
	err    error
}

// call makes one call of billing in ctx.
func (f *fleet) call(ctx context.Context) result {
	if f.md == modeGRPC {
		_, err := check(ctx, f.grpc)
		return result{md: f.md, err: err}
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://billing/x", nil)
	resp, err := f.client.HTTPClient().Do(req)
	if err != nil {
		return result{md: f.md, err: err}
	}
	resp.Body.Close()
	return result{md: f.md, status: resp.StatusCode}
}

// canceledCall makes a call and cancels it once a hanging backend has it.
func (f *fleet) canceledCall(t *testing.T) result {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-f.started:
			cancel()
		case <-ctx.Done():
		}
	}()
	return f.call(ctx)
}

// ok reports whether the call succeeded.
func (r result) ok() bool { return r.err == nil && (r.md == modeGRPC || r.status == http.StatusOK) }

// failed reports whether the call returned the backend's own failure: a
// 503 response, an Unavailable status that is no CallError.
func (r result) failed() bool {
	if r.md == modeGRPC {
		return grpcstatus.Code(r.err) == codes.Unavailable && FromStatus(r.err) == nil
	}
	return r.err == nil && r.status == http.StatusServiceUnavailable
}

// callError returns the call's CallError, nil for none (gRPC: rebuilt from
// the status, as a caller gets it).
func (r result) callError() *mesh.CallError {
	if r.md == modeGRPC {
		return FromStatus(r.err)
	}
	var ce *mesh.CallError
	if errors.As(r.err, &ce) {
		return ce
	}
	return nil
}

// canceled reports whether the call ended with the caller's own
// cancellation, no CallError.
func (r result) canceled() bool {
	if r.callError() != nil {
		return false
	}
	if r.md == modeGRPC {
		return grpcstatus.Code(r.err) == codes.Canceled
	}
	return errors.Is(r.err, context.Canceled)
}

func (r result) String() string { return fmt.Sprintf("status %d, err %v", r.status, r.err) }

// clientOnly is a fleet without backends: a client of the policy pol
// (billing's, in md's form).
func clientOnly(t *testing.T, md mode, pol string) *fleet {
	t.Helper()
	f := &fleet{md: md}
	if md == modeGRPC {
		f.client = newTestMesh(t, pol, mesh.WithService("enrollment"))
		f.grpc = dial(t, f.client, "billing")
	} else {
		f.client = newTestMesh(t, pol)
	}
	return f
}

// versioned is policyFor with the document's version set to v.
func versioned(v string, policyFor func(addrs ...string) string) func(addrs ...string) string {
	return func(addrs ...string) string { return "version: " + v + "\n" + policyFor(addrs...) }
}

// policyFor is billing's policy with settings in md's form.
func policyFor(md mode, settings string) func(addrs ...string) string {
	if md == modeHTTP {
		return httpPolicy(settings)
	}
	return billingPolicy(settings)
}

func TestBreakerOpensAndFailsFast(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		f := startFleet(t, md, "", versioned("br-1", policyFor(md, "    circuit_breaker: {consecutive_failures: 3, open_for: 1m}\n")),
			alwaysAnswer(fail))
		for range 3 {
			if r := f.call(context.Background()); !r.failed() {
				t.Fatalf("before tripping: %v, want the backend's failure", r)
			}
		}
		hits := f.hits[0]()
		start := time.Now()
		r := f.call(context.Background())
		ce := r.callError()
		if ce == nil || ce.Layer != mesh.LayerBreaker || ce.PolicyVersion != "br-1" {
			t.Fatalf("CallError %+v (%v)", ce, r)
		}
		if f.hits[0]() != hits {
			t.Fatal("an open breaker let a call through to the backend")
		}
		if md == modeGRPC {
			if grpcstatus.Code(r.err) != codes.Unavailable {
				t.Fatalf("code %v", grpcstatus.Code(r.err))
			}
			if d := time.Since(start); d > 100*time.Millisecond {
				t.Fatalf("failing fast took %v", d)
			}
		}
		ex, err := f.client.Explain(mustRequest(t, http.MethodGet, "http://billing/x"))
		if err != nil || ex.Breaker != "open" {
			t.Fatalf("Explain breaker %q err %v", ex.Breaker, err)
		}
	})
}

func TestRetryBudget(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		t.Run("bounds the load", func(t *testing.T) {
			f := startFleet(t, md, `    retry:
      attempts: 3
      backoff: {initial: 1ms, max: 1ms}
      retry_on: [503, unavailable]
      budget: {ratio: 0.2, min_per_second: 0}
`, nil, alwaysAnswer(fail))
			const calls = 500
			for range calls {
				if r := f.call(context.Background()); !r.failed() {
					t.Fatalf("want the backend's failure back once the budget stops retries: %v", r)
				}
			}
			ratio := float64(f.hits[0]()) / calls
			t.Logf("backend saw %d calls for %d logical calls: %.3fx", f.hits[0](), calls, ratio)
			if ratio > 1.2+1.0/calls {
				t.Fatalf("load %.3fx exceeds the 20%% budget", ratio)
			}
			if ratio < 1.15 {
				t.Fatalf("load %.3fx: the budget allowed fewer retries than it holds", ratio)
			}
		})
		t.Run("refuses the retry of a failure: layer budget", func(t *testing.T) {
			addr := deadAddr(t)
			f := clientOnly(t, md, policyFor(md, `    retry:
      attempts: 3
      backoff: {initial: 1ms, max: 2ms}
      retry_on: [connect-failure]
      budget: {ratio: 0, min_per_second: 0}
`)(addr))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			r := f.call(ctx)
			ce := r.callError()
			if ce == nil || ce.Layer != mesh.LayerBudget || ce.Attempts != 1 || !strings.Contains(ce.Error(), "mesh: connect") {
				t.Fatalf("want layer budget after 1 attempt, naming the connect failure; got %v", r)
			}
		})
	})
}

// deadAddr is an address of 127.0.0.1 where nobody listens.
func deadAddr(t *testing.T) string {
	ln := listenLoopback(t)
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func TestConnectFailureLayer(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		dead := deadAddr(t)
		f := clientOnly(t, md, policyFor(md, "    retry: {attempts: 2, backoff: {initial: 1ms, max: 2ms}, retry_on: [connect-failure]}\n")(dead))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r := f.call(ctx)
		ce := r.callError()
		if ce == nil || ce.Layer != mesh.LayerConnect || ce.Attempts != 2 || ce.Endpoint != dead {
			t.Fatalf("want layer connect after 2 attempts, got %+v (%v)", ce, r)
		}
		if md == modeGRPC {
			if grpcstatus.Code(r.err) != codes.Unavailable {
				t.Fatalf("code %v", grpcstatus.Code(r.err))
			}
			// A stream that cannot start is retried the same way.
			_, err := f.grpc.Watch(ctx, &healthpb.HealthCheckRequest{})
			if ce := FromStatus(err); ce == nil || ce.Layer != mesh.LayerConnect || ce.Attempts != 2 {
				t.Fatalf("stream: want layer connect after 2 attempts, got %v", err)
			}
		}
	})
}

func TestOutlierEjection(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		f := startFleet(t, md, "    outlier_detection: {consecutive_failures: 2, base_ejection: 1m, max_ejection_percent: 50}\n", nil,
			alwaysAnswer(ok), alwaysAnswer(fail))
		failures := 0
		for range 40 {
			r := f.call(context.Background())
			if !r.ok() {
				failures++
			}
		}
		good, bad := f.hits[0](), f.hits[1]()
		if bad != 2 || failures != 2 || good != 38 {
			t.Fatalf("bad saw %d calls, good %d, %d failed; want the bad endpoint ejected after 2 failures", bad, good, failures)
		}
		ex, err := f.client.Explain(mustRequest(t, http.MethodGet, "http://billing/x"))
		if err != nil {
			t.Fatal(err)
		}
		want := f.addrs[1] + " (ejected)"
		if !slices.Contains(ex.Endpoints, want) {
			t.Fatalf("Explain endpoints %v lack %q", ex.Endpoints, want)
		}
	})
}

// A call its caller canceled proves nothing: it neither closes a half-open
// breaker nor resets a host's failure streak.

func TestCanceledProbeKeepsBreakerHalfOpen(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		// The first call fails, the second hangs until canceled, the others
		// succeed.
		f := startFleet(t, md, "    circuit_breaker: {consecutive_failures: 1, open_for: 20ms, half_open_requests: 1}\n", nil,
			func(n int64) answer { return []answer{fail, fail, hang, ok}[min(n, 3)] })
		if r := f.call(context.Background()); !r.failed() {
			t.Fatalf("tripping call: %v", r)
		}
		// gobreaker reads the real time: poll for the end of open_for.
		eventually(t, 10*time.Second, "breaker half-open", func() bool { return breakerState(t, f.client) == "half-open" })
		if r := f.canceledCall(t); !r.canceled() {
			t.Fatalf("a canceled call: %v, want the caller's own cancellation", r)
		}
		if got := breakerState(t, f.client); got != "half-open" {
			t.Fatalf("breaker after a canceled probe: %q, want half-open", got)
		}
		// The probe's slot is free again: the next call probes and closes it.
		if r := f.call(context.Background()); !r.ok() {
			t.Fatalf("the next probe: %v", r)
		}
		if got := breakerState(t, f.client); got != "closed" {
			t.Fatalf("breaker after a successful probe: %q, want closed", got)
		}
	})
}

func TestCanceledCallKeepsOutlierStreak(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		tls := map[mode]string{modeHTTP: "disable", modeGRPC: "strict"}[md]
		f := startFleet(t, md, "", func(addrs ...string) string { return ejectionPolicy(addrs[0], addrs[1], tls) },
			alwaysAnswer(ok), func(n int64) answer {
				if n == 5 {
					return hang
				}
				return fail
			})
		for i := range 4 {
			if r := f.call(context.Background()); !r.failed() {
				t.Fatalf("failure %d: %v", i+1, r)
			}
		}
		if r := f.canceledCall(t); !r.canceled() {
			t.Fatalf("a canceled call: %v, want the caller's own cancellation", r)
		}
		bad := f.addrs[1]
		if ejected(t, f.client, bad) {
			t.Fatal("ejected after 4 failures")
		}
		if r := f.call(context.Background()); !r.failed() {
			t.Fatalf("failure 5: %v", r)
		}
		if !ejected(t, f.client, bad) {
			t.Fatal("not ejected after 4 failures, a canceled call and a failure: the cancellation reset the streak")
		}
		if got := f.hits[1](); got != 6 {
			t.Fatalf("bad endpoint saw %d calls, want 6", got)
		}
	})
}
