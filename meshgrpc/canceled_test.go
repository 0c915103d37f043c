package meshgrpc

import (
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
)

// Helpers of the tests of canceled calls (modes_test.go): a call its caller
// canceled proves nothing.

// breakerState returns the state Explain reports for billing's breaker.
func breakerState(t *testing.T, m *mesh.Mesh) string {
	t.Helper()
	ex, err := m.Explain(meshtest.MustRequest(t, http.MethodGet, "http://billing/x"))
	if err != nil {
		t.Fatal(err)
	}
	return ex.Breaker
}

// ejectionPolicy sends every call of billing to the endpoint bad, one of
// two, with outlier detection after 5 failures in a row.
func ejectionPolicy(good, bad, tls string) string {
	return fmt.Sprintf(`
trust_domain: mesh.local
defaults: {tls: %s}
services:
  billing:
    endpoints:
      - {address: %s, labels: {role: good}}
      - {address: %s, labels: {role: bad}}
    subsets: {bad: {role: bad}}
    routes: [{name: all, split: [{subset: bad, weight: 1}]}]
    outlier_detection: {consecutive_failures: 5, base_ejection: 1m, max_ejection_percent: 50}
  enrollment: {}
`, tls, good, bad)
}

// ejected reports whether Explain marks addr ejected.
func ejected(t *testing.T, m *mesh.Mesh, addr string) bool {
	t.Helper()
	ex, err := m.Explain(meshtest.MustRequest(t, http.MethodGet, "http://billing/x"))
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(ex.Endpoints, addr+" (ejected)")
}
