package mesh

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/internal/lkg"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/policy"
)

// TestRoundTripperHostLookupAllocatesNothing checks that matching a host
// in canonical form costs no allocation, while another spelling still
// finds the service.
func TestRoundTripperHostLookupAllocatesNothing(t *testing.T) {
	m := newTestMesh(t, plainBilling("127.0.0.1:1", ""))
	st, _ := m.destination(m.state.Load(), "billing") // compiled as a first call would
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
			m, err := New(ctx, WithService("orders"), WithPolicy(doc), WithIdentity(tc.src), WithLogger(meshtest.QuietLogger()))
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
	if ce := meshtest.ErrorAs[*CallError](t, err); ce.Layer != LayerPolicy || !strings.Contains(ce.Err.Error(), "its key does not parse") {
		t.Fatalf("CallError %+v", ce)
	}
}
