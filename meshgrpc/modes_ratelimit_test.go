package meshgrpc

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/internal/clock"
	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/internal/meshlink"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
)

// The rate limit a service's own mesh puts on its callers, in every
// protocol. billing's mesh runs on a fake clock that only the test moves:
// its buckets refill when, and as much as, the test says.

// limitedFleet starts one backend that always answers ok behind billing's
// mesh (mTLS in every mode), whose block holds rateLimit (a YAML line of
// billing's, indented by four spaces) and settings, on the fake clock sc;
// the client mesh (enrollment) has clientOpts.
func limitedFleet(t *testing.T, md mode, rateLimit, settings string, sc *clocktest.Fake, clientOpts ...mesh.Option) *fleet {
	t.Helper()
	return startFleetWith(t, md, fleetConfig{policyFor: billingPolicy(rateLimit + settings),
		serverOpts: []mesh.Option{withClock(sc)}, clientOpts: clientOpts}, alwaysAnswer(ok))
}

// drain calls billing through f until a call is refused, and returns how
// many were served; a call that is neither is fatal.
func drain(t *testing.T, f *fleet) (served int, refusal result) {
	t.Helper()
	for range 100 {
		r := f.call(context.Background())
		if r.ok() {
			served++
			continue
		}
		if ce := r.callError(); ce == nil || ce.Layer != mesh.LayerRateLimit {
			t.Fatalf("after %d served: %v, want a refusal of layer rate_limit", served, r)
		}
		return served, r
	}
	t.Fatal("100 calls served: no rate limit")
	return 0, result{}
}

// TestRateLimitPerCaller: billing's mesh limits each caller to its own
// bucket (enrollment's burst of 2 spent leaves progress's alone), an
// override gives its caller its rate and a burst scaled with it, and a
// refused call never reaches the application: the caller gets a CallError
// of layer rate_limit that names the limit and when to retry.
func TestRateLimitPerCaller(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		sc := clocktest.NewFake(time.Now())
		f := limitedFleet(t, md, "    rate_limit: {requests_per_second: 1, burst: 2, per_caller: true, overrides: {progress: 3}}\n", "", sc)
		served, r := drain(t, f)
		if served != 2 {
			t.Fatalf("enrollment was served %d calls, want its burst of 2", served)
		}
		ce := r.callError()
		wantWait := byMode(md, map[mode]string{modeHTTP1: "retry after 1s", modeGRPC: "retry after 1000ms"})
		if ce.Service != "billing" || ce.Endpoint != f.addrs[0] || ce.Attempts != 1 ||
			!strings.Contains(ce.Err.Error(), `billing refused caller "enrollment": over its rate limit of 1/s`) ||
			!strings.Contains(ce.Err.Error(), wantWait) {
			t.Fatalf("CallError %+v (%v), want billing's refusal saying %q", ce, r, wantWait)
		}
		if md == modeGRPC && grpcstatus.Code(r.err) != codes.ResourceExhausted {
			t.Fatalf("code %v, want ResourceExhausted", grpcstatus.Code(r.err))
		}
		if got := f.Hits[0](); got != 2 {
			t.Fatalf("the application saw %d calls, want the 2 served", got)
		}

		// progress: its own bucket, of 3/s and a burst of 6.
		progress := f.as(t, "progress")
		if served, _ := drain(t, progress); served != 6 {
			t.Fatalf("progress was served %d calls, want its burst of 6 (2 × 3)", served)
		}
		// A second later: enrollment has one token, progress three.
		sc.Advance(time.Second)
		if served, _ := drain(t, f); served != 1 {
			t.Fatalf("enrollment after 1s: %d served, want 1", served)
		}
		if served, _ := drain(t, progress); served != 3 {
			t.Fatalf("progress after 1s: %d served, want 3", served)
		}
		if got := f.Hits[0](); got != 2+6+1+3 {
			t.Fatalf("the application saw %d calls, want the 12 served", got)
		}
		if md != modeGRPC {
			f.checkProto(t, 0)
		}
		checkWireRefusal(t, f)
	}, allModes...)
}

