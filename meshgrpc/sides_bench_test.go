package meshgrpc

import (
	"context"
	"strings"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
)

// BenchmarkGRPCUnarySides splits the mesh's cost of a plaintext unary RPC,
// telemetry off (the noop providers), between its two sides: each of the
// client and the server bare grpc-go or through the mesh, against the
// stock health service on 127.0.0.1.
func BenchmarkGRPCUnarySides(b *testing.B) {
	for _, side := range []struct {
		name           string
		client, server bool
		sdk            bool // the real OTel SDK: metrics to a manual reader, every span sampled
	}{{"bare", false, false, false}, {"client", true, false, false}, {"server", false, true, false}, {"both", true, true, false},
		{"both+sdk", true, true, true}} {
		b.Run(side.name, func(b *testing.B) {
			off := telemetryOff()
			if side.sdk {
				mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
				tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
				b.Cleanup(func() { _ = mp.Shutdown(context.Background()); _ = tp.Shutdown(context.Background()) })
				off = []mesh.Option{mesh.WithMeterProvider(mp), mesh.WithTracerProvider(tp)}
			}
			ln := listenLoopback(b)
			// One server in both subsets of the split, as in BenchmarkGRPCUnary.
			pol := strings.NewReplacer(
				"      - {address: 127.0.0.1:0, labels: {version: v2}}\n", "",
				"v2: {version: v2}", "v2: {version: v1}",
			).Replace(meshtest.BenchPolicy(ln.Addr().String(), "127.0.0.1:0", "timeout: 2s"))
			var sopts []grpc.ServerOption
			if side.server {
				sopts = ServerOptions(newTestMesh(b, pol, append(off, mesh.WithService("billing"))...))
			}
			srv := grpc.NewServer(sopts...)
			healthpb.RegisterHealthServer(srv, health.NewServer())
			done := make(chan struct{})
			go func() { defer close(done); _ = srv.Serve(ln) }()
			b.Cleanup(func() { srv.Stop(); <-done })
			target, dopts := "passthrough:///"+ln.Addr().String(), []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
			if side.client {
				target, dopts = "mesh:///billing", DialOptions(newTestMesh(b, pol, append(off, mesh.WithService("enrollment"))...))
			}
			conn, err := grpc.NewClient(target, dopts...)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = conn.Close() })
			checks(b, healthpb.NewHealthClient(conn))
		})
	}
}
