package mesh

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/internal/lkg"
	"github.com/inmesh/inmesh/policy"
)

// hostSpellings are ways to write billing's host that DNS takes for the
// same name; each must reach billing through the mesh, never through DNS.
var hostSpellings = []string{"billing", "Billing", "BILLING", "billing.", "Billing.", "BILLING.:80", "billing:8080", "billing.:443"}

// TestHostSpellingsStayInTheMesh calls billing under every spelling of its
// host, over HTTP/1.1 and HTTP/2. Every call must reach billing's server
// over mTLS, with the caller's mesh identity: outside the mesh, the host
// would go to DNS in plaintext (and fail, or reach something else).
func TestHostSpellingsStayInTheMesh(t *testing.T) {
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0"} {
		t.Run(proto, func(t *testing.T) {
			var (
				mu      sync.Mutex
				callers = map[string]int{}
				protos  = map[string]int{}
			)
			srv := httptest.NewUnstartedServer(nil)
			srv.EnableHTTP2 = proto == "HTTP/2.0"
			billing := newTestMesh(t, fleetPolicy(srv.Listener.Addr().String()), WithService("billing"))
			srv.Config.Handler = billing.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				caller, err := callerOf(r)
				mu.Lock()
				callers[fmt.Sprint(caller, err)]++
				protos[r.Proto]++
				mu.Unlock()
				_, _ = io.WriteString(w, "served by billing")
			}))
			srv.TLS = billing.ServerTLSConfig()
			srv.StartTLS()
			t.Cleanup(srv.Close)

			client := newTestMesh(t, fleetPolicy(srv.Listener.Addr().String()), WithService("admin"))
			for _, host := range hostSpellings {
				code, body, err := get(t, client, "http://"+host+"/x")
				if err != nil || code != 200 || body != "served by billing" {
					t.Errorf("http://%s/x: %d %q %v", host, code, body, err)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if n := callers["admin<nil>"]; n != len(hostSpellings) {
				t.Errorf("billing saw callers %v, want admin (verified over mTLS) %d times", callers, len(hostSpellings))
			}
			if protos[proto] != len(hostSpellings) {
				t.Errorf("protocols %v, want %s only", protos, proto)
			}
		})
	}
}

// TestRoundTripperHostLookupAllocatesNothing checks that matching a host
// in canonical form costs no allocation, while another spelling still
// finds the service.
func TestRoundTripperHostLookupAllocatesNothing(t *testing.T) {
	m := newTestMesh(t, plainBilling("127.0.0.1:1", ""))
	st := m.state.Load()
	if n := testing.AllocsPerRun(100, func() {
		if st.services[core.ServiceOf("billing:80")] == nil {
			t.Fatal("billing not found")
		}
	}); n != 0 {
		t.Errorf("lookup of a canonical host: %v allocations, want 0", n)
	}
	if st.services[core.ServiceOf("BILLING.:80")] == nil {
		t.Fatal("BILLING.:80 does not find billing")
	}
}

// outsideServer is a real HTTP server on 127.0.0.1, outside the mesh, that
// counts the connections it accepts and the requests it serves.
type outsideServer struct {
	*httptest.Server
	conns, hits atomic.Int64
}

func newOutsideServer(t *testing.T) *outsideServer {
	t.Helper()
	s := &outsideServer{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.hits.Add(1)
		_, _ = io.WriteString(w, "outside")
	}))
	s.Config.ConnState = func(_ net.Conn, cs http.ConnState) {
		if cs == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// TestEgressDeny: under egress: deny, a host that is no service of the
// policy fails at layer egress and is never dialed, through the mesh's
// client and through a RoundTripper over the caller's own transport; a
// service of the policy is still called. Under the default (allow) the same
// host passes through.
func TestEgressDeny(t *testing.T) {
	out := newOutsideServer(t)
	billing := newBackend(t, "billing", nil)
	deny := newTestMesh(t, "egress: deny\n"+plainBilling(billing.addr(), ""))
	own := &http.Transport{}
	defer own.CloseIdleConnections()
	clients := map[string]*http.Client{
		"HTTPClient":        deny.HTTPClient(),
		"RoundTripper(own)": {Transport: deny.RoundTripper(own)},
	}
	for name, c := range clients {
		for _, url := range []string{out.URL + "/x", "http://localhost:" + out.URL[strings.LastIndexByte(out.URL, ':')+1:] + "/x", "http://Billing.example/x"} {
			resp, err := c.Get(url)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("%s %s: served (%d) under egress: deny", name, url, resp.StatusCode)
			}
			ce := callError(t, err)
			if ce.Layer != LayerEgress || ce.Service == "" || !strings.Contains(ce.Err.Error(), "egress is deny") {
				t.Errorf("%s %s: CallError %+v", name, url, ce)
			}
		}
		if _, body, err := doWith(t, c, "http://billing/x"); err != nil || body != "billing" {
			t.Errorf("%s: billing under egress: deny: %q %v", name, body, err)
		}
	}
	if out.conns.Load() != 0 || out.hits.Load() != 0 {
		t.Fatalf("the outside server saw %d connections and %d requests under egress: deny", out.conns.Load(), out.hits.Load())
	}

	allow := newTestMesh(t, "egress: allow\n"+plainBilling(billing.addr(), ""))
	defer http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	if _, body, err := get(t, allow, out.URL+"/x"); err != nil || body != "outside" {
		t.Fatalf("egress: allow: %q %v", body, err)
	}
	if out.hits.Load() != 1 {
		t.Fatalf("outside hits %d under egress: allow, want 1", out.hits.Load())
	}

	// Explain says it.
	req := mustRequest(t, http.MethodGet, out.URL+"/x")
	if ex, err := deny.Explain(req); err == nil || ex.Layer != LayerEgress || ex.Egress != policy.EgressDeny || ex.Passthrough {
		t.Errorf("Explain under deny: %+v %v", ex, err)
	}
	if ex, err := allow.Explain(req); err != nil || ex.Egress != policy.EgressAllow || !ex.Passthrough {
		t.Errorf("Explain under allow: %+v %v", ex, err)
	}
}

