package mesh

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/internal/clock/clocktest"
)

// backoffPolicy gives billing three attempts on unavailable with backoff
// (a YAML flow mapping).
func backoffPolicy(backoff string) func(addrs ...string) string {
	return billingPolicy("    retry: {attempts: 3, backoff: " + backoff + ", retry_on: [unavailable]}\n")
}

// isBusy reports whether err is the backend's own "busy" status, unchanged.
func isBusy(err error) bool {
	st, ok := grpcstatus.FromError(err)
	return ok && st.Code() == codes.Unavailable && st.Message() == "busy" && FromStatus(err) == nil
}

// TestGRPCStreamBackoffPastDeadline checks that a stream whose backoff
// would outlive the call's deadline returns its failure, as a unary call
// does, rather than being retried without the wait.
func TestGRPCStreamBackoffPastDeadline(t *testing.T) {
	b := newGRPCBackend(t, "busy")
	b.onWatch(func(int64, grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
		return grpcstatus.Error(codes.Unavailable, "busy")
	})
	f := startBilling(t, backoffPolicy("{initial: 1h, max: 1h}"), b)
	// The fake clock makes the backoff outlive the deadline for certain: it
	// reads a day past the deadline.
	fc := clocktest.NewFake(time.Now().Add(24 * time.Hour))
	c := dial(t, f.client(t, "enrollment", optionFunc(func(c *config) { c.clock = fc })), "billing")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := c.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	if !isBusy(err) || b.hits.Load() != 1 {
		t.Fatalf("err %v after %d attempts, want the first attempt's Unavailable \"busy\"", err, b.hits.Load())
	}
}
