package meshgrpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/telemetry"
)

// checkMethod is the full method of the health service's Check.
const checkMethod = "/grpc.health.v1.Health/Check"

// grpcBackend is a real gRPC server on 127.0.0.1 serving the health service
// behind a mesh's ServerOptions. Its Check and Watch count their calls and
// behave as check and watch say (nil: SERVING); every answer carries the
// header "backend: <name>".
type grpcBackend struct {
	healthpb.UnimplementedHealthServer
	name string
	ln   net.Listener
	srv  *grpc.Server
	Hits atomic.Int64 // calls that reached the handlers

	// Behaviours, set with onCheck and onWatch while the server runs.
	check atomic.Pointer[checkFunc]
	watch atomic.Pointer[watchFunc]

	deadline atomic.Int64 // time left to the deadline the last Check saw, in ns; -1 without one
	watched  atomic.Value // the service the last Watch asked about
}

type (
	checkFunc func(ctx context.Context, n int64) (*healthpb.HealthCheckResponse, error)
	watchFunc func(n int64, stream grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error
)

// onCheck sets what Check does (nil: answer SERVING).
func (b *grpcBackend) onCheck(f checkFunc) { b.check.Store(&f) }

// onWatch sets what Watch does (nil: send SERVING once).
func (b *grpcBackend) onWatch(f watchFunc) { b.watch.Store(&f) }

func listenLoopback(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func newGRPCBackend(t testing.TB, name string) *grpcBackend {
	return &grpcBackend{name: name, ln: listenLoopback(t)}
}

func (b *grpcBackend) Addr() string { return b.ln.Addr().String() }

// serve starts b behind m's ServerOptions; it stops when the test ends.
func (b *grpcBackend) serve(t testing.TB, m *mesh.Mesh) {
	t.Helper()
	tag := func(ctx context.Context) { _ = grpc.SetHeader(ctx, metadata.Pairs("backend", b.name)) }
	opts := append(ServerOptions(m),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			tag(ctx)
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			tag(ss.Context())
			return h(srv, ss)
		}))
	b.srv = grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(b.srv, b)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = b.srv.Serve(b.ln)
	}()
	t.Cleanup(func() {
		b.srv.Stop()
		<-done
	})
}

func (b *grpcBackend) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	n := b.Hits.Add(1)
	if dl, ok := ctx.Deadline(); ok {
		b.deadline.Store(int64(time.Until(dl)))
	} else {
		b.deadline.Store(-1)
	}
	if f := b.check.Load(); f != nil && *f != nil {
		return (*f)(ctx, n)
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (b *grpcBackend) Watch(req *healthpb.HealthCheckRequest, stream grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	n := b.Hits.Add(1)
	b.watched.Store(req.GetService())
	if f := b.watch.Load(); f != nil && *f != nil {
		return (*f)(n, stream)
	}
	return stream.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING})
}

// dial returns a health client of service through m's DialOptions; the
// connection is closed when the test ends.
func dial(t testing.TB, m *mesh.Mesh, service string) healthpb.HealthClient {
	t.Helper()
	conn, err := grpc.NewClient("mesh:///"+service, DialOptions(m)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return healthpb.NewHealthClient(conn)
}

// check calls Check and returns the backend that answered.
func check(ctx context.Context, c healthpb.HealthClient) (string, error) {
	var hdr metadata.MD
	_, err := c.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&hdr))
	if v := hdr.Get("backend"); len(v) > 0 {
		return v[0], err
	}
	return "", err
}

// grpcFleet is billing's backends behind billing's mesh, and the policy
// they were started with.
type grpcFleet struct {
	policy  string
	billing *mesh.Mesh
}

// startBilling starts the backends as billing's endpoints (labels version:
// <name>) under the policy policyFor gives for their addresses.
func startBilling(t testing.TB, policyFor func(addrs ...string) string, backends ...*grpcBackend) *grpcFleet {
	t.Helper()
	addrs := make([]string, len(backends))
	for i, b := range backends {
		addrs[i] = b.Addr()
	}
	f := &grpcFleet{policy: policyFor(addrs...)}
	f.billing = newTestMesh(t, f.policy, mesh.WithService("billing"))
	for _, b := range backends {
		b.serve(t, f.billing)
	}
	return f
}