func doWith(t *testing.T, c *http.Client, url string) (int, string, error) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestNewRefusesAnotherIdentity: an identity whose SPIFFE ID names another
// service than WithService's, or belongs to another trust domain than the
// policy's, fails New at once, naming both values.
func TestNewRefusesAnotherIdentity(t *testing.T) {
	local, err := identity.NewDevCA("mesh.local")
	if err != nil {
		t.Fatal(err)
	}
	other, err := identity.NewDevCA("other.example")
	if err != nil {
		t.Fatal(err)
	}
	withTD := "trust_domain: mesh.local\nservices: {orders: {}, payments: {}}\n"
	noTD := "services: {orders: {}, payments: {}}\n"
	tests := []struct {
		name   string
		policy string
		src    identity.Source
		want   string // "" means New succeeds
	}{
		{"same service", withTD, local.Source("orders"), ""},
		{"another service", withTD, local.Source("payments"), `mesh: identity spiffe://mesh.local/svc/payments is not service "orders"`},
		{"another trust domain", withTD, other.Source("orders"), `mesh: identity spiffe://other.example/svc/orders is not of trust domain "mesh.local", the policy's`},
		{"no trust domain in the policy", noTD, other.Source("orders"), ""},
		{"another service, no trust domain", noTD, other.Source("payments"), `mesh: identity spiffe://other.example/svc/payments is not service "orders"`},
		{"Consul's form", withTD, staticIdentity(t, local, "spiffe://mesh.local/ns/default/dc/dc1/svc/orders"), ""},
		{"Consul's form, another service", withTD, staticIdentity(t, local, "spiffe://mesh.local/ns/default/dc/dc1/svc/payments"),
			`mesh: identity spiffe://mesh.local/ns/default/dc/dc1/svc/payments is not service "orders"`},
		{"no service in the ID", withTD, staticIdentity(t, local, "spiffe://mesh.local/workload/7"),
			`mesh: identity spiffe://mesh.local/workload/7 names no service; want service "orders"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := policy.Parse([]byte(tc.policy))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			m, err := New(ctx, WithService("orders"), WithPolicy(doc), WithIdentity(tc.src), WithLogger(quietLogger()))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				_ = m.Close()
				return
			}
			if err == nil {
				_ = m.Close()
				t.Fatalf("New accepted the identity; want %q", tc.want)
			}
			if err.Error() != tc.want {
				t.Fatalf("New: %v\nwant %s", err, tc.want)
			}
		})
	}
}

// staticIdentity is an identity of ca for the SPIFFE ID id, whatever its
// form.
func staticIdentity(t *testing.T, ca *identity.DevCA, id string) identity.Source {
	t.Helper()
	cert, err := ca.Issue(identity.MustParseID(id), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ident, err := identity.NewIdentity(cert, ca.Roots())
	if err != nil {
		t.Fatal(err)
	}
	return identity.NewStaticSource(ident)
}

// The services known without a valid policy are kept in the last-known-good
// cache, so that a mesh started from it fails their calls too.
func TestCacheKeepsRejectedServices(t *testing.T) {
	dir := t.TempDir()
	m := newTestMesh(t, plainBilling("127.0.0.1:1", ""), WithCacheDir(dir))
	snap, err := policy.NewSnapshot(m.state.Load().policy.Doc, "test")
	if err != nil {
		t.Fatal(err)
	}
	snap.Rejected = map[string]string{"ledger": "its key does not parse"}
	m.apply(snap)
	st, err := lkg.Load(dir, "tester")
	if err != nil {
		t.Fatal(err)
	}
	if st.Rejected["ledger"] != "its key does not parse" {
		t.Fatalf("cached Rejected %v", st.Rejected)
	}
	_, _, err = get(t, m, "http://ledger/x")
	if ce := callError(t, err); ce.Layer != LayerPolicy || !strings.Contains(ce.Err.Error(), "its key does not parse") {
		t.Fatalf("CallError %+v", ce)
	}
}
