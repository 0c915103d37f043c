package consul_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/consul"
	"github.com/inmesh/inmesh/internal/consultest"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/meshgrpc"
)

// connectCA is the agent's Connect CA as a test outside any mesh sees it:
// its roots and trust domain, and leaves issued by the agent.
type connectCA struct {
	agent *consultest.Agent
	roots *x509.CertPool
	td    string
}

func newConnectCA(t *testing.T, agent *consultest.Agent) *connectCA {
	t.Helper()
	list, _, err := agent.Client.Agent().ConnectCARoots(nil)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, r := range list.Roots {
		if !pool.AppendCertsFromPEM([]byte(r.RootCertPEM)) {
			t.Fatalf("root %s does not parse", r.ID)
		}
	}
	return &connectCA{agent: agent, roots: pool, td: list.TrustDomain}
}

// leaf returns the agent's Connect leaf of service.
func (ca *connectCA) leaf(t *testing.T, service string) tls.Certificate {
	t.Helper()
	l, _, err := ca.agent.Client.Agent().ConnectCALeaf(service, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair([]byte(l.CertPEM), []byte(l.PrivateKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// verifyPeer checks, as Envoy does, that the peer's chain leads to the
// Connect roots and that its SPIFFE ID is service's, when service is set.
func (ca *connectCA) verifyPeer(service string, usage x509.ExtKeyUsage) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("no peer certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		leaf := cs.PeerCertificates[0]
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return err
		}
		if service != "" && (len(leaf.URIs) != 1 || !strings.HasSuffix(leaf.URIs[0].Path, "/svc/"+service)) {
			return errors.New("peer is not " + service)
		}
		return nil
	}
}

// sidecarTLS is the TLS config of an Envoy sidecar's public listener
// presenting leaf: it requires a client certificate of the Connect CA.
func (ca *connectCA) sidecarTLS(leaf tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates:     []tls.Certificate{leaf},
		ClientAuth:       tls.RequireAnyClientCert,
		VerifyConnection: ca.verifyPeer("", x509.ExtKeyUsageClientAuth),
	}
}

// sidecar is an mTLS server standing for an Envoy sidecar: it answers
// itself, and records the SNI and the client identity of each request.
type sidecar struct {
	*httptest.Server
	ln   *meshtest.CountingListener
	hits atomic.Int64

	mu      sync.Mutex
	sni     []string
	callers []string
}

func newSidecar(t *testing.T, cfg *tls.Config, body string) *sidecar {
	t.Helper()
	s := &sidecar{ln: meshtest.ListenCounting(t)}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		s.sni = append(s.sni, r.TLS.ServerName)
		s.callers = append(s.callers, r.TLS.PeerCertificates[0].URIs[0].String())
		s.mu.Unlock()
		_, _ = io.WriteString(w, body)
	}))
	s.Listener.Close()
	s.Listener = s.ln
	s.TLS = cfg
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func (s *sidecar) seen() (sni, callers []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.sni...), append([]string(nil), s.callers...)
}

