package consul_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
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
	m, err := mesh.New(ctx, mesh.WithService("billing"), mesh.WithControlPlane(consul.New(consul.Config{Client: counter.Client})), mesh.WithLogger(quietLogger()))
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
	eventually(t, 10*time.Second, "the intentions", func() bool {
		return deniedBy(t, billing, web, "/admin")
	})
	return billing, web
}

var consulHTTPAttacks = []pathAttack{
	{"plain", "/public", nil, true},
	{"escaped letter", "/p%75blic/x", nil, true},
	{"denied prefix", "/admin", nil, false},
	{"below the denied prefix", "/admin/users", nil, false},
	{"dot-dot", "/public/../admin", nil, false},
	{"escaped dot-dot", "/public/%2e%2e/admin", nil, false},
	{"upper-case escaped dot-dot", "/public/%2E%2E/admin", nil, false},
	{"dot-dot escaped slash", "/public/..%2fadmin", nil, false},
	{"escaped slashes", "/public%2F..%2Fadmin", nil, false},
	{"double slash", "//admin", nil, false},
	{"dot segment", "/./admin", nil, false},
	{"backslashes", `/public\..\admin`, nil, false},
	{"escaped backslashes", "/public%5c..%5cadmin", nil, false},
	{"escaped letter of the denied prefix", "/%61dmin", nil, false},
	{"deny header", "/public", http.Header{"X-Role": {"guest"}}, false},
	{"deny header after another value", "/public", http.Header{"X-Role": {"admin", "guest"}}, false},
	{"deny header before another value", "/public", http.Header{"X-Role": {"guest", "admin"}}, false},
	{"allow header", "/invoices/1", http.Header{"X-Tenant": {"acme"}}, true},
	{"allow header missing", "/invoices/1", nil, false},
	{"allow header and another value", "/invoices/1", http.Header{"X-Tenant": {"acme", "evil"}}, false},
	{"another value and allow header", "/invoices/1", http.Header{"X-Tenant": {"evil", "acme"}}, false},
	{"respelled path with the allow header", "/x/../invoices/1", http.Header{"X-Tenant": {"acme"}}, false},
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
	srv := newRawTestServer(t, billing)
	runAttacks(t, srv, web, consulHTTPAttacks)
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

// pathAttack is one request and whether billing must serve it.
type pathAttack struct {
	name   string
	path   string // as sent on the wire
	header http.Header
	served bool
}

// rawTestServer is an HTTPS server (HTTP/1.1 and HTTP/2) behind a mesh.
type rawTestServer struct {
	*httptest.Server
	hits atomic.Int64
}

func newRawTestServer(t *testing.T, m *mesh.Mesh) *rawTestServer {
	t.Helper()
	s := &rawTestServer{}
	s.Server = httptest.NewUnstartedServer(m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		_, _ = io.WriteString(w, "served")
	})))
	s.EnableHTTP2 = true
	s.TLS = m.ServerTLSConfig()
	s.TLS.NextProtos = []string{"h2", "http/1.1"}
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// runAttacks sends each attack to srv, billing's server, as caller, over HTTP/1.1 and HTTP/2,
// with the path exactly as written (Go's client does not clean it): the
// served ones must reach the handler, the others must be denied at layer
// authz without reaching it.
func runAttacks(t *testing.T, srv *rawTestServer, caller *mesh.Mesh, attacks []pathAttack) {
	t.Helper()
	for _, h2 := range []bool{false, true} {
		var protos http.Protocols
		protos.SetHTTP1(!h2)
		protos.SetHTTP2(h2)
		tr := &http.Transport{TLSClientConfig: identity.ClientConfig(sourceOf(t, caller), "billing"), Protocols: &protos}
		t.Cleanup(tr.CloseIdleConnections)
		client := &http.Client{Transport: tr}
		for _, a := range attacks {
			req, err := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(a.path) > 1 && a.path[1] == '/' {
				req.URL.Path = a.path // an Opaque "//x" would be sent as "https://x"
			} else {
				req.URL.Opaque = a.path
			}
			for k, vs := range a.header {
				req.Header[k] = vs
			}
			before := srv.hits.Load()
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("%s (h2 %v): %v", a.name, h2, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if wantMajor := map[bool]int{false: 1, true: 2}[h2]; resp.ProtoMajor != wantMajor {
				t.Fatalf("%s: HTTP/%d, want HTTP/%d", a.name, resp.ProtoMajor, wantMajor)
			}
			served := srv.hits.Load() != before
			switch {
			case a.served && (!served || resp.StatusCode != http.StatusOK):
				t.Errorf("%s (HTTP/%d): GET %s %v: %d, want it served", a.name, resp.ProtoMajor, a.path, a.header, resp.StatusCode)
			case !a.served && (served || resp.StatusCode != http.StatusForbidden || resp.Header.Get(mesh.HeaderError) != string(mesh.LayerAuthz)):
				t.Errorf("%s (HTTP/%d): GET %s %v: %d %q, served %v, want an authz denial", a.name, resp.ProtoMajor, a.path, a.header,
					resp.StatusCode, resp.Header.Get(mesh.HeaderError), served)
			}
		}
	}
}
