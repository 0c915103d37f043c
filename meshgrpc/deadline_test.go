package meshgrpc

import (
	"context"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestGRPCHugeDeadline: the gRPC server side reads no mesh header; the
// deadline travels as grpc-timeout, which grpc-go clamps instead of
// overflowing. A caller's deadline a century away reaches the handler
// unexpired.
func TestGRPCHugeDeadline(t *testing.T) {
	b := newGRPCBackend(t, "far")
	f := startBilling(t, billingPolicy(""), b)
	c := dial(t, f.client(t, "enrollment"), "billing")
	ctx, cancel := context.WithTimeout(context.Background(), 100*365*24*time.Hour)
	defer cancel()
	if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if left := time.Duration(b.deadline.Load()); left < 50*365*24*time.Hour {
		t.Fatalf("the handler's deadline is %v away", left)
	}
}
