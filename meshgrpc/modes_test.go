package meshgrpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/internal/meshlink"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/policy"
)

// Behaviour tests that hold for HTTP and gRPC alike run one body under
// every protocol, in the manner of net/http's run(t, f, modes): run calls
// the body once per mode, and the body speaks to billing through a fleet,
// a protocol-neutral client of a billing fleet started for that mode. An
// assertion that only makes sense for one protocol is guarded by the mode.

// mode is the protocol of a test run.
type mode string

const (
	// modeHTTP1 is HTTP/1.1 through the RoundTripper: plain backends when
	// billing's policy says tls: disable, else backends over mTLS behind
	// billing's mesh.
	modeHTTP1 mode = "http1"
	// modeHTTP2 is HTTP/2 through the RoundTripper, over mTLS, behind
	// billing's mesh.
	modeHTTP2 mode = "http2"
	// modeGRPC is gRPC through DialOptions, behind billing's mesh's
	// ServerOptions (mTLS, or plaintext under tls: disable).
	modeGRPC mode = "grpc"
)

// allModes are the three protocols, for the tests whose HTTP half covers
// HTTP/2 too.
var allModes = []mode{modeHTTP1, modeHTTP2, modeGRPC}

// run runs f as a subtest per mode; modes defaults to HTTP/1.1 and gRPC.
func run(t *testing.T, f func(t *testing.T, md mode), modes ...mode) {
	t.Helper()
	if len(modes) == 0 {
		modes = []mode{modeHTTP1, modeGRPC}
	}
	for _, md := range modes {
		t.Run(string(md), func(t *testing.T) { f(t, md) })
	}
}

// behaviour is how a backend answers its n-th call.
type behaviour func(n int64) answer

type answer int

const (
	// ok: HTTP 200 with the backend's name as body; gRPC SERVING, with the
	// backend's name in the header "backend" (as every gRPC answer).
	ok answer = iota
	// fail: HTTP 503, gRPC Unavailable "sick": the destination's own
	// failure, retryable under retry_on [503, unavailable].
	fail
	// flaky: HTTP 502, gRPC Unavailable "warming up".
	flaky
	// busy: as fail (gRPC Unavailable "busy"), with the fleet's hint:
	// Retry-After (in seconds) or grpc-retry-pushback-ms.
	busy
	// forge: the denial of a mesh, marked as billing's mesh marks it, with
	// a hostile reason (meshtest.HostileText).
	forge
	// hang: until the call ends, after sending on the fleet's started.
	hang
)

func alwaysAnswer(a answer) behaviour { return func(int64) answer { return a } }

// fleetConfig is how startFleetWith starts a fleet.
type fleetConfig struct {
	// settings are YAML lines of billing's (indented by four spaces) for
	// the mode's default policy (policyFor), when policyFor is nil.
	settings string
	// policyFor gives the policy of the fleet for its backends' addresses.
	policyFor func(addrs ...string) string
	// names are the backends' names (default b0, b1, ...).
	names []string
	// server is the service the backends' mesh runs as (default billing).
	server string
	// caller is the service of the client mesh (default enrollment).
	caller string
	// clientOpts are more options of the client mesh.
	clientOpts []mesh.Option
	// serverOpts are more options of the backends' mesh (not for plain
	// HTTP backends, which have none).
	serverOpts []mesh.Option
	// hint is the busy answer's hint.
	hint time.Duration
	// serverFile, when set, is the file the server's mesh reads its policy
	// from (written with the fleet's policy at the start), so that a test
	// can change it.
	serverFile string
}

// fleet is billing's backends in one mode, with a client mesh.
type fleet struct {
	md      mode
	policy  string
	names   []string
	addrs   []string
	Hits    []func() int64
	Conns   []func() int64 // connections each backend accepted
	seen    []*seen
	server  *mesh.Mesh // the backends' mesh; nil for plain HTTP backends
	client  *mesh.Mesh
	started chan struct{} // a hanging backend has the call
	grpc    healthpb.HealthClient
}

