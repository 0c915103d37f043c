package meshgrpc

import (
	"context"
	"testing"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
)

// telemetryOff are the options of a mesh whose telemetry is off: the noop
// meter and tracer providers.
func telemetryOff() []mesh.Option {
	return []mesh.Option{mesh.WithMeterProvider(metricnoop.NewMeterProvider()), mesh.WithTracerProvider(tracenoop.NewTracerProvider())}
}

// TestUnaryClientAllocations pins the allocations of the unary client
// interceptor over the full chain of meshtest.BenchPolicy, telemetry off, with an
// invoker that picks through the attempt's slot, as the balancer does, and
// answers at once: two, the call (rpcCall, which holds the pick slot and
// the first attempts' contexts) and the slot's Done bound to it. A change
// that adds one to the hot path fails here; one that saves one lowers the
// pin.
func TestUnaryClientAllocations(t *testing.T) {
	const want = 2
	for _, tt := range []struct{ name, timeout string }{
		{"timeout", "timeout: 2s"},
		{"no timeout", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := newTestMesh(t, meshtest.BenchPolicy("127.0.0.1:9", "127.0.0.1:10", tt.timeout), telemetryOff()...)
			a := newAdapter(m, "DialOptions")
			cc, err := grpc.NewClient("mesh:///billing", DialOptions(m)...)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			ctx := context.Background()
			picked := 0
			invoker := func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
				if s, _ := ctx.Value(pickSlotKey{}).(*pickSlot); s != nil {
					h := s.pool.Pick(s.prev, s.now)
					s.host.Store(h)
					h.Begin()
					s.done(balancerDoneOK)
					picked++
				}
				return nil
			}
			call := func() {
				if err := a.unaryClient(ctx, checkMethod, nil, nil, cc, invoker); err != nil {
					t.Fatal(err)
				}
			}
			call() // the first call to a destination starts watching it
			if got := testing.AllocsPerRun(200, call); got != want {
				t.Errorf("a unary call allocates %v times, want %d (lower the pin if fewer)", got, want)
			}
			if picked == 0 {
				t.Error("the invoker found no pick slot in the attempt's context")
			}
		})
	}
}

// TestUnaryServerAllocations pins the allocations of the unary server
// interceptor for an allowed plaintext call carrying metadata, telemetry
// off, the handler answering at once: one, the serverCall (which holds the
// carrier of the caller's trace context).
func TestUnaryServerAllocations(t *testing.T) {
	const want = 1
	m := newTestMesh(t, meshtest.BenchPolicy("127.0.0.1:9", "127.0.0.1:10", ""), append(telemetryOff(), mesh.WithService("billing"))...)
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
		t.Errorf("a served call allocates %v times, want %d (lower the pin if fewer)", got, want)
	}
}
