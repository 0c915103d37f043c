package mesh

import (
	"fmt"
	"net/http"
	"testing"
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
	web := newTestMesh(t, chargePolicy(billing.addr()), WithService("web"))
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
		before := billing.hits.Load()
		code, _, err := do(t, web, http.MethodGet, "http://billing"+tc.path, "")
		if tc.served {
			if err != nil || code != http.StatusOK {
				t.Errorf("GET %s: %d %v, want it served", tc.path, code, err)
			}
			continue
		}
		if ce := callError(t, err); ce.Layer != LayerAuthz || billing.hits.Load() != before {
			t.Errorf("GET %s: %+v, want an authz denial", tc.path, ce)
		}
	}
}

// TestAuthorizationPathRespellings sends respelled paths to a server behind
// billing's mesh under the file policy, over HTTP/1.1 and HTTP/2.
func TestAuthorizationPathRespellings(t *testing.T) {
	billing := newMeshServer(t, "billing", chargePolicy)
	web := newTestMesh(t, chargePolicy(billing.addr()), WithService("web"))
	srv := newRawTestServer(t, billing.mesh)
	runAttacks(t, srv, web, []pathAttack{
		{"rule path", "/charge", nil, true},
		{"below", "/charge/42", nil, true},
		{"trailing slash", "/charge/", nil, true},
		{"escaped letter", "/ch%61rge/42", nil, true},
		{"longer segment", "/chargeback", nil, false},
		{"escaped slash", "/charge%2F42", nil, false},
		{"dot-dot", "/charge/../admin", nil, false},
		{"escaped dot-dot", "/charge/%2e%2e/admin", nil, false},
		{"dot-dot escaped slash", "/charge/..%2fadmin", nil, false},
		{"double slash", "//charge", nil, false},
		{"inner double slash", "/charge//x", nil, false},
		{"dot segment", "/./charge", nil, false},
		{"backslashes", `/charge\..\admin`, nil, false},
		{"escaped backslashes", "/charge%5C..%5Cadmin", nil, false},
	})
}