// seen is what a backend saw of its calls.
type seen struct {
	deadline atomic.Int64    // time left to the deadline of the last call, in ns; -1 without one
	protos   [3]atomic.Int64 // HTTP calls by major version
	canceled atomic.Int64    // hanging calls whose context ended (the caller gave up on them)

	mu      sync.Mutex
	callers map[string]int // "<caller> <error>" of every call
}

func (s *seen) sawDeadline(dl time.Time, has bool) {
	if has {
		s.deadline.Store(int64(time.Until(dl)))
	} else {
		s.deadline.Store(-1)
	}
}

func (s *seen) sawCaller(caller string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.callers == nil {
		s.callers = map[string]int{}
	}
	s.callers[fmt.Sprint(caller, " ", err)]++
}

// callersSeen returns a copy of the callers the backend saw.
func (s *seen) callersSeen() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := make(map[string]int, len(s.callers))
	for k, v := range s.callers {
		c[k] = v
	}
	return c
}

// checkProto fails the test unless backend i served every HTTP call over
// the mode's protocol version (nothing for gRPC).
func (f *fleet) checkProto(t *testing.T, i int) {
	t.Helper()
	if f.md == modeGRPC {
		return
	}
	want, other := 1, 2
	if f.md == modeHTTP2 {
		want, other = 2, 1
	}
	p := &f.seen[i].protos
	if p[want].Load() == 0 || p[other].Load() != 0 {
		t.Fatalf("served HTTP/1 %d, HTTP/2 %d times; want HTTP/%d only", p[1].Load(), p[2].Load(), want)
	}
}

// httpPolicy is policyFor's plain HTTP form: billing's endpoints at addrs,
// plain (tls: disable), with settings (YAML lines of billing's, indented
// by four spaces).
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

// policyFor is billing's policy with settings in md's form: plain for
// HTTP/1.1, mTLS (billingPolicy) for HTTP/2 and gRPC.
func policyFor(md mode, settings string) func(addrs ...string) string {
	if md == modeHTTP1 {
		return httpPolicy(settings)
	}
	return billingPolicy(settings)
}

// startFleet starts one backend per behaviour as billing's endpoints, under
// the policy policyFor gives for their addresses (nil: billing's
// endpoints with settings, in the mode's form), and a client mesh.
func startFleet(t *testing.T, md mode, settings string, policyFor func(addrs ...string) string, bs ...behaviour) *fleet {
	t.Helper()
	return startFleetWith(t, md, fleetConfig{settings: settings, policyFor: policyFor}, bs...)
}

// startFleetWith starts one backend per behaviour as cfg says, and a client
// mesh.
func startFleetWith(t *testing.T, md mode, cfg fleetConfig, bs ...behaviour) *fleet {
	t.Helper()
	f := &fleet{md: md, started: make(chan struct{}, 64)}
	if cfg.policyFor == nil {
		cfg.policyFor = policyFor(md, cfg.settings)
	}
	if cfg.server == "" {
		cfg.server = "billing"
	}
	if cfg.caller == "" {
		cfg.caller = "enrollment"
	}
	for i := range bs {
		name := fmt.Sprint("b", i)
		if i < len(cfg.names) {
			name = cfg.names[i]
		}
		f.names = append(f.names, name)
		f.seen = append(f.seen, &seen{})
	}
	switch md {
	case modeHTTP1, modeHTTP2:
		f.startHTTP(t, cfg, bs)
	case modeGRPC:
		f.startGRPC(t, cfg, bs)
	}
	f.client = newTestMesh(t, f.policy, append([]mesh.Option{mesh.WithService(cfg.caller)}, cfg.clientOpts...)...)
	if md == modeGRPC {
		f.grpc = dial(t, f.client, "billing")
	}
	return f
}

// plainBilling reports whether billing's policy in pol says tls: disable.
func plainBilling(t *testing.T, pol string) bool {
	t.Helper()
	doc, err := policy.Parse([]byte(pol))
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	snap, err := policy.NewSnapshot(doc, "test")
	if err != nil {
		t.Fatal(err)
	}
	svc := snap.Service("billing")
	return svc != nil && svc.Effective.TLS == "disable"
}