// client starts the mesh of caller on the fleet's policy.
func (f *grpcFleet) client(t testing.TB, caller string, opts ...mesh.Option) *mesh.Mesh {
	return newTestMesh(t, f.policy, append([]mesh.Option{mesh.WithService(caller)}, opts...)...)
}

// grpcCanaryPolicy splits billing's Check 80/20 over v1 and v2, sends RPCs
// with the metadata x-canary: true to v2, and lets enrollment call.
func grpcCanaryPolicy(addrs ...string) string {
	return fmt.Sprintf(`
version: grpc-canary-1
trust_domain: mesh.local
services:
  billing:
    endpoints:
      - {address: %s, labels: {version: v1}}
      - {address: %s, labels: {version: v2}}
    subsets: {v1: {version: v1}, v2: {version: v2}}
    routes:
      - name: canary-by-metadata
        match: {headers: {x-canary: "true"}}
        split: [{subset: v2, weight: 100}]
      - name: check
        match: {path_prefix: /grpc.health.v1.Health/Check, methods: [POST]}
        split: [{subset: v1, weight: 80}, {subset: v2, weight: 20}]
    authorization:
      default: deny
      rules:
        - {from: [enrollment], paths: [/grpc.health.v1.Health/]}
  enrollment: {}
  progress: {}
`, addrs[0], addrs[1])
}

// billingPolicy returns the policy of a test: billing's endpoints at the
// addresses it is given, with settings (YAML lines of billing's, indented by
// four spaces), and the callers enrollment and progress.
func billingPolicy(settings string) func(addrs ...string) string {
	return func(addrs ...string) string {
		var b strings.Builder
		b.WriteString("trust_domain: mesh.local\nservices:\n  billing:\n    endpoints:\n")
		for _, a := range addrs {
			fmt.Fprintf(&b, "      - {address: %s}\n", a)
		}
		b.WriteString(settings)
		b.WriteString("  enrollment: {}\n  progress: {}\n")
		return b.String()
	}
}

// retryPolicy gives billing three attempts on unavailable.
var retryPolicy = billingPolicy("    retry: {attempts: 3, backoff: {initial: 1ms, max: 2ms}, retry_on: [unavailable]}\n")

// attemptsCounted sums inmesh.client.attempts.
func attemptsCounted(t testing.TB, reader *sdkmetric.ManualReader) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == telemetry.MetricClientAttempts {
				for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
					n += dp.Value
				}
			}
		}
	}
	return n
}

func TestGRPCApplicationStatusUnchanged(t *testing.T) {
	appStatus := func() *grpcstatus.Status {
		st := grpcstatus.New(codes.NotFound, "no such student: 42")
		st, err := st.WithDetails(&errdetails.ErrorInfo{Domain: "billing.example", Reason: "NO_STUDENT", Metadata: map[string]string{"student": "42"}})
		if err != nil {
			panic(err)
		}
		return st
	}
	for _, tc := range []struct {
		name     string
		retryOn  string
		wantHits int64
	}{
		{"not retried", "[unavailable]", 1},
		{"retried", "[not-found]", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newGRPCBackend(t, "app")
			b.onCheck(func(context.Context, int64) (*healthpb.HealthCheckResponse, error) { return nil, appStatus().Err() })
			f := startBilling(t, billingPolicy(
				"    retry: {attempts: 3, backoff: {initial: 1ms, max: 2ms}, retry_on: "+tc.retryOn+"}\n"), b)
			c := dial(t, f.client(t, "enrollment"), "billing")
			_, err := check(context.Background(), c)
			want := appStatus()
			if err == nil || err.Error() != want.Err().Error() {
				t.Fatalf("error %q, want %q", err, want.Err())
			}
			checkSameStatus(t, grpcstatus.Convert(err), want)
			if FromStatus(err) != nil {
				t.Fatalf("FromStatus of an application status: %+v", FromStatus(err))
			}
			if b.Hits.Load() != tc.wantHits {
				t.Fatalf("%d calls, want %d", b.Hits.Load(), tc.wantHits)
			}
		})
	}
}

