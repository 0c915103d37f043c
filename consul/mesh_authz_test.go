package consul_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/consul"
	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/consultest"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/meshgrpc"
)

// TestConsulMeshIdleSendsOnlyLongPolls counts what a mesh on Consul sends
// its agent while nothing changes: its open long polls and, over 2 s of
// quiet, at most one more request per watched path. Its own service has no
// service-intentions entry, Consul's default state.
func TestConsulMeshIdleSendsOnlyLongPolls(t *testing.T) {
	agent := consultest.Start(t)
	putKV(t, agent.Client, "inmesh/services/billing", "{}")
	counter := agent.Counting(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := mesh.New(ctx, mesh.WithService("billing"), mesh.WithControlPlane(consul.New(consul.Config{Client: counter.Client})), mesh.WithLogger(meshtest.QuietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	const intentions = "/v1/config/service-intentions/billing"
	for counter.InFlight()[intentions] == 0 {
		if ctx.Err() != nil {
			t.Fatalf("no long poll on the intentions: %v", counter.Requests())
		}
		time.Sleep(5 * time.Millisecond)
	}
	before := counter.Requests()
	time.Sleep(2 * time.Second)
	after := counter.Requests()
	for path, n := range after {
		if n-before[path] > 1 {
			t.Errorf("%s: %d requests in 2 s of quiet", path, n-before[path])
		}
	}
	t.Logf("requests: %v; open long polls: %v", after, counter.InFlight())
}

// l7Intentions lets web call billing, except: /admin and below, any request
// with X-Role: guest, and /invoices or gRPC health calls without
// X-Tenant: acme.
var l7Intentions = &api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "billing", Sources: []*api.SourceIntention{
	{Name: "web", Permissions: []*api.IntentionPermission{
		{Action: api.IntentionActionDeny, HTTP: &api.IntentionHTTPPermission{PathPrefix: "/admin"}},
		{Action: api.IntentionActionDeny, HTTP: &api.IntentionHTTPPermission{
			Header: []api.IntentionHTTPHeaderPermission{{Name: "X-Role", Exact: "guest"}}}},
		{Action: api.IntentionActionAllow, HTTP: &api.IntentionHTTPPermission{PathPrefix: "/invoices",
			Header: []api.IntentionHTTPHeaderPermission{{Name: "X-Tenant", Exact: "acme"}}}},
		{Action: api.IntentionActionDeny, HTTP: &api.IntentionHTTPPermission{PathPrefix: "/invoices"}},
		{Action: api.IntentionActionAllow, HTTP: &api.IntentionHTTPPermission{PathPrefix: "/grpc.health.v1.Health/",
			Header: []api.IntentionHTTPHeaderPermission{{Name: "X-Tenant", Exact: "acme"}}}},
		{Action: api.IntentionActionDeny, HTTP: &api.IntentionHTTPPermission{PathPrefix: "/grpc.health.v1.Health/"}},
		{Action: api.IntentionActionAllow, HTTP: &api.IntentionHTTPPermission{PathPrefix: "/"}},
	}},
}}

// consulL7Billing starts billing's and web's meshes on agent, with
// l7Intentions in force at billing.
func consulL7Billing(t *testing.T) (billing, web *mesh.Mesh) {
	t.Helper()
	agent := consultest.Start(t)
	putKV(t, agent.Client, "inmesh/services/billing", "{}")
	putKV(t, agent.Client, "inmesh/services/web", "{}")
	entries := agent.Client.ConfigEntries()
	// Consul takes L7 permissions only for an HTTP destination.
	if _, _, err := entries.Set(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "billing", Protocol: "http"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := entries.Set(l7Intentions, nil); err != nil {
		t.Fatal(err)
	}
	billing, web = consulMesh(t, agent, "billing"), consulMesh(t, agent, "web")
	meshtest.Eventually(t, 10*time.Second, "the intentions", func() bool {
		return deniedBy(t, billing, web, "/admin")
	})
	return billing, web
}

var consulHTTPAttacks = []meshtest.PathAttack{
	{Name: "plain", Path: "/public", Served: true},
	{Name: "escaped letter", Path: "/p%75blic/x", Served: true},
	{Name: "denied prefix", Path: "/admin", Served: false},
	{Name: "below the denied prefix", Path: "/admin/users", Served: false},
	{Name: "dot-dot", Path: "/public/../admin", Served: false},
	{Name: "escaped dot-dot", Path: "/public/%2e%2e/admin", Served: false},
	{Name: "upper-case escaped dot-dot", Path: "/public/%2E%2E/admin", Served: false},
	{Name: "dot-dot escaped slash", Path: "/public/..%2fadmin", Served: false},
	{Name: "escaped slashes", Path: "/public%2F..%2Fadmin", Served: false},
	{Name: "double slash", Path: "//admin", Served: false},
	{Name: "dot segment", Path: "/./admin", Served: false},
	{Name: "backslashes", Path: `/public\..\admin`, Served: false},
	{Name: "escaped backslashes", Path: "/public%5c..%5cadmin", Served: false},
	{Name: "escaped letter of the denied prefix", Path: "/%61dmin", Served: false},
	{Name: "deny header", Path: "/public", Header: http.Header{"X-Role": {"guest"}}, Served: false},
	{Name: "deny header after another value", Path: "/public", Header: http.Header{"X-Role": {"admin", "guest"}}, Served: false},
	{Name: "deny header before another value", Path: "/public", Header: http.Header{"X-Role": {"guest", "admin"}}, Served: false},
	{Name: "allow header", Path: "/invoices/1", Header: http.Header{"X-Tenant": {"acme"}}, Served: true},
	{Name: "allow header missing", Path: "/invoices/1", Served: false},
	{Name: "allow header and another value", Path: "/invoices/1", Header: http.Header{"X-Tenant": {"acme", "evil"}}, Served: false},
	{Name: "another value and allow header", Path: "/invoices/1", Header: http.Header{"X-Tenant": {"evil", "acme"}}, Served: false},
	{Name: "respelled path with the allow header", Path: "/x/../invoices/1", Header: http.Header{"X-Tenant": {"acme"}}, Served: false},
}

// deniedBy reports whether server's mesh denies caller GET path, asking
// its Handler with caller's certificate as the verified peer.
func deniedBy(t *testing.T, server, caller *mesh.Mesh, path string) bool {
	t.Helper()
	id, err := caller.Identity()
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{id.Certificate.Leaf}}
	rec := httptest.NewRecorder()
	server.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})).ServeHTTP(rec, req)
	return rec.Code == http.StatusForbidden && rec.Header().Get(mesh.HeaderError) == string(mesh.LayerAuthz)
}