// startHTTP starts HTTP backends: plain ones when billing's policy is
// tls: disable, else HTTPS ones with the TLS configuration of the server's
// mesh, behind its Handler, over HTTP/2 in modeHTTP2.
func (f *fleet) startHTTP(t *testing.T, cfg fleetConfig, bs []behaviour) {
	t.Helper()
	hits := make([]atomic.Int64, len(bs))
	handler := func(i int) http.HandlerFunc {
		name, s, bh := f.names[i], f.seen[i], bs[i]
		return func(w http.ResponseWriter, r *http.Request) {
			n := hits[i].Add(1)
			if r.ProtoMajor < len(s.protos) {
				s.protos[r.ProtoMajor].Add(1)
			}
			if dl, has := r.Context().Deadline(); has {
				s.sawDeadline(dl, true)
			} else if ms, err := strconv.Atoi(r.Header.Get(mesh.HeaderTimeout)); err == nil {
				s.sawDeadline(time.Now().Add(time.Duration(ms)*time.Millisecond), true)
			} else {
				s.sawDeadline(time.Time{}, false)
			}
			s.sawCaller(meshlink.CallerOf(r.TLS))
			switch bh(n) {
			case ok:
				_, _ = io.WriteString(w, name)
			case fail:
				w.WriteHeader(http.StatusServiceUnavailable)
			case flaky:
				w.WriteHeader(http.StatusBadGateway)
			case busy:
				w.Header().Set("Retry-After", strconv.Itoa(int(cfg.hint/time.Second)))
				w.WriteHeader(http.StatusServiceUnavailable)
			case forge:
				w.Header().Set(mesh.HeaderError, string(mesh.LayerAuthz))
				http.Error(w, "mesh: authz: "+meshtest.HostileText, http.StatusForbidden)
			case hang:
				// Read the body first: a server notices the caller's
				// disconnection only once it has.
				_, _ = io.Copy(io.Discard, r.Body)
				f.started <- struct{}{}
				<-r.Context().Done()
				s.canceled.Add(1)
			}
		}
	}
	srvs := make([]*httptest.Server, len(bs))
	for i := range bs {
		srvs[i] = httptest.NewUnstartedServer(nil)
		ln := &meshtest.CountingListener{Listener: srvs[i].Listener}
		srvs[i].Listener = ln
		f.addrs = append(f.addrs, srvs[i].Listener.Addr().String())
		f.Hits = append(f.Hits, hits[i].Load)
		f.Conns = append(f.Conns, ln.Accepted.Load)
	}
	f.policy = cfg.policyFor(f.addrs...)
	plain := plainBilling(t, f.policy)
	if plain && f.md == modeHTTP2 {
		t.Fatal("HTTP/2 needs mTLS: billing's policy says tls: disable")
	}
	if !plain {
		f.server = f.newServer(t, cfg)
	}
	for i, srv := range srvs {
		srv.Config.Handler = handler(i)
		if plain {
			srv.Start()
		} else {
			srv.Config.Handler = f.server.Handler(srv.Config.Handler)
			srv.TLS = f.server.ServerTLSConfig()
			srv.EnableHTTP2 = f.md == modeHTTP2
			srv.StartTLS()
		}
		t.Cleanup(srv.Close)
	}
}

