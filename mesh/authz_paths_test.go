package mesh

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/inmesh/inmesh/internal/meshtest"
)

// chargePolicy lets web GET /charge and what lies below it, and below /api/.
func chargePolicy(addr string) string {
	return fmt.Sprintf(`
trust_domain: mesh.local
services:
  billing:
    endpoints: [{address: %s}]
    authorization:
      default: deny
      rules:
        - {from: [web], paths: [/charge, /api/], methods: [GET]}
  web: {}
`, addr)
}

// TestAuthorizationPathsAtSegmentBoundary calls billing through web's mesh:
// a rule path covers itself and what lies below it, never a longer segment.
func TestAuthorizationPathsAtSegmentBoundary(t *testing.T) {
	billing := newMeshServer(t, "billing", chargePolicy)
	web := newTestMesh(t, chargePolicy(billing.Addr()), WithService("web"))
	for _, tc := range []struct {
		path   string
		served bool
	}{
		{"/charge", true},
		{"/charge/42", true},
		{"/api/x", true},
		{"/chargeback", false},
		{"/charge-admin/x", false},
		{"/api", false},
		{"/apix", false},
	} {
		before := billing.Hits.Load()
		code, _, err := do(t, web, http.MethodGet, "http://billing"+tc.path, "")
		if tc.served {
			if err != nil || code != http.StatusOK {
				t.Errorf("GET %s: %d %v, want it served", tc.path, code, err)
			}
			continue
		}
		if ce := meshtest.ErrorAs[*CallError](t, err); ce.Layer != LayerAuthz || billing.Hits.Load() != before {
			t.Errorf("GET %s: %+v, want an authz denial", tc.path, ce)
		}
	}
}

// TestAuthorizationPathRespellings sends respelled paths to a server behind
// billing's mesh under the file policy, over HTTP/1.1 and HTTP/2.
func TestAuthorizationPathRespellings(t *testing.T) {
	billing := newMeshServer(t, "billing", chargePolicy)
	web := newTestMesh(t, chargePolicy(billing.Addr()), WithService("web"))
	srv := meshtest.NewRawServer(t, billing.mesh.Handler, billing.mesh.ServerTLSConfig())
	meshtest.RunAttacks(t, srv, web.identity, []meshtest.PathAttack{
		{Name: "rule path", Path: "/charge", Served: true},
		{Name: "below", Path: "/charge/42", Served: true},
		{Name: "trailing slash", Path: "/charge/", Served: true},
		{Name: "escaped letter", Path: "/ch%61rge/42", Served: true},
		{Name: "longer segment", Path: "/chargeback", Served: false},
		{Name: "escaped slash", Path: "/charge%2F42", Served: false},
		{Name: "dot-dot", Path: "/charge/../admin", Served: false},
		{Name: "escaped dot-dot", Path: "/charge/%2e%2e/admin", Served: false},
		{Name: "dot-dot escaped slash", Path: "/charge/..%2fadmin", Served: false},
		{Name: "double slash", Path: "//charge", Served: false},
		{Name: "inner double slash", Path: "/charge//x", Served: false},
		{Name: "dot segment", Path: "/./charge", Served: false},
		{Name: "backslashes", Path: `/charge\..\admin`, Served: false},
		{Name: "escaped backslashes", Path: "/charge%5C..%5Cadmin", Served: false},
	})
}

// adminDenyPolicy lets web call billing anything but what lies at or below
// /admin, which it denies to every caller.
func adminDenyPolicy(addr string) string {
	return fmt.Sprintf(`
trust_domain: mesh.local
services:
  billing:
    endpoints: [{address: %s}]
    authorization:
      default: deny
      rules:
        - {from: [web]}
      deny:
        - {from: ["*"], paths: [/admin]}
  web: {}
`, addr)
}

// TestAuthorizationDenyRespellings sends respellings of /admin to a server
// behind billing's mesh, over HTTP/1.1 and HTTP/2, from web, whom the rules
// allow every path: no spelling that an application could take for /admin
// gets through the deny rule. Paths are case-sensitive, as URL paths are
// (and Go's ServeMux): "/ADMIN" is another path, which the deny rule does
// not cover.
func TestAuthorizationDenyRespellings(t *testing.T) {
	billing := newMeshServer(t, "billing", adminDenyPolicy)
	web := newTestMesh(t, adminDenyPolicy(billing.Addr()), WithService("web"))
	srv := meshtest.NewRawServer(t, billing.mesh.Handler, billing.mesh.ServerTLSConfig())
	meshtest.RunAttacks(t, srv, web.identity, []meshtest.PathAttack{
		{Name: "another path", Path: "/x", Served: true},
		{Name: "longer segment", Path: "/administrator", Served: true},
		{Name: "unclean path elsewhere, but the deny has paths", Path: "/x/./y", Served: false},
		{Name: "another case", Path: "/ADMIN", Served: true},
		{Name: "the denied path", Path: "/admin", Served: false},
		{Name: "below", Path: "/admin/users", Served: false},
		{Name: "trailing slash", Path: "/admin/", Served: false},
		{Name: "escaped letter", Path: "/%61dmin", Served: false},
		{Name: "escaped letters below", Path: "/%61%64min/users", Served: false},
		{Name: "double slash", Path: "//admin", Served: false},
		{Name: "dot-dot", Path: "/x/../admin", Served: false},
		{Name: "escaped dot-dot", Path: "/x/%2e%2e/admin", Served: false},
		{Name: "dot-dot escaped slash", Path: "/x/..%2Fadmin", Served: false},
		{Name: "escaped slash", Path: "/x%2F..%2Fadmin", Served: false},
		{Name: "dot segment", Path: "/./admin", Served: false},
		{Name: "backslashes", Path: `/x\..\admin`, Served: false},
		{Name: "escaped backslash", Path: "/x%5C..%5Cadmin", Served: false},
	})
}