// TestConsulIntentionsL7OverHTTP sends path respellings and repeated
// headers to a real server behind billing's mesh, over HTTP/1.1 and
// HTTP/2, from web's certificate, with L7 intentions from a real agent.
func TestConsulIntentionsL7OverHTTP(t *testing.T) {
	billing, web := consulL7Billing(t)
	srv := meshtest.NewRawServer(t, billing.Handler, billing.ServerTLSConfig())
	meshtest.RunAttacks(t, srv, sourceOf(t, web), consulHTTPAttacks)
}

// TestConsulIntentionsL7OverGRPC sends metadata and full methods to a real
// gRPC server behind billing's mesh, with L7 intentions from a real agent:
// metadata are the headers the intentions see, every value of them.
func TestConsulIntentionsL7OverGRPC(t *testing.T) {
	billing, web := consulL7Billing(t)
	var unknown atomic.Int64
	backend := serveHealth(t, append(meshgrpc.ServerOptions(billing), grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		var req healthpb.HealthCheckRequest
		if err := ss.RecvMsg(&req); err != nil {
			return err
		}
		unknown.Add(1)
		return ss.SendMsg(&healthpb.HealthCheckResponse{})
	}))...)
	conn, err := grpc.NewClient("passthrough:///"+backend.addr(),
		grpc.WithTransportCredentials(credentials.NewTLS(identity.ClientConfig(sourceOf(t, web), "billing"))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tests := []struct {
		name   string
		method string
		md     []string // key, value, ...
		served bool
	}{
		{"allow metadata", checkMethod, []string{"x-tenant", "acme"}, true},
		{"allow metadata, any case of its name", checkMethod, []string{"X-Tenant", "acme"}, true},
		{"allow metadata missing", checkMethod, nil, false},
		{"allow metadata and another value", checkMethod, []string{"x-tenant", "acme", "x-tenant", "evil"}, false},
		{"another value and allow metadata", checkMethod, []string{"x-tenant", "evil", "x-tenant", "acme"}, false},
		{"deny metadata", checkMethod, []string{"x-tenant", "acme", "x-role", "guest"}, false},
		{"deny metadata after another value", checkMethod, []string{"x-tenant", "acme", "x-role", "admin", "x-role", "guest"}, false},
		{"unknown service", "/public.Svc/Get", nil, true},
		{"denied prefix", "/admin.Svc/Get", nil, false},
		{"dot-dot", "/public/../admin.Svc/Get", nil, false},
		{"escaped dot-dot", "/public/%2e%2e/admin.Svc/Get", nil, false},
		{"double slash", "//admin.Svc/Get", nil, false},
	}
	for _, tc := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if tc.md != nil {
			ctx = metadata.AppendToOutgoingContext(ctx, tc.md...)
		}
		before := backend.hits.Load() + unknown.Load()
		err := conn.Invoke(ctx, tc.method, &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
		cancel()
		served := backend.hits.Load()+unknown.Load() != before
		switch {
		case tc.served && (err != nil || !served):
			t.Errorf("%s: %s %v: %v, want it served", tc.name, tc.method, tc.md, err)
		case !tc.served && (served || grpcstatus.Code(err) != codes.PermissionDenied || meshgrpc.FromStatus(err) == nil || meshgrpc.FromStatus(err).Layer != mesh.LayerAuthz):
			t.Errorf("%s: %s %v: %v (served %v), want an authz denial", tc.name, tc.method, tc.md, err, served)
		}
	}
}