// checkWireRefusal checks billing's refusal of enrollment, which has spent
// its tokens, as a caller without a mesh receives it over mTLS: HTTP 429
// marked Inmesh-Error: rate_limit with Retry-After 1; gRPC
// ResourceExhausted marked as a mesh's CallError of layer rate_limit, with
// a pushback of 1000 ms.
func checkWireRefusal(t *testing.T, f *fleet) {
	t.Helper()
	tlsConf := meshlink.Of(f.client).ClientTLS("billing")
	if f.md != modeGRPC {
		tr := &http.Transport{TLSClientConfig: tlsConf, ForceAttemptHTTP2: f.md == modeHTTP2}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get("https://" + f.addrs[0] + "/x")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get(mesh.HeaderError) != "rate_limit" ||
			resp.Header.Get("Retry-After") != "1" || !strings.HasPrefix(string(body), "mesh: rate_limit: billing refused caller \"enrollment\"") {
			t.Fatalf("raw refusal: %d %v %q", resp.StatusCode, resp.Header, body)
		}
		return
	}
	conn, err := grpc.NewClient("passthrough:///"+f.addrs[0], grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var tr metadata.MD
	_, err = healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}, grpc.Trailer(&tr))
	ce := FromStatus(err)
	if grpcstatus.Code(err) != codes.ResourceExhausted || ce == nil || ce.Layer != mesh.LayerRateLimit || ce.Service != "billing" {
		t.Fatalf("raw refusal: %v (FromStatus %+v)", err, ce)
	}
	if got := tr.Get(pushbackHeader); len(got) != 1 || got[0] != "1000" {
		t.Fatalf("pushback %q, want 1000", got)
	}
}

// TestRateLimitAccuracy: over 1 s of billing's fake time, enrollment calls
// at a steady 200/s, 4× its limit: billing serves burst + rate × 1 s of
// them, within one call.
func TestRateLimitAccuracy(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		sc := clocktest.NewFake(time.Now())
		const rate, burst = 50, 10
		f := limitedFleet(t, md, fmt.Sprintf("    rate_limit: {requests_per_second: %d, burst: %d, per_caller: true}\n", rate, burst), "", sc)
		served, refused := 0, 0
		for i := range 201 { // at 0, 5ms, ..., 1s
			if i > 0 {
				sc.Advance(5 * time.Millisecond)
			}
			r := f.call(context.Background())
			switch ce := r.callError(); {
			case r.ok():
				served++
			case ce != nil && ce.Layer == mesh.LayerRateLimit:
				refused++
			default:
				t.Fatalf("call %d: %v", i, r)
			}
		}
		t.Logf("%d served, %d refused of 201 over 1s", served, refused)
		if want := burst + rate; served < want-1 || served > want+1 {
			t.Fatalf("%d served, want %d ± 1", served, want)
		}
		if got := f.Hits[0](); got != int64(served) {
			t.Fatalf("the application saw %d calls, %d were served", got, served)
		}
	})
}