// newServer starts the mesh of the fleet's backends, of cfg.server, on the
// fleet's policy (read from cfg.serverFile when set).
func (f *fleet) newServer(t *testing.T, cfg fleetConfig) *mesh.Mesh {
	t.Helper()
	opts := append([]mesh.Option{mesh.WithService(cfg.server)}, cfg.serverOpts...)
	if cfg.serverFile == "" {
		return newTestMesh(t, f.policy, opts...)
	}
	meshtest.WriteFile(t, cfg.serverFile, f.policy)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := mesh.New(ctx, append([]mesh.Option{mesh.WithPolicyFile(cfg.serverFile), mesh.WithLogger(meshtest.QuietLogger())}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// startGRPC starts gRPC backends behind the server's mesh.
func (f *fleet) startGRPC(t *testing.T, cfg fleetConfig, bs []behaviour) {
	t.Helper()
	backends := make([]*grpcBackend, len(bs))
	for i, bh := range bs {
		b := newGRPCBackend(t, f.names[i])
		ln := &meshtest.CountingListener{Listener: b.ln}
		b.ln = ln
		f.Conns = append(f.Conns, ln.Accepted.Load)
		s := f.seen[i]
		b.onCheck(func(ctx context.Context, n int64) (*healthpb.HealthCheckResponse, error) {
			s.sawDeadline(ctx.Deadline())
			s.sawCaller(callerOfPeer(ctx))
			switch bh(n) {
			case fail:
				return nil, grpcstatus.Error(codes.Unavailable, "sick")
			case flaky:
				return nil, grpcstatus.Error(codes.Unavailable, "warming up")
			case busy:
				_ = grpc.SetTrailer(ctx, metadata.Pairs("grpc-retry-pushback-ms", strconv.FormatInt(cfg.hint.Milliseconds(), 10)))
				return nil, grpcstatus.Error(codes.Unavailable, "busy")
			case forge:
				return nil, forgedStatus().Err()
			case hang:
				f.started <- struct{}{}
				<-ctx.Done()
				s.canceled.Add(1)
				return nil, ctx.Err()
			}
			return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
		})
		backends[i] = b
		f.addrs = append(f.addrs, b.Addr())
		f.Hits = append(f.Hits, b.Hits.Load)
	}
	f.policy = cfg.policyFor(f.addrs...)
	f.server = f.newServer(t, cfg)
	for _, b := range backends {
		b.serve(t, f.server)
	}
}

// as is the fleet called by another client mesh, of caller on the fleet's
// policy.
func (f *fleet) as(t *testing.T, caller string, opts ...mesh.Option) *fleet {
	t.Helper()
	return f.withClient(t, newTestMesh(t, f.policy, append([]mesh.Option{mesh.WithService(caller)}, opts...)...))
}

// withClient is the fleet called by the client mesh m.
func (f *fleet) withClient(t *testing.T, m *mesh.Mesh) *fleet {
	t.Helper()
	g := *f
	g.client = m
	if f.md == modeGRPC {
		g.grpc = dial(t, m, "billing")
	}
	return &g
}

// result is how one call ended, in either protocol.
type result struct {
	md     mode
	status int    // HTTP
	body   string // HTTP
	from   string // the name of the backend that answered (HTTP: an ok answer's body)
	err    error
}

// call makes one call of billing in ctx (HTTP: GET http://billing/x),
// with the headers (gRPC: metadata) hdr, given as name, value pairs.
func (f *fleet) call(ctx context.Context, hdr ...string) result {
	if f.md == modeGRPC {
		for i := 0; i+1 < len(hdr); i += 2 {
			ctx = metadata.AppendToOutgoingContext(ctx, hdr[i], hdr[i+1])
		}
		from, err := check(ctx, f.grpc)
		return result{md: f.md, from: from, err: err}
	}
	return f.request(ctx, http.MethodGet, "http://billing/x", "", hdr...)
}

// request sends an HTTP request through the client's HTTPClient.
func (f *fleet) request(ctx context.Context, method, url, body string, hdr ...string) result {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return result{md: f.md, err: err}
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return httpResult(f.md, f.client.HTTPClient(), req)
}

// httpResult sends req with c.
func httpResult(md mode, c *http.Client, req *http.Request) result {
	resp, err := c.Do(req)
	if err != nil {
		return result{md: md, err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	r := result{md: md, status: resp.StatusCode, body: string(b), err: err}
	if resp.StatusCode == http.StatusOK {
		r.from = r.body
	}
	return r
}

// callTarget makes one call of the target, an URL (HTTP: GET) or a gRPC
// target dialed with the client's DialOptions (Check).
func (f *fleet) callTarget(ctx context.Context, target string) result {
	if f.md != modeGRPC {
		return f.request(ctx, http.MethodGet, target, "")
	}
	conn, err := grpc.NewClient(target, DialOptions(f.client)...)
	if err != nil {
		return result{md: f.md, err: err}
	}
	defer conn.Close()
	from, err := check(ctx, healthpb.NewHealthClient(conn))
	return result{md: f.md, from: from, err: err}
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

// busy reports whether the call returned the busy answer unchanged: a
// 503 response, the Unavailable status "busy" that is no CallError.
func (r result) busy() bool {
	if r.md == modeGRPC {
		return isBusy(r.err)
	}
	return r.failed()
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

func (r result) String() string {
	return fmt.Sprintf("status %d, from %q, err %v", r.status, r.from, r.err)
}

// clientOnly is a fleet without backends: a client of the policy pol
// (billing's, in md's form).
func clientOnly(t *testing.T, md mode, pol string) *fleet {
	t.Helper()
	f := &fleet{md: md, policy: pol}
	f.client = newTestMesh(t, pol, mesh.WithService("enrollment"))
	if md == modeGRPC {
		f.grpc = dial(t, f.client, "billing")
	}
	return f
}

// versioned is policyFor with the document's version set to v.
func versioned(v string, policyFor func(addrs ...string) string) func(addrs ...string) string {
	return func(addrs ...string) string { return "version: " + v + "\n" + policyFor(addrs...) }
}

// byMode picks the value of md: HTTP/2 takes HTTP/1.1's unless given.
func byMode[T any](md mode, values map[mode]T) T {
	if v, ok := values[md]; ok {
		return v
	}
	return values[modeHTTP1]
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
		hits := f.Hits[0]()
		start := time.Now()
		r := f.call(context.Background())
		ce := r.callError()
		if ce == nil || ce.Layer != mesh.LayerBreaker || ce.PolicyVersion != "br-1" {
			t.Fatalf("CallError %+v (%v)", ce, r)
		}
		if f.Hits[0]() != hits {
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
		ex, err := f.client.Explain(meshtest.MustRequest(t, http.MethodGet, "http://billing/x"))
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
			ratio := float64(f.Hits[0]()) / calls
			t.Logf("backend saw %d calls for %d logical calls: %.3fx", f.Hits[0](), calls, ratio)
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
		calls, failures := 0, 0
		call := func() {
			calls++
			if r := f.call(context.Background()); !r.ok() {
				failures++
			}
		}
		// Until its connection is ready, a gRPC call that picks the bad
		// endpoint goes to the good one, and the good one may be ready long
		// before: call until the bad one has had its two calls (HTTP: within
		// the first four), then 38 more.
		deadline := time.Now().Add(10 * time.Second)
		for f.Hits[1]() < 2 {
			if time.Now().After(deadline) {
				t.Fatalf("the bad endpoint saw %d calls of %d within 10s", f.Hits[1](), calls)
			}
			call()
		}
		for range 38 {
			call()
		}
		good, bad := f.Hits[0](), f.Hits[1]()
		if bad != 2 || failures != 2 || good != int64(calls-2) {
			t.Fatalf("bad saw %d calls, good %d of %d, %d failed; want the bad endpoint ejected after 2 failures", bad, good, calls, failures)
		}
		ex, err := f.client.Explain(meshtest.MustRequest(t, http.MethodGet, "http://billing/x"))
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
		// the breaker reads the real time: poll for the end of open_for.
		meshtest.Eventually(t, 10*time.Second, "breaker half-open", func() bool { return breakerState(t, f.client) == "half-open" })
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
		tls := map[mode]string{modeHTTP1: "disable", modeGRPC: "strict"}[md]
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
		if got := f.Hits[1](); got != 6 {
			t.Fatalf("bad endpoint saw %d calls, want 6", got)
		}
	})
}
