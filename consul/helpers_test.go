package consul_test

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/inmesh/inmesh/consul"
	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/consultest"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
)

// These helpers build meshes on Consul with mesh's public API only, as an
// application does.

func putKV(t testing.TB, c *api.Client, key, value string) {
	t.Helper()
	if _, err := c.KV().Put(&api.KVPair{Key: key, Value: []byte(value)}, nil); err != nil {
		t.Fatal(err)
	}
}

// consulMesh starts service's mesh on agent's Consul, closed when the test
// ends.
func consulMesh(t *testing.T, agent *consultest.Agent, service string, opts ...mesh.Option) *mesh.Mesh {
	t.Helper()
	return meshOn(t, agent.Client, service, opts...)
}

// meshOn starts service's mesh on the Consul that client talks to.
func meshOn(t *testing.T, client *api.Client, service string, opts ...mesh.Option) *mesh.Mesh {
	t.Helper()
	return meshWith(t, consul.Config{Client: client}, service, opts...)
}

// meshWith starts service's mesh on the control plane of cfg, closed when
// the test ends.
func meshWith(t *testing.T, cfg consul.Config, service string, opts ...mesh.Option) *mesh.Mesh {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all := append([]mesh.Option{
		mesh.WithService(service),
		mesh.WithControlPlane(consul.New(cfg)),
		mesh.WithLogger(meshtest.QuietLogger()),
	}, opts...)
	m, err := mesh.New(ctx, all...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// consulServer is billing's instance: an HTTPS server behind its mesh,
// registered in Consul with meta version.
func consulServer(t *testing.T, agent *consultest.Agent, version string) (*mesh.Mesh, *atomic.Int64) {
	t.Helper()
	m := consulMesh(t, agent, "billing")
	var hits atomic.Int64
	srv := httptest.NewUnstartedServer(m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, version)
	})))
	srv.TLS = m.ServerTLSConfig()
	// Consul's TCP check opens and closes connections: not handshake errors worth a log.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Register(ctx, mesh.Instance{Address: srv.Listener.Addr().String(), Meta: map[string]string{"version": version}}); err != nil {
		t.Fatal(err)
	}
	return m, &hits
}

// get sends GET url through m's client and returns the status and body.
func get(t testing.TB, m *mesh.Mesh, url string) (int, string, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := m.HTTPClient().Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// configView is the part of the admin handler's /config these tests read.
type configView struct {
	Source          string `json:"source"`
	UpdatesRejected int64  `json:"updates_rejected"`
	Effective       map[string]*struct {
		Effective struct {
			Timeout  string `json:"timeout"`
			Attempts int    `json:"attempts"`
		} `json:"effective"`
	} `json:"effective"`
}

// adminConfig returns what m's admin handler serves on /config.
func adminConfig(t testing.TB, m *mesh.Mesh) configView {
	t.Helper()
	rec := httptest.NewRecorder()
	m.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/config", nil))
	var v configView
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("/config: %v: %s", err, rec.Body)
	}
	return v
}

// explain returns what m would do with GET url.
func explain(t testing.TB, m *mesh.Mesh, url string) *mesh.Explanation {
	t.Helper()
	ex, err := m.Explain(httptest.NewRequest(http.MethodGet, url, nil))
	if err != nil {
		t.Fatalf("Explain %s: %v", url, err)
	}
	return ex
}

// sourceOf returns the identity source of m's identity in force, for a
// client that is no mesh.
func sourceOf(t testing.TB, m *mesh.Mesh) identity.Source {
	t.Helper()
	id, err := m.Identity()
	if err != nil {
		t.Fatal(err)
	}
	return identity.NewStaticSource(id)
}

func mustDevSource(t *testing.T, service string) identity.Source {
	t.Helper()
	ca, err := identity.NewDevCA("mesh.local")
	if err != nil {
		t.Fatal(err)
	}
	src, err := ca.NewSource(service)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// hostPort splits addr into its host and numeric port.
func hostPort(t testing.TB, addr string) (string, int) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p := 0
	for _, c := range port {
		p = p*10 + int(c-'0')
	}
	return host, p
}

const checkMethod = "/grpc.health.v1.Health/Check"

// healthBackend is a real gRPC server on 127.0.0.1 serving the health
// service; it counts the Checks that reach it and the connections it
// accepts.
type healthBackend struct {
	healthpb.UnimplementedHealthServer
	ln   *meshtest.CountingListener
	hits atomic.Int64
}

func (b *healthBackend) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	b.hits.Add(1)
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (b *healthBackend) addr() string { return b.ln.Addr().String() }

// serveHealth starts a health backend with opts (none: plaintext, no mesh),
// stopped when the test ends. extra registers more on the server.
func serveHealth(t testing.TB, opts ...grpc.ServerOption) *healthBackend {
	t.Helper()
	b := &healthBackend{ln: meshtest.ListenCounting(t)}
	srv := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(srv, b)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(b.ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return b
}

// countingServer is a plaintext HTTP server outside the mesh that counts
// the connections it accepts and the requests it serves.
type countingServer struct {
	*httptest.Server
	ln   *meshtest.CountingListener
	hits atomic.Int64
}

func newCountingServer(t testing.TB, body string) *countingServer {
	t.Helper()
	s := &countingServer{ln: meshtest.ListenCounting(t)}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		_, _ = io.WriteString(w, body)
	}))
	s.Listener.Close()
	s.Listener = s.ln
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func (s *countingServer) addr() string { return strings.TrimPrefix(s.URL, "http://") }