// TestConsulCallsGoThroughTheSidecar: a service behind an Envoy sidecar is
// called at the sidecar's port, with mTLS, the SNI Consul gives Envoy and
// web's Connect leaf; its own port gets nothing. A sidecar that presents
// another service's leaf is refused at layer tls, over HTTP and gRPC.
func TestConsulCallsGoThroughTheSidecar(t *testing.T) {
	agent := consultest.Start(t)
	ca := newConnectCA(t, agent)
	payLeaf := ca.leaf(t, "pay")

	// pay: its own port A (plaintext, as behind a sidecar), its sidecar B.
	direct := newCountingServer(t, "pay direct")
	proxy := newSidecar(t, ca.sidecarTLS(payLeaf), "pay via its sidecar")
	consultest.RegisterSidecar(t, agent.Client, consultest.Instance{Service: "pay", ID: "pay-1", Addr: direct.addr(),
		Meta: map[string]string{"version": "v1"}}, proxy.ln.Addr().String())
	// ledger: its sidecar presents pay's leaf.
	ledgerDirect := newCountingServer(t, "ledger direct")
	impostor := newSidecar(t, ca.sidecarTLS(payLeaf), "ledger via a sidecar that is pay")
	consultest.RegisterSidecar(t, agent.Client, consultest.Instance{Service: "ledger", ID: "ledger-1", Addr: ledgerDirect.addr()},
		impostor.ln.Addr().String())
	// rpc: a gRPC service whose sidecar is a gRPC server on rpc's leaf;
	// rpc-impostor's sidecar presents pay's.
	rpcDirect := serveHealth(t)
	rpcTLS := ca.sidecarTLS(ca.leaf(t, "rpc"))
	var rpcSNI sync.Map // the server names rpc's sidecar saw
	verify := rpcTLS.VerifyConnection
	rpcTLS.VerifyConnection = func(cs tls.ConnectionState) error {
		rpcSNI.Store(cs.ServerName, true)
		return verify(cs)
	}
	rpcProxy := serveHealth(t, grpc.Creds(credentials.NewTLS(rpcTLS)))
	consultest.RegisterSidecar(t, agent.Client, consultest.Instance{Service: "rpc", ID: "rpc-1", Addr: rpcDirect.addr()}, rpcProxy.addr())
	rpcImpostor := serveHealth(t, grpc.Creds(credentials.NewTLS(ca.sidecarTLS(payLeaf))))
	consultest.RegisterSidecar(t, agent.Client, consultest.Instance{Service: "rpc-impostor", ID: "rpc-impostor-1", Addr: rpcDirect.addr()}, rpcImpostor.addr())
	for _, svc := range []string{"pay", "ledger", "rpc", "rpc-impostor", "web"} {
		putKV(t, agent.Client, "inmesh/services/"+svc, "{}")
	}
	web := consulMesh(t, agent, "web")
	webID, err := web.Identity()
	if err != nil {
		t.Fatal(err)
	}

	t.Run("http", func(t *testing.T) {
		const calls = 5
		for range calls {
			if _, body, err := get(t, web, "http://pay/x"); err != nil || body != "pay via its sidecar" {
				t.Fatalf("pay: %q %v", body, err)
			}
		}
		if proxy.hits.Load() != calls || direct.hits.Load() != 0 || direct.ln.Accepted.Load() != 0 {
			t.Fatalf("sidecar served %d, pay's own port %d requests and %d connections; want %d, 0, 0",
				proxy.hits.Load(), direct.hits.Load(), direct.ln.Accepted.Load(), calls)
		}
		sni, callers := proxy.seen()
		wantSNI := consul.ServiceSNI("pay", "", "dc1", ca.td)
		for i := range sni {
			if sni[i] != wantSNI || callers[i] != webID.ID.String() {
				t.Fatalf("request %d: SNI %q from %s, want %q from %s", i, sni[i], callers[i], wantSNI, webID.ID)
			}
		}

		_, _, err := get(t, web, "http://ledger/x")
		if ce := meshtest.ErrorAs[*mesh.CallError](t, err); ce.Layer != mesh.LayerTLS || ce.Service != "ledger" {
			t.Fatalf("ledger behind a sidecar that is pay: %+v", ce)
		}
		if impostor.hits.Load() != 0 || ledgerDirect.ln.Accepted.Load() != 0 {
			t.Fatalf("the impostor served %d requests, ledger's own port took %d connections", impostor.hits.Load(), ledgerDirect.ln.Accepted.Load())
		}
	})

	t.Run("grpc", func(t *testing.T) {
		check := func(service string) error {
			conn, err := grpc.NewClient("mesh:///"+service, meshgrpc.DialOptions(web)...)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		}
		for range 3 {
			if err := check("rpc"); err != nil {
				t.Fatalf("rpc: %v", err)
			}
		}
		if rpcProxy.hits.Load() != 3 || rpcDirect.hits.Load() != 0 || rpcDirect.ln.Accepted.Load() != 0 {
			t.Fatalf("sidecar served %d, rpc's own port %d calls and %d connections; want 3, 0, 0",
				rpcProxy.hits.Load(), rpcDirect.hits.Load(), rpcDirect.ln.Accepted.Load())
		}
		var names []string
		rpcSNI.Range(func(k, _ any) bool { names = append(names, k.(string)); return true })
		if want := consul.ServiceSNI("rpc", "", "dc1", ca.td); len(names) != 1 || names[0] != want {
			t.Fatalf("rpc's sidecar saw SNI %q, want %q", names, want)
		}
		err := check("rpc-impostor")
		if ce := meshgrpc.FromStatus(err); ce == nil || ce.Layer != mesh.LayerTLS || grpcstatus.Code(err) != codes.Unavailable {
			t.Fatalf("rpc-impostor behind a sidecar that is pay: %v (%+v)", err, ce)
		}
		if rpcImpostor.hits.Load() != 0 {
			t.Fatalf("the impostor served %d calls", rpcImpostor.hits.Load())
		}
	})
}

