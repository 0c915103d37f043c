package meshgrpc

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/mesh"
)

// namedSource is an identity source that names its destinations' servers,
// as Consul's Connect CA source does with Envoy's SNI.
type namedSource struct {
	identity.Source
	names map[string]string
}

func (s namedSource) ServerName(service string) string { return s.names[service] }

// TestGRPCSendsTheSourcesServerName: a handshake toward a destination sends
// the server name its identity source gives (grpc-go's credentials would
// send the authority, the service name), and the service name when the
// source names nothing.
func TestGRPCSendsTheSourcesServerName(t *testing.T) {
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
	var mu sync.Mutex
	seen := map[string]int{}
	serve := func() string {
		cfg := identity.ServerConfig(source("billing"))
		get := cfg.GetCertificate
		cfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			mu.Lock()
			seen[hello.ServerName]++
			mu.Unlock()
			return get(hello)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
		healthpb.RegisterHealthServer(srv, health.NewServer())
		done := make(chan struct{})
		go func() { defer close(done); _ = srv.Serve(ln) }()
		t.Cleanup(func() { srv.Stop(); <-done })
		return ln.Addr().String()
	}
	named, plain := serve(), serve()
	pol := "services:\n  billing: {endpoints: [{address: " + named + "}]}\n  billing2: {endpoints: [{address: " + plain + "}]}\n"
	client := newTestMesh(t, pol, mesh.WithService("enrollment"), mesh.WithIdentity(namedSource{
		Source: source("enrollment"), names: map[string]string{"billing": "billing.default.dc1.internal.mesh.local"}}))
	if _, err := check(context.Background(), dial(t, client, "billing")); err != nil {
		t.Fatalf("billing: %v", err)
	}
	// billing2's server is billing: the handshake fails, after the SNI.
	if _, err := check(context.Background(), dial(t, client, "billing2")); err == nil {
		t.Fatal("billing2 answered with billing's identity")
	}
	mu.Lock()
	defer mu.Unlock()
	if seen["billing.default.dc1.internal.mesh.local"] == 0 || seen["billing2"] == 0 || len(seen) != 2 {
		t.Fatalf("server names seen %v", seen)
	}
}
