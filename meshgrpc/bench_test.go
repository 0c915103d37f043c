package meshgrpc

import (
	"context"
	"strings"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/inmesh/inmesh/internal/meshlink"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
)

// BenchmarkGRPCUnary compares a unary RPC through the mesh's DialOptions
// with the same RPC on a plain grpc.ClientConn, against the same server on
// 127.0.0.1 (behind the mesh's ServerOptions, so the server's cost is the
// same for both), in one run: over mTLS with the workload identities, and
// in plaintext. The mesh runs the full chain of benchPolicy: a metadata
// route that does not match, a 90/10 split (both subsets hold the one
// server), round robin, breaker, retry bookkeeping with a budget, outlier
// detection, and metrics through the OTel SDK.
func BenchmarkGRPCUnary(b *testing.B) {
	for _, mode := range []string{"mtls", "plaintext"} {
		tls := "tls: strict"
		if mode == "plaintext" {
			tls = "" // benchPolicy's default
		}
		// One server, the plain client's, in both subsets of the split.
		backend := newGRPCBackend(b, "billing")
		pol := strings.NewReplacer(
			"      - {address: 127.0.0.1:0, labels: {version: v2}}\n", "",
			"v2: {version: v2}", "v2: {version: v1}",
		).Replace(meshtest.BenchPolicy(backend.Addr(), "127.0.0.1:0", tls))
		backend.serve(b, newTestMesh(b, pol, mesh.WithService("billing")))

		plain := func(b *testing.B) healthpb.HealthClient {
			creds := insecure.NewCredentials()
			if mode == "mtls" {
				client := newTestMesh(b, pol, mesh.WithService("enrollment"))
				creds = credentials.NewTLS(meshlink.Of(client).ClientTLS("billing"))
			}
			conn, err := grpc.NewClient("passthrough:///"+backend.Addr(), grpc.WithTransportCredentials(creds))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = conn.Close() })
			return healthpb.NewHealthClient(conn)
		}
		meshed := func(b *testing.B) healthpb.HealthClient {
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
			b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
			client := newTestMesh(b, pol, mesh.WithService("enrollment"), mesh.WithMeterProvider(mp))
			conn, err := grpc.NewClient("mesh:///billing", DialOptions(client)...)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = conn.Close() })
			return healthpb.NewHealthClient(conn)
		}
		b.Run(mode+"/plain", func(b *testing.B) { checks(b, plain(b)) })
		b.Run(mode+"/mesh", func(b *testing.B) { checks(b, meshed(b)) })
		// Both clients in turn, call by call, so that the load of the
		// machine weighs on both alike: ns/op is a pair of calls, and
		// mesh/plain the ratio of their times.
		b.Run(mode+"/interleaved", func(b *testing.B) {
			p, m := plain(b), meshed(b)
			ctx := context.Background()
			req := &healthpb.HealthCheckRequest{}
			for _, c := range []healthpb.HealthClient{p, m} {
				if _, err := c.Check(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
			var tp, tm time.Duration
			b.ResetTimer()
			for b.Loop() {
				t0 := time.Now()
				if _, err := p.Check(ctx, req); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if _, err := m.Check(ctx, req); err != nil {
					b.Fatal(err)
				}
				tp += t1.Sub(t0)
				tm += time.Since(t1)
			}
			b.ReportMetric(float64(tp.Nanoseconds())/float64(b.N), "plain-ns/call")
			b.ReportMetric(float64(tm.Nanoseconds())/float64(b.N), "mesh-ns/call")
			b.ReportMetric(float64(tm)/float64(tp), "mesh/plain")
		})
	}
}

// checks calls Check b.N times, after one call that connects.
func checks(b *testing.B, c healthpb.HealthClient) {
	ctx := context.Background()
	req := &healthpb.HealthCheckRequest{}
	if _, err := c.Check(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Check(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGRPCClientInterceptor measures the mesh's own cost per unary
// call, without I/O: the interceptor with an invoker that answers at once
// and a picker call, as the balancer makes it.
func BenchmarkGRPCClientInterceptor(b *testing.B) {
	m := benchMesh(b, "127.0.0.1:9", "127.0.0.1:10", "")
	a := newAdapter(m, "DialOptions")
	cc, err := grpc.NewClient("mesh:///billing", DialOptions(m)...)
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	ctx := context.Background()
	invoker := func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
		if s, _ := ctx.Value(pickSlotKey{}).(*pickSlot); s != nil {
			h := s.pool.Pick(s.prev, s.now)
			s.host.Store(h)
			h.Begin()
			s.done(balancerDoneOK)
		}
		return nil
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := a.unaryClient(ctx, checkMethod, nil, nil, cc, invoker); err != nil {
			b.Fatal(err)
		}
	}
}

// balancerDoneOK is the DoneInfo of an answered RPC.
var balancerDoneOK = balancer.DoneInfo{BytesSent: true, BytesReceived: true}