// envoyClient is a TLS client outside any mesh, as an Envoy sidecar's
// upstream: it holds a Connect leaf of its own service, sends the SNI
// Consul gives Envoy for the upstream, and verifies that the server is the
// upstream service.
func envoyClientTLS(t *testing.T, ca *connectCA, self, upstream string) *tls.Config {
	t.Helper()
	return &tls.Config{
		Certificates:       []tls.Certificate{ca.leaf(t, self)},
		ServerName:         consul.ServiceSNI(upstream, "", "dc1", ca.td),
		InsecureSkipVerify: true, // verified in VerifyConnection, by SPIFFE ID, as Envoy does
		VerifyConnection:   ca.verifyPeer(upstream, x509.ExtKeyUsageServerAuth),
	}
}

// setIntention sets billing's service-intentions: web is allowed or denied.
func setIntention(t *testing.T, agent *consultest.Agent, action api.IntentionAction) {
	t.Helper()
	if _, _, err := agent.Client.ConfigEntries().Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "billing",
		Sources: []*api.SourceIntention{{Name: "web", Action: action}}}, nil); err != nil {
		t.Fatal(err)
	}
}

// connectAddr returns the one address /v1/health/connect/<service> lists,
// where an Envoy sidecar would dial.
func connectAddr(t *testing.T, agent *consultest.Agent, service string) string {
	t.Helper()
	var addr string
	meshtest.Eventually(t, 10*time.Second, service+" on the connect health endpoint", func() bool {
		entries, _, err := agent.Client.Health().Connect(service, "", true, nil)
		if err != nil || len(entries) != 1 {
			return false
		}
		addr = net.JoinHostPort(entries[0].Service.Address, strconv.Itoa(entries[0].Service.Port))
		return true
	})
	return addr
}

