package mesh

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"
)

// A call its caller canceled proves nothing: it neither closes a half-open
// breaker nor resets a host's failure streak.

// hangOrFail is a backend handler: /hang blocks until the request ends
// (signaling started first), /fail answers 500, anything else 200.
func hangOrFail(started chan<- struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hang":
			started <- struct{}{}
			<-r.Context().Done()
		case "/fail":
			w.WriteHeader(http.StatusInternalServerError)
		default:
			w.WriteHeader(http.StatusOK)
		}
	}
}

// canceledGet sends GET url through m and cancels it once the backend has
// the request; it returns the call's error.
func canceledGet(t *testing.T, m *Mesh, url string, started <-chan struct{}) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-started:
			cancel()
		case <-ctx.Done():
		}
	}()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := m.HTTPClient().Do(req)
	if err == nil {
		resp.Body.Close()
		return errors.New("the canceled call succeeded")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("a canceled call: %v, want context.Canceled", err)
	}
	var ce *CallError
	if errors.As(err, &ce) {
		t.Fatalf("a canceled call is the caller's own error, not a CallError: %v", err)
	}
	return nil
}

// breakerState returns the state Explain reports for billing's breaker.
func breakerState(t *testing.T, m *Mesh) string {
	t.Helper()
	ex, err := m.Explain(mustRequest(t, http.MethodGet, "http://billing/x"))
	if err != nil {
		t.Fatal(err)
	}
	return ex.Breaker
}

func TestCanceledProbeKeepsBreakerHalfOpen(t *testing.T) {
	started := make(chan struct{}, 1)
	b := newBackend(t, "billing", hangOrFail(started))
	m := newTestMesh(t, plainBilling(b.addr(), `
    circuit_breaker: {consecutive_failures: 1, open_for: 20ms, half_open_requests: 1}
`))
	if code, _, err := get(t, m, "http://billing/fail"); err != nil || code != 500 {
		t.Fatalf("tripping call: %d %v", code, err)
	}
	// gobreaker reads the real time: poll for the end of open_for.
	eventually(t, 10*time.Second, "breaker half-open", func() bool { return breakerState(t, m) == "half-open" })

	if err := canceledGet(t, m, "http://billing/hang", started); err != nil {
		t.Fatal(err)
	}
	if got := breakerState(t, m); got != "half-open" {
		t.Fatalf("breaker after a canceled probe: %q, want half-open", got)
	}
	// The probe's slot is free again: the next call probes and closes it.
	if code, _, err := get(t, m, "http://billing/ok"); err != nil || code != 200 {
		t.Fatalf("the next probe: %d %v", code, err)
	}
	if got := breakerState(t, m); got != "closed" {
		t.Fatalf("breaker after a successful probe: %q, want closed", got)
	}
}

// ejectionPolicy sends every call of billing to the endpoint bad, one of
// two, with outlier detection after 5 failures in a row.
func ejectionPolicy(good, bad, tls string) string {
	return fmt.Sprintf(`
trust_domain: mesh.local
defaults: {tls: %s}
services:
  billing:
    endpoints:
      - {address: %s, labels: {role: good}}
      - {address: %s, labels: {role: bad}}
    subsets: {bad: {role: bad}}
    routes: [{name: all, split: [{subset: bad, weight: 1}]}]
    outlier_detection: {consecutive_failures: 5, base_ejection: 1m, max_ejection_percent: 50}
  enrollment: {}
`, tls, good, bad)
}

// ejected reports whether Explain marks addr ejected.
func ejected(t *testing.T, m *Mesh, addr string) bool {
	t.Helper()
	ex, err := m.Explain(mustRequest(t, http.MethodGet, "http://billing/x"))
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(ex.Endpoints, addr+" (ejected)")
}

