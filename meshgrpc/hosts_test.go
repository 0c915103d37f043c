package meshgrpc

import (
	"testing"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/inmesh/inmesh/internal/meshtest"
)

func TestTargetServiceSpellings(t *testing.T) {
	for target, want := range map[string]string{
		"mesh:///Billing": "billing", "mesh:///BILLING.": "billing", "mesh:///Billing.:443": "billing",
		"mesh:///billing:8443": "billing", "mesh://auth/Billing:1": "billing", "mesh://BILLING.:443": "billing",
		"mesh:Billing": "billing", "mesh:///[::1]:80": "[::1]",
	} {
		if got, ok := targetService(target); got != want || !ok {
			t.Errorf("targetService(%q) = %q, %v; want %q", target, got, ok, want)
		}
	}
}

// plainHealth serves the health service with no mesh and no TLS on a
// listener that counts its connections; hits counts the Checks.
func plainHealth(t *testing.T) (*meshtest.CountingListener, *grpcBackend) {
	t.Helper()
	b := newGRPCBackend(t, "outside")
	ln := &meshtest.CountingListener{Listener: b.ln}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, b)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return ln, b
}

// TestTargetServiceAllocatesNothing checks that reading the service of a
// target in canonical form costs no allocation: the client interceptors do
// it on every RPC.
func TestTargetServiceAllocatesNothing(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() {
		if _, ok := targetService("mesh:///billing"); !ok {
			t.Fatal("no mesh target")
		}
	}); n != 0 {
		t.Errorf("targetService of a canonical target: %v allocations, want 0", n)
	}
}