// TestRateLimitRetryAfter: with retry_on naming 429 (HTTP) or
// resource-exhausted (gRPC), the caller's mesh waits the refusal's
// Retry-After (pushback) even past the route's backoff max, then retries
// and is served; when that wait would end past the call's deadline, the
// call fails at once at layer rate_limit, saying so.
func TestRateLimitRetryAfter(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		sc := clocktest.NewFake(time.Now())
		cc := clocktest.NewFake(time.Now()) // the caller's
		// enrollment: 1/s, burst 1; progress: 0.01/s (a token every 100s).
		f := limitedFleet(t, md, "    rate_limit: {requests_per_second: 1, burst: 1, per_caller: true, overrides: {progress: 0.01}}\n",
			"    retry: {attempts: 3, backoff: {initial: 1ms, max: 2ms}, retry_on: [429, resource-exhausted]}\n", sc, withClock(cc))
		if r := f.call(context.Background()); !r.ok() {
			t.Fatalf("the first call: %v", r)
		}
		done := make(chan result, 1)
		go func() { done <- f.call(guarded(t)) }()
		waiting := make(chan struct{})
		go func() { cc.BlockUntilTimers(1); close(waiting) }()
		select {
		case <-waiting:
		case r := <-done:
			cc.NewTimer(time.Hour) // ends the goroutine waiting for a timer
			t.Fatalf("the refused call ended (%v) without waiting", r)
		}
		sc.Advance(time.Second) // billing's token is there
		cc.Advance(time.Second - time.Nanosecond)
		if n, hits := cc.PendingTimers(), f.Hits[0](); n != 1 || hits != 1 {
			t.Fatalf("a nanosecond before the Retry-After: %d timers pending, %d served; want 1 and 1", n, hits)
		}
		cc.Advance(time.Nanosecond)
		if r := <-done; !r.ok() {
			t.Fatalf("after the Retry-After: %v", r)
		}
		if hits := f.Hits[0](); hits != 2 {
			t.Fatalf("%d served, want 2", hits)
		}

		// progress: its token comes in 100s, past its call's deadline.
		progress := f.as(t, "progress", withClock(cc))
		if r := progress.call(context.Background()); !r.ok() {
			t.Fatalf("progress's first call: %v", r)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r := progress.call(ctx)
		ce := r.callError()
		if ce == nil || ce.Layer != mesh.LayerRateLimit || ce.Attempts != 1 ||
			!strings.Contains(ce.Err.Error(), "would end past the call's deadline") || !strings.Contains(ce.Err.Error(), "waiting 1m40s") {
			t.Fatalf("%v (CallError %+v), want layer rate_limit after 1 attempt, saying its 100s wait ends past the deadline", r, ce)
		}
		if n := cc.PendingTimers(); n != 0 {
			t.Fatalf("%d timers pending: the call waited", n)
		}
	}, allModes...)
}

// TestRateLimitRetriesSpent: a refusal retried as retry_on says, until the
// attempts are spent, is then the caller's CallError of layer rate_limit.
func TestRateLimitRetriesSpent(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		sc := clocktest.NewFake(time.Now())
		cc := &autoAdvance{Fake: clocktest.NewFake(time.Now())}
		f := limitedFleet(t, md, "    rate_limit: {requests_per_second: 1, burst: 1}\n",
			"    retry: {attempts: 3, backoff: {initial: 1ms, max: 2ms}, retry_on: [429, resource-exhausted]}\n", sc, withClock(cc))
		if r := f.call(context.Background()); !r.ok() {
			t.Fatalf("the first call: %v", r)
		}
		r := f.call(guarded(t))
		if ce := r.callError(); ce == nil || ce.Layer != mesh.LayerRateLimit || ce.Attempts != 3 {
			t.Fatalf("%v, want layer rate_limit after 3 attempts", r)
		}
		if got := cc.waited(); got != 2*time.Second {
			t.Fatalf("the caller waited %v, want 2 × the Retry-After of 1s", got)
		}
	})
}

// TestRateLimitMarkerFromUnverifiedPeer: a destination that says tls:
// disable is called in plaintext: its callers are not identified, share
// one bucket, and its refusal is an ordinary answer (a 429 response, a
// ResourceExhausted status that FromStatus does not rebuild), as anyone
// could have written the marker.
func TestRateLimitMarkerFromUnverifiedPeer(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		sc := clocktest.NewFake(time.Now())
		settings := "    rate_limit: {requests_per_second: 1, burst: 1, per_caller: true}\n"
		var f *fleet
		if md == modeGRPC {
			f = startFleetWith(t, md, fleetConfig{policyFor: httpPolicy(settings), serverOpts: []mesh.Option{withClock(sc)}}, alwaysAnswer(ok))
		} else {
			f = plainLimitedHTTP(t, httpPolicy(settings), sc)
		}
		if r := f.call(context.Background()); !r.ok() {
			t.Fatalf("enrollment's first call: %v", r)
		}
		// progress shares the bucket of the unidentified callers.
		r := f.as(t, "progress").call(context.Background())
		if r.callError() != nil {
			t.Fatalf("%v: a marker believed from a tls: disable destination", r)
		}
		switch md {
		case modeGRPC:
			if grpcstatus.Code(r.err) != codes.ResourceExhausted || !strings.Contains(grpcstatus.Convert(r.err).Message(), `refused caller ""`) {
				t.Fatalf("%v, want billing's ResourceExhausted as an ordinary status", r)
			}
		default:
			if r.err != nil || r.status != http.StatusTooManyRequests || !strings.Contains(r.body, `refused caller ""`) {
				t.Fatalf("%v, want billing's 429 as an ordinary response", r)
			}
		}
	})
}