// TestConsulEnvoyClientUnderIntentions: a TLS client that is no mesh,
// holding web's Connect leaf and sending Envoy's SNI for billing, calls
// billing's inmesh server at the address the connect health endpoint gives
// (Register's), over HTTP and gRPC; billing's service-intentions allow or
// deny it, and a change applies within 2 s.
func TestConsulEnvoyClientUnderIntentions(t *testing.T) {
	agent := consultest.Start(t)
	ca := newConnectCA(t, agent)
	putKV(t, agent.Client, "inmesh/services/billing", "{}")
	setIntention(t, agent, api.IntentionActionAllow)
	billing := consulMesh(t, agent, "billing")
	clientTLS := envoyClientTLS(t, ca, "web", "billing")

	// HTTP: billing's Handler behind its ServerTLSConfig.
	var served atomic.Int64
	var sniMu sync.Mutex
	var snis []string
	srv := httptest.NewUnstartedServer(billing.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		sniMu.Lock()
		snis = append(snis, r.TLS.ServerName)
		sniMu.Unlock()
		_, _ = io.WriteString(w, "billing")
	})))
	srv.TLS = billing.ServerTLSConfig()
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	// gRPC: billing's ServerOptions.
	rpc := serveHealth(t, meshgrpc.ServerOptions(billing)...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := billing.Register(ctx, mesh.Instance{ID: "billing-http", Address: srv.Listener.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	httpAddr := connectAddr(t, agent, "billing")
	if err := billing.Register(ctx, mesh.Instance{ID: "billing-grpc", Address: rpc.addr()}); err != nil {
		t.Fatal(err)
	}

	tr := &http.Transport{TLSClientConfig: clientTLS, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	callHTTP := func() (int, string) {
		resp, err := hc.Get("https://" + httpAddr + "/invoices")
		if err != nil {
			t.Fatalf("HTTP: %v", err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header.Get(mesh.HeaderError)
	}
	conn, err := grpc.NewClient("passthrough:///"+rpc.addr(), grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	callGRPC := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	allowed := func() bool {
		code, _ := callHTTP()
		return code == http.StatusOK && callGRPC() == nil
	}
	denied := func() bool {
		code, layer := callHTTP()
		err := callGRPC()
		return code == http.StatusForbidden && layer == string(mesh.LayerAuthz) &&
			grpcstatus.Code(err) == codes.PermissionDenied && meshgrpc.FromStatus(err) != nil && meshgrpc.FromStatus(err).Layer == mesh.LayerAuthz
	}

	meshtest.Eventually(t, 10*time.Second, "web allowed at first", allowed)
	sniMu.Lock()
	if want := consul.ServiceSNI("billing", "", "dc1", ca.td); len(snis) == 0 || snis[0] != want {
		t.Errorf("billing saw SNI %v, want %q", snis, want)
	}
	sniMu.Unlock()
	for i, step := range []struct {
		action api.IntentionAction
		cond   func() bool
	}{
		{api.IntentionActionDeny, denied},
		{api.IntentionActionAllow, allowed},
		{api.IntentionActionDeny, denied},
	} {
		setIntention(t, agent, step.action)
		meshtest.Eventually(t, 2*time.Second, "step "+strconv.Itoa(i)+": web "+string(step.action), step.cond)
	}
	if served.Load() == 0 || rpc.hits.Load() == 0 {
		t.Fatalf("served %d HTTP and %d gRPC calls", served.Load(), rpc.hits.Load())
	}
}

// TestConsulDiscoversOnlyConnectInstances: an instance registered by
// another mesh's Register (Connect-native) is discovered and called; a
// plain instance, neither Connect-native nor behind a sidecar, is not: the
// call fails at layer discovery and the instance sees nothing.
func TestConsulDiscoversOnlyConnectInstances(t *testing.T) {
	agent := consultest.Start(t)
	putKV(t, agent.Client, "inmesh/services/billing", "{}")
	putKV(t, agent.Client, "inmesh/services/ledger", `{"tls": "disable"}`)
	_, billingHits := consulServer(t, agent, "v1")
	plain := newCountingServer(t, "ledger")
	consultest.RegisterPlain(t, agent.Client, consultest.Instance{Service: "ledger", ID: "ledger-1", Addr: plain.addr()})
	var logs meshtest.LockedBuffer
	web := consulMesh(t, agent, "web", mesh.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	defer http.DefaultTransport.(*http.Transport).CloseIdleConnections()

	if _, body, err := get(t, web, "http://billing/x"); err != nil || body != "v1" || billingHits.Load() != 1 {
		t.Fatalf("billing (Connect-native, by Register): %q %v, %d hits", body, err, billingHits.Load())
	}
	_, _, err := get(t, web, "http://ledger/x")
	if ce := meshtest.ErrorAs[*mesh.CallError](t, err); ce.Layer != mesh.LayerDiscovery || ce.Service != "ledger" {
		t.Fatalf("ledger (plain): %+v", ce)
	}
	if plain.hits.Load() != 0 || plain.ln.Accepted.Load() != 0 {
		t.Fatalf("the plain instance saw %d requests, %d connections", plain.hits.Load(), plain.ln.Accepted.Load())
	}
	meshtest.Eventually(t, 10*time.Second, "the log explains why ledger has no endpoints", func() bool {
		return strings.Contains(logs.String(), "no Connect-capable instance") && strings.Contains(logs.String(), "service=ledger plain_instances=1")
	})
	if n := strings.Count(logs.String(), "no Connect-capable instance"); n != 1 {
		t.Fatalf("explained %d times:\n%s", n, logs.String())
	}
	// The calls say it too, once the control plane knows.
	meshtest.Eventually(t, 10*time.Second, "the call's error explains why ledger has no endpoints", func() bool {
		_, _, err := get(t, web, "http://ledger/x")
		return err != nil && strings.Contains(err.Error(), "has no endpoints: Consul has 1 passing instance of it, none Connect-capable")
	})
	if plain.hits.Load() != 0 {
		t.Fatalf("the plain instance saw %d requests", plain.hits.Load())
	}
}
