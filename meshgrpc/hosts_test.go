package meshgrpc

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/mesh"
)

// hostSpellings are ways to write billing's host that DNS takes for the
// same name; each must reach billing through the mesh, never through DNS.
var hostSpellings = []string{"billing", "Billing", "BILLING", "billing.", "Billing.", "BILLING.:80", "billing:8080", "billing.:443"}

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

// TestGRPCTargetSpellingsStayInTheMesh dials billing under every spelling
// of its target: each RPC must reach billing's backend, which only takes
// mTLS connections from mesh peers.
func TestGRPCTargetSpellingsStayInTheMesh(t *testing.T) {
	b := newGRPCBackend(t, "billing")
	f := startBilling(t, billingPolicy(""), b)
	client := f.client(t, "enrollment")
	for _, host := range hostSpellings {
		for _, target := range []string{"mesh:///" + host, "mesh://authority/" + host} {
			conn, err := grpc.NewClient(target, DialOptions(client)...)
			if err != nil {
				t.Fatal(err)
			}
			before := b.hits.Load()
			if who, err := check(context.Background(), healthpb.NewHealthClient(conn)); err != nil || who != "billing" {
				t.Errorf("%s: backend %q, err %v", target, who, err)
			}
			if b.hits.Load() != before+1 {
				t.Errorf("%s: the backend saw %d calls, want 1", target, b.hits.Load()-before)
			}
			_ = conn.Close()
		}
	}
}

// plainHealth serves the health service with no mesh and no TLS on a
// listener that counts its connections; hits counts the Checks.
func plainHealth(t *testing.T) (*countingListener, *grpcBackend) {
	t.Helper()
	b := newGRPCBackend(t, "outside")
	ln := &countingListener{Listener: b.ln}
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

// TestGRPCEgressDeny: under egress: deny, an RPC toward a mesh target that
// names no service, or toward a target of another scheme dialed with the
// mesh's options, fails at layer egress (PermissionDenied) and its server is
// never dialed; billing is still called.
func TestGRPCEgressDeny(t *testing.T) {
	ln, outside := plainHealth(t)
	b := newGRPCBackend(t, "billing")
	f := startBilling(t, func(addrs ...string) string { return "egress: deny\n" + billingPolicy("")(addrs...) }, b)
	client := f.client(t, "enrollment")
	for _, target := range []string{"mesh:///unknown", outside.addr(), "passthrough:///" + outside.addr(), "dns:///" + outside.addr()} {
		conn, err := grpc.NewClient(target, DialOptions(client)...)
		if err != nil {
			t.Fatal(err)
		}
		_, err = check(context.Background(), healthpb.NewHealthClient(conn))
		ce := FromStatus(err)
		if ce == nil || ce.Layer != mesh.LayerEgress || grpcstatus.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: %v", target, err)
		}
		_ = conn.Close()
	}
	if who, err := check(context.Background(), dial(t, client, "billing")); err != nil || who != "billing" {
		t.Fatalf("billing under egress: deny: %q %v", who, err)
	}
	if ln.accepted.Load() != 0 || outside.hits.Load() != 0 {
		t.Fatalf("the outside server saw %d connections and %d calls", ln.accepted.Load(), outside.hits.Load())
	}

	// Under allow, the plain target is the application's business.
	allow := newTestMesh(t, billingPolicy("")(b.addr()), mesh.WithService("enrollment"))
	conn, err := grpc.NewClient(outside.addr(), append(DialOptions(allow), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := check(context.Background(), healthpb.NewHealthClient(conn)); err != nil || outside.hits.Load() != 1 {
		t.Fatalf("egress: allow: %v, %d calls", err, outside.hits.Load())
	}
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