// plainLimitedHTTP is an HTTP fleet of one plain backend (tls: disable)
// behind billing's mesh, on the fake clock sc.
func plainLimitedHTTP(t *testing.T, policyFor func(addrs ...string) string, sc *clocktest.Fake) *fleet {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	f := &fleet{md: modeHTTP1, addrs: []string{srv.Listener.Addr().String()}}
	f.policy = policyFor(f.addrs...)
	f.server = newTestMesh(t, f.policy, mesh.WithService("billing"), withClock(sc))
	srv.Config.Handler = f.server.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "b0") }))
	srv.Start()
	t.Cleanup(srv.Close)
	f.client = newTestMesh(t, f.policy, mesh.WithService("enrollment"))
	return f
}

// TestRateLimitReloadKeepsBuckets: a policy update that keeps billing's
// rate_limit block keeps its buckets' state (a caller that spent its
// tokens stays refused); one that changes the block starts it anew.
func TestRateLimitReloadKeepsBuckets(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		sc := clocktest.NewFake(time.Now())
		file := t.TempDir() + "/mesh.yaml"
		block := func(burst int) string {
			return fmt.Sprintf("    rate_limit: {requests_per_second: 1, burst: %d, per_caller: true}\n", burst)
		}
		f := startFleetWith(t, md, fleetConfig{policyFor: versioned("rl-1", billingPolicy(block(2))),
			serverOpts: []mesh.Option{withClock(sc)}, serverFile: file}, alwaysAnswer(ok))
		if served, _ := drain(t, f); served != 2 {
			t.Fatalf("served %d, want the burst of 2", served)
		}
		reload := func(version string, burst int) {
			t.Helper()
			meshtest.WriteFile(t, file, versioned(version, billingPolicy(block(burst)))(f.addrs...))
			meshtest.Eventually(t, 10*time.Second, "billing's mesh applies "+version, func() bool { return f.server.PolicyVersion() == version })
		}
		reload("rl-2", 2) // the same block
		if r := f.call(context.Background()); r.callError() == nil || r.callError().Layer != mesh.LayerRateLimit {
			t.Fatalf("after a reload that keeps the block: %v, want still refused", r)
		}
		reload("rl-3", 3) // another block: new buckets
		if served, _ := drain(t, f); served != 3 {
			t.Fatalf("after a reload that changes the block: %d served, want the new burst of 3", served)
		}
	})
}

// autoAdvance is a fake clock whose timers fire at once, moving its time
// by their duration: a caller's waits take no time, and are summed.
type autoAdvance struct {
	*clocktest.Fake
	mu  sync.Mutex
	sum time.Duration
}

func (c *autoAdvance) NewTimer(d time.Duration) clock.Timer {
	c.mu.Lock()
	c.sum += d
	c.mu.Unlock()
	c.Advance(d)
	return c.Fake.NewTimer(0)
}

// waited returns the sum of the timers' durations.
func (c *autoAdvance) waited() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sum
}

// TestUnaryServerAllocationsRateLimited pins the allocations of the unary
// server interceptor with a rate_limit block that allows the call: those
// of TestUnaryServerAllocations, the limiter adding none.
func TestUnaryServerAllocationsRateLimited(t *testing.T) {
	const want = 1
	pol := meshtest.BenchPolicy("127.0.0.1:9", "127.0.0.1:10", "rate_limit: {requests_per_second: 1e9, burst: 1000000000, per_caller: true}")
	m := newTestMesh(t, pol, append(telemetryOff(), mesh.WithService("billing"))...)
	a := newAdapter(m, "ServerOptions")
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("x-canary", "false"))
	info := &grpc.UnaryServerInfo{FullMethod: checkMethod}
	handler := func(context.Context, any) (any, error) { return nil, nil }
	call := func() {
		if _, err := a.unaryServer(ctx, nil, info, handler); err != nil {
			t.Fatal(err)
		}
	}
	call()
	if got := testing.AllocsPerRun(200, call); got != want {
		t.Errorf("a served call allocates %v times, want %d", got, want)
	}
}
