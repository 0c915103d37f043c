package mesh

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/meshtest"
)

// meshServer is a real HTTPS server on 127.0.0.1 whose handler is wrapped by
// a mesh of service name, with that mesh's TLS configuration.
type meshServer struct {
	*httptest.Server
	mesh *Mesh
	Hits atomic.Int64
}

func (s *meshServer) Addr() string { return strings.TrimPrefix(s.URL, "https://") }

// newMeshServer starts service's server; its mesh reads policy(addr) once
// the address is known.
func newMeshServer(t *testing.T, service string, policyFor func(addr string) string, opts ...Option) *meshServer {
	t.Helper()
	s := &meshServer{}
	s.Server = httptest.NewUnstartedServer(nil)
	addr := s.Listener.Addr().String()
	s.mesh = newTestMesh(t, policyFor(addr), append([]Option{WithService(service)}, opts...)...)
	s.Config.Handler = s.mesh.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.Hits.Add(1)
		_, _ = io.WriteString(w, "served by "+service)
	}))
	s.TLS = s.mesh.ServerTLSConfig()
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func TestMTLSRefusesOtherCA(t *testing.T) {
	billing := newMeshServer(t, "billing", meshtest.FleetPolicy)
	other, err := identity.NewDevCA("mesh.local")
	if err != nil {
		t.Fatal(err)
	}
	client := newTestMesh(t, meshtest.FleetPolicy(billing.Addr()), WithService("admin"), WithIdentity(other.Source("admin")))
	_, _, err = get(t, client, "http://billing/x")
	if ce := meshtest.ErrorAs[*CallError](t, err); ce.Layer != LayerTLS {
		t.Fatalf("CallError %+v", ce)
	}
	if billing.Hits.Load() != 0 {
		t.Fatal("a caller of another CA reached the handler")
	}
}

func TestMTLSRefusesClientsWithoutCertificateOrOldTLS(t *testing.T) {
	billing := newMeshServer(t, "billing", meshtest.FleetPolicy)
	id, err := billing.mesh.identity.Current()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  *tls.Config
	}{
		{"no certificate", &tls.Config{RootCAs: id.Pool, InsecureSkipVerify: true}}, // the server is not what is tested here
		{"TLS 1.1", &tls.Config{RootCAs: id.Pool, InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11, Certificates: []tls.Certificate{*id.Certificate}}},
		{"TLS 1.0", &tls.Config{RootCAs: id.Pool, InsecureSkipVerify: true, MaxVersion: tls.VersionTLS10, Certificates: []tls.Certificate{*id.Certificate}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := &http.Transport{TLSClientConfig: tc.cfg}
			defer tr.CloseIdleConnections()
			resp, err := tr.RoundTrip(meshtest.MustRequest(t, http.MethodGet, billing.URL+"/x"))
			if err == nil {
				resp.Body.Close()
				t.Fatalf("served with status %d", resp.StatusCode)
			}
			if billing.Hits.Load() != 0 {
				t.Fatal("the handler ran")
			}
		})
	}
}

func TestAuthorizationDeniesWithoutRules(t *testing.T) {
	// The policy has no entry for "ledger": no rules are loaded for it.
	ledger := newMeshServer(t, "ledger", meshtest.FleetPolicy)
	client := newTestMesh(t, meshtest.FleetPolicy("127.0.0.1:1")+fmt.Sprintf("  ledger: {endpoints: [{address: %s}]}\n", ledger.Addr()), WithService("admin"))
	_, _, err := get(t, client, "http://ledger/x")
	if ce := meshtest.ErrorAs[*CallError](t, err); ce.Layer != LayerAuthz || !strings.Contains(err.Error(), "no policy") {
		t.Fatalf("got %v", err)
	}
}

func TestCertsAdmin(t *testing.T) {
	m := newTestMesh(t, meshtest.FleetPolicy("127.0.0.1:1"), WithService("billing"))
	rec := httptest.NewRecorder()
	m.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/certs", nil))
	var v CertView
	meshtest.MustJSON(t, rec.Body.Bytes(), &v)
	if v.ID != "spiffe://mesh.local/svc/billing" || v.Serial == "" || v.NotAfter.IsZero() || len(v.Roots) == 0 {
		t.Fatalf("/certs: %s", rec.Body.String())
	}
}