func TestGRPCStreamRetriedOnlyBeforeFirstResponse(t *testing.T) {
	b := newGRPCBackend(t, "stream")
	f := startBilling(t, retryPolicy, b)
	c := dial(t, f.client(t, "enrollment"), "billing")
	serving := &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}

	// Fails before its first response: retried, the client sees the answer.
	b.onWatch(func(n int64, stream grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
		if n == 1 {
			return grpcstatus.Error(codes.Unavailable, "not yet")
		}
		if err := stream.Send(serving); err != nil {
			return err
		}
		return stream.Send(serving)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w, err := c.Watch(ctx, &healthpb.HealthCheckRequest{Service: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if resp, err := w.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("message %d: %v %v", i, resp, err)
		}
	}
	if _, err := w.Recv(); err != io.EOF {
		t.Fatalf("end of stream: %v", err)
	}
	if b.Hits.Load() != 2 {
		t.Fatalf("%d stream attempts, want 2", b.Hits.Load())
	}
	if got := b.watched.Load(); got != "billing" {
		t.Fatalf("the retry asked about %q: the request was not replayed", got)
	}

	// Fails after its first response: not retried, the status as sent.
	b.Hits.Store(0)
	b.onWatch(func(_ int64, stream grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
		if err := stream.Send(serving); err != nil {
			return err
		}
		return grpcstatus.Error(codes.Unavailable, "lost it")
	})
	w, err = c.Watch(ctx, &healthpb.HealthCheckRequest{Service: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	_, err = w.Recv()
	if grpcstatus.Code(err) != codes.Unavailable || grpcstatus.Convert(err).Message() != "lost it" || FromStatus(err) != nil {
		t.Fatalf("after the first response: %v", err)
	}
	if b.Hits.Load() != 1 {
		t.Fatalf("%d stream attempts, want 1: a stream past its first response was retried", b.Hits.Load())
	}

	// Fails every time before a response: three attempts, then the status.
	b.Hits.Store(0)
	b.onWatch(func(int64, grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
		return grpcstatus.Error(codes.Unavailable, "never")
	})
	w, err = c.Watch(ctx, &healthpb.HealthCheckRequest{Service: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); grpcstatus.Code(err) != codes.Unavailable || b.Hits.Load() != 3 {
		t.Fatalf("err %v after %d attempts, want Unavailable after 3", err, b.Hits.Load())
	}
}

func TestGRPCPlaintext(t *testing.T) {
	// billing's policy says tls: disable: callers dial it in plaintext and
	// its server accepts that; nothing identifies the caller.
	b := newGRPCBackend(t, "plain")
	f := startBilling(t, func(addrs ...string) string {
		return fmt.Sprintf(`
trust_domain: mesh.local
services:
  billing: {endpoints: [{address: %s}], tls: disable}
  ledger: {endpoints: [{address: %s}]}
  enrollment: {}
`, addrs[0], addrs[0])
	}, b)
	if _, err := check(context.Background(), dial(t, f.client(t, "enrollment"), "billing")); err != nil {
		t.Fatalf("plaintext: %v", err)
	}
	// ledger (tls strict) at the same address: mTLS still works there.
	if _, err := check(context.Background(), dial(t, f.client(t, "enrollment"), "ledger")); err == nil || FromStatus(err).Layer != mesh.LayerTLS {
		t.Fatalf("mTLS toward ledger served by billing: %v, want layer tls", err)
	}

	// A strict server refuses a plaintext caller.
	strict := newGRPCBackend(t, "strict")
	startBilling(t, billingPolicy(""), strict)
	plainCaller := newTestMesh(t, billingPolicy("    tls: disable\n")(strict.Addr()), mesh.WithService("enrollment"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := check(ctx, dial(t, plainCaller, "billing")); FromStatus(err) == nil || strict.Hits.Load() != 0 {
		t.Fatalf("a plaintext caller of a strict server: %v, %d hits", err, strict.Hits.Load())
	}
}

func TestGRPCFollowsPolicyUpdates(t *testing.T) {
	a, b := newGRPCBackend(t, "a"), newGRPCBackend(t, "b")
	pol := func(addr string) string { return billingPolicy("")(addr) }
	server := newTestMesh(t, pol(a.Addr()), mesh.WithService("billing"))
	a.serve(t, server)
	b.serve(t, server)
	path := t.TempDir() + "/mesh.yaml"
	meshtest.WriteFile(t, path, pol(a.Addr()))
	m, err := mesh.New(context.Background(), mesh.WithService("enrollment"), mesh.WithPolicyFile(path), mesh.WithLogger(meshtest.QuietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	c := dial(t, m, "billing")
	if got, err := check(context.Background(), c); err != nil || got != "a" {
		t.Fatalf("before the update: %q %v", got, err)
	}
	meshtest.WriteFile(t, path, pol(b.Addr()))
	meshtest.Eventually(t, 10*time.Second, "RPCs follow the new endpoint", func() bool {
		got, err := check(context.Background(), c)
		return err == nil && got == "b"
	})
}

func TestFromStatusAcrossTheWire(t *testing.T) {
	ce := &mesh.CallError{Layer: mesh.LayerBudget, Service: "billing", Route: "charge", Subset: "v1", Endpoint: "127.0.0.1:9001",
		Attempts: 3, PolicyVersion: "2026-11-26.1", Err: errors.New("retry budget exhausted; last attempt: boom: x")}
	if FromStatus(ce) != ce {
		t.Fatal("FromStatus of a CallError is not itself")
	}
	// What a peer receives: the status rebuilt from its proto.
	wire := grpcstatus.FromProto(grpcstatus.Convert(callFailed(ce)).Proto()).Err()
	got := FromStatus(wire)
	if got == nil {
		t.Fatal("FromStatus lost the CallError")
	}
	if got.Layer != ce.Layer || got.Service != ce.Service || got.Route != ce.Route || got.Subset != ce.Subset ||
		got.Endpoint != ce.Endpoint || got.Attempts != ce.Attempts || got.PolicyVersion != ce.PolicyVersion ||
		got.Err.Error() != ce.Err.Error() || got.Error() != ce.Error() {
		t.Fatalf("rebuilt %+v, want %+v", got, ce)
	}
	if grpcstatus.Code(wire) != codes.Unavailable {
		t.Fatalf("budget code %v", grpcstatus.Code(wire))
	}
	for _, err := range []error{nil, errors.New("plain"), grpcstatus.Error(codes.Internal, "app"), context.Canceled} {
		if FromStatus(err) != nil {
			t.Errorf("FromStatus(%v) is not nil", err)
		}
	}
	for l, want := range map[mesh.Layer]codes.Code{mesh.LayerTimeout: codes.DeadlineExceeded, mesh.LayerAuthz: codes.PermissionDenied,
		mesh.LayerRoute: codes.FailedPrecondition, mesh.LayerPolicy: codes.Unavailable, mesh.LayerBreaker: codes.Unavailable,
		mesh.LayerConnect: codes.Unavailable, mesh.LayerTLS: codes.Unavailable, mesh.LayerDiscovery: codes.Unavailable} {
		if Code(l) != want {
			t.Errorf("%s: code %v, want %v", l, Code(l), want)
		}
	}
}

// TestCallErrorOfAnRPC: the error a failed RPC returns wraps the
// *mesh.CallError (errors.As finds it, FromStatus returns it), has its very
// Error() text, and is the status of its layer.
func TestCallErrorOfAnRPC(t *testing.T) {
	m := newTestMesh(t, billingPolicy("")(deadAddr(t)), mesh.WithService("enrollment"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := check(ctx, dial(t, m, "billing"))
	var ce *mesh.CallError
	if !errors.As(err, &ce) || ce.Layer != mesh.LayerConnect {
		t.Fatalf("errors.As: %T %v", err, err)
	}
	if FromStatus(err) != ce {
		t.Fatal("FromStatus does not return the CallError errors.As finds")
	}
	if err.Error() != ce.Error() {
		t.Fatalf("Error() %q, want the CallError's %q", err.Error(), ce.Error())
	}
	if st := grpcstatus.Convert(err); st.Code() != codes.Unavailable || st.Message() != ce.Error() || meshInfo(st) == nil {
		t.Fatalf("status %v", st.Proto())
	}
}

func TestTargetService(t *testing.T) {
	for target, want := range map[string]string{
		"mesh:///billing": "billing", "mesh://billing": "billing", "mesh://auth/billing": "billing",
		"mesh:billing": "billing", "MESH:///billing": "billing", "mesh:///billing?x=1": "billing",
		"dns:///billing": "", "mesh:///": "", "meshy:///billing": "", "passthrough:///127.0.0.1:1": "",
	} {
		got, ok := targetService(target)
		if got != want || ok != (want != "") {
			t.Errorf("targetService(%q) = %q, %v; want %q", target, got, ok, want)
		}
	}
}

func TestGRPCExplain(t *testing.T) {
	pol := strings.Replace(grpcCanaryPolicy("127.0.0.1:9001", "127.0.0.1:9002"), "    routes:",
		"    retry: {attempts: 3, retry_on: [unavailable]}\n    routes:", 1)
	m := newTestMesh(t, pol, mesh.WithService("enrollment"))
	req, _ := http.NewRequest(http.MethodGet, "grpc://billing/grpc.health.v1.Health/Check", nil)
	ex, err := m.Explain(req)
	if err != nil {
		t.Fatal(err)
	}
	if ex.Protocol != "grpc" || ex.Route != "check" || len(ex.Split) != 2 || ex.TLS != "strict" || ex.Attempts != 3 {
		t.Fatalf("explained %+v", ex)
	}
	req, _ = http.NewRequest(http.MethodPost, "http://billing/grpc.health.v1.Health/Watch", nil)
	req.Header.Set("Content-Type", "application/grpc+proto")
	req.Header.Set("X-Canary", "true")
	if ex, err = m.Explain(req); err != nil || ex.Route != "canary-by-metadata" || ex.Attempts != 3 {
		t.Fatalf("explained %+v, %v", ex, err)
	}

	// The admin handler, as an operator asks it.
	rec := httptest.NewRecorder()
	m.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet,
		"/explain?url=grpc://billing/grpc.health.v1.Health/Check&header=x-canary:true", nil))
	var got mesh.Explanation
	meshtest.MustJSON(t, rec.Body.Bytes(), &got)
	if got.Protocol != "grpc" || got.Route != "canary-by-metadata" || got.Attempts != 3 {
		t.Fatalf("/explain: %s", rec.Body.String())
	}
}

// TestGRPCNoLeak checks that closing the connection, the server and the
// meshes leaves no goroutine behind.
func TestGRPCNoLeak(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	func() {
		b := newGRPCBackend(t, "leak")
		pol := retryPolicy(b.Addr())
		server, err := mesh.New(context.Background(), mesh.WithService("billing"), mesh.WithPolicy(mustParse(t, pol)), mesh.WithLogger(meshtest.QuietLogger()))
		if err != nil {
			t.Fatal(err)
		}
		defer server.Close()
		srv := grpc.NewServer(ServerOptions(server)...)
		healthpb.RegisterHealthServer(srv, b)
		done := make(chan struct{})
		go func() { defer close(done); _ = srv.Serve(b.ln) }()
		defer func() { srv.Stop(); <-done }()

		client, err := mesh.New(context.Background(), mesh.WithService("enrollment"), mesh.WithPolicy(mustParse(t, pol)), mesh.WithLogger(meshtest.QuietLogger()))
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		conn, err := grpc.NewClient("mesh:///billing", DialOptions(client)...)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		hc := healthpb.NewHealthClient(conn)
		if _, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
		w, err := hc.Watch(context.Background(), &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Recv(); err != nil {
			t.Fatal(err)
		}
	}()
}

func mustParse(t testing.TB, doc string) *policy.Document {
	t.Helper()
	d, err := policy.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestGRPCRotationKeepsConnections(t *testing.T) {
	ca, err := identity.NewDevCA("mesh.local")
	if err != nil {
		t.Fatal(err)
	}
	source := func(service string) identity.Source {
		src, err := ca.NewSource(service)
		if err != nil {
			t.Fatal(err)
		}
		return src
	}
	b := newGRPCBackend(t, "billing")
	ln := &meshtest.CountingListener{Listener: b.ln}
	b.ln = ln
	pol := retryPolicy(b.Addr())
	b.serve(t, newTestMesh(t, pol, mesh.WithService("billing"), mesh.WithIdentity(source("billing"))))
	client := newTestMesh(t, pol, mesh.WithService("enrollment"), mesh.WithIdentity(source("enrollment")))
	before, err := client.Identity()
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, client, "billing")
	if _, err := check(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if err := ca.Rotate(); err != nil {
		t.Fatal(err)
	}
	after, err := client.Identity()
	if err != nil || after.Serial() == before.Serial() {
		t.Fatalf("the client's certificate was not rotated (%v)", err)
	}
	for range 10 {
		if _, err := check(context.Background(), c); err != nil {
			t.Fatalf("after rotation, on the open connection: %v", err)
		}
	}
	if n := ln.Accepted.Load(); n != 1 {
		t.Fatalf("rotation caused %d connections, want the 1 open before it", n)
	}
	// A new connection handshakes with the new certificates.
	if _, err := check(context.Background(), dial(t, client, "billing")); err != nil {
		t.Fatalf("a new connection after rotation: %v", err)
	}
	if n := ln.Accepted.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
}

// fakeSubConn stands for a SubConn in picker tests.
type fakeSubConn struct{ balancer.SubConn }

func TestPickerWaitsOnlyForNewerStates(t *testing.T) {
	hostA := discovery.NewHost(discovery.Endpoint{Address: "10.0.0.1:1"}, nil)
	hostB := discovery.NewHost(discovery.Endpoint{Address: "10.0.0.2:1"}, nil)
	pick := func(p *picker, pl *core.Pool, seq uint64) (balancer.PickResult, *pickSlot, error) {
		s := newPickSlot()
		s.reset(pl, seq, nil, time.Now())
		res, err := p.Pick(balancer.PickInfo{Ctx: withPickSlot(context.Background(), s)})
		return res, s, err
	}
	poolOf := func(hs ...*discovery.Host) *core.Pool {
		pk, _ := discovery.NewPicker("", hs)
		return &core.Pool{Subset: "v1", Hosts: hs, Picker: pk}
	}
	ready := &fakeSubConn{}
	p := &picker{seq: 5, byAddr: map[string]*pickEntry{
		hostA.Address: {sc: ready, state: connectivity.Ready},
	}}
	p.ready = []*pickEntry{p.byAddr[hostA.Address]}

	// A host the balancer knows and is ready: picked.
	if res, s, err := pick(p, poolOf(hostA), 5); err != nil || res.SubConn != ready || s.host.Load() != hostA {
		t.Fatalf("ready host: %v %v", res, err)
	}
	// A host of a newer state than the picker's: wait for the resolver.
	if _, _, err := pick(p, poolOf(hostB), 6); err != balancer.ErrNoSubConnAvailable {
		t.Fatalf("host of a newer state: %v, want ErrNoSubConnAvailable", err)
	}
	// A host the picker's state dropped: fail now, layer discovery.
	_, s, err := pick(p, poolOf(hostB), 4)
	if f := s.failure.Load(); err == nil || f == nil || f.layer != mesh.LayerDiscovery {
		t.Fatalf("host dropped by a newer state: %v, want a discovery failure", err)
	}
	// A pool mixing both: the ready one is taken.
	if res, s, err := pick(p, poolOf(hostB, hostA), 4); err != nil || res.SubConn != ready || s.host.Load() != hostA {
		t.Fatalf("mixed pool: %v %v", res, err)
	}

	// An ejected host, ready, and an available one still connecting: wait
	// for the available one rather than send to the ejected one...
	ejected := discovery.NewHost(discovery.Endpoint{Address: "10.0.0.3:1"}, ejectedHealth{})
	p.byAddr[ejected.Address] = &pickEntry{sc: ready, state: connectivity.Ready}
	p.byAddr[hostB.Address] = &pickEntry{sc: &fakeSubConn{}, state: connectivity.Connecting}
	if _, _, err := pick(p, poolOf(ejected, hostB), 5); err != balancer.ErrNoSubConnAvailable {
		t.Fatalf("ejected and connecting: %v, want ErrNoSubConnAvailable", err)
	}
	// ... but when the available one has failed, the ejected one serves
	// (panic mode).
	p.byAddr[hostB.Address] = &pickEntry{state: connectivity.TransientFailure, err: errors.New("refused")}
	if res, s, err := pick(p, poolOf(ejected, hostB), 5); err != nil || s.host.Load() != ejected || res.SubConn != ready {
		t.Fatalf("ejected and failed: %v %v", res, err)
	}
}

// ejectedHealth is the health of an ejected host.
type ejectedHealth struct{}

func (ejectedHealth) Available(time.Time) bool { return false }