func TestCanceledCallKeepsOutlierStreak(t *testing.T) {
	started := make(chan struct{}, 1)
	good := newBackend(t, "good", nil)
	bad := newBackend(t, "bad", hangOrFail(started))
	m := newTestMesh(t, ejectionPolicy(good.addr(), bad.addr(), "disable"))
	for i := range 4 {
		if code, _, err := get(t, m, "http://billing/fail"); err != nil || code != 500 {
			t.Fatalf("failure %d: %d %v", i+1, code, err)
		}
	}
	if err := canceledGet(t, m, "http://billing/hang", started); err != nil {
		t.Fatal(err)
	}
	if ejected(t, m, bad.addr()) {
		t.Fatal("ejected after 4 failures")
	}
	if code, _, err := get(t, m, "http://billing/fail"); err != nil || code != 500 {
		t.Fatalf("failure 5: %d %v", code, err)
	}
	if !ejected(t, m, bad.addr()) {
		t.Fatal("not ejected after 4 failures, a canceled call and a failure: the cancellation reset the streak")
	}
	if got := bad.hits.Load(); got != 6 {
		t.Fatalf("bad endpoint saw %d calls, want 6", got)
	}
}

// hangOrUnavailable is a Check that blocks until its RPC ends on the calls
// listed in hang (signaling started first), answers Unavailable on the
// others up to last, and SERVING after last.
func hangOrUnavailable(started chan<- struct{}, last int64, hang ...int64) checkFunc {
	return func(ctx context.Context, n int64) (*healthpb.HealthCheckResponse, error) {
		if slices.Contains(hang, n) {
			started <- struct{}{}
			<-ctx.Done()
			return nil, ctx.Err()
		}
		if n <= last {
			return nil, grpcstatus.Error(codes.Unavailable, "sick")
		}
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
	}
}

// canceledCheck calls Check through c and cancels it once the backend has
// the RPC; the call must end with the caller's Canceled.
func canceledCheck(t *testing.T, c healthpb.HealthClient, started <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-started:
			cancel()
		case <-ctx.Done():
		}
	}()
	_, err := check(ctx, c)
	if grpcstatus.Code(err) != codes.Canceled || FromStatus(err) != nil {
		t.Fatalf("a canceled RPC: %v, want the caller's Canceled", err)
	}
}

func TestGRPCCanceledProbeKeepsBreakerHalfOpen(t *testing.T) {
	started := make(chan struct{}, 1)
	b := newGRPCBackend(t, "billing")
	b.onCheck(hangOrUnavailable(started, 1, 2))
	f := startBilling(t, billingPolicy("    circuit_breaker: {consecutive_failures: 1, open_for: 20ms, half_open_requests: 1}\n"), b)
	m := f.client(t, "enrollment")
	c := dial(t, m, "billing")
	if _, err := check(context.Background(), c); grpcstatus.Code(err) != codes.Unavailable {
		t.Fatalf("tripping RPC: %v", err)
	}
	eventually(t, 10*time.Second, "breaker half-open", func() bool { return breakerState(t, m) == "half-open" })

	canceledCheck(t, c, started)
	if got := breakerState(t, m); got != "half-open" {
		t.Fatalf("breaker after a canceled probe: %q, want half-open", got)
	}
	if _, err := check(context.Background(), c); err != nil {
		t.Fatalf("the next probe: %v", err)
	}
	if got := breakerState(t, m); got != "closed" {
		t.Fatalf("breaker after a successful probe: %q, want closed", got)
	}
}

func TestGRPCCanceledCallKeepsOutlierStreak(t *testing.T) {
	started := make(chan struct{}, 1)
	good, bad := newGRPCBackend(t, "good"), newGRPCBackend(t, "bad")
	bad.onCheck(hangOrUnavailable(started, 6, 5))
	f := &grpcFleet{policy: ejectionPolicy(good.addr(), bad.addr(), "strict")}
	f.billing = newTestMesh(t, f.policy, WithService("billing"))
	good.serve(t, f.billing)
	bad.serve(t, f.billing)
	m := f.client(t, "enrollment")
	c := dial(t, m, "billing")
	for i := range 4 {
		if _, err := check(context.Background(), c); grpcstatus.Code(err) != codes.Unavailable {
			t.Fatalf("failure %d: %v", i+1, err)
		}
	}
	canceledCheck(t, c, started)
	if ejected(t, m, bad.addr()) {
		t.Fatal("ejected after 4 failures")
	}
	if _, err := check(context.Background(), c); grpcstatus.Code(err) != codes.Unavailable {
		t.Fatalf("failure 5: %v", err)
	}
	if !ejected(t, m, bad.addr()) {
		t.Fatal("not ejected after 4 failures, a canceled RPC and a failure: the cancellation reset the streak")
	}
	if got := bad.hits.Load(); got != 6 {
		t.Fatalf("bad endpoint saw %d RPCs, want 6", got)
	}
}
