package mesh

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestPolicyVersionHeaderOnDenials: under WithPolicyVersionHeader the
// Handler names the policy version on its own answers too (a denial), and
// without it on none.
func TestPolicyVersionHeaderOnDenials(t *testing.T) {
	const doc = "version: pv-3\nservices:\n  billing:\n    endpoints: [{address: 127.0.0.1:1}]\n    authorization: {default: deny}\n"
	for _, on := range []bool{false, true} {
		opts := []Option{WithService("billing")}
		if on {
			opts = append(opts, WithPolicyVersionHeader())
		}
		m := newTestMesh(t, doc, opts...)
		h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/x", nil)) // no certificate: denied
		if rec.Code != http.StatusForbidden {
			t.Fatalf("status %d, want the denial", rec.Code)
		}
		want := map[bool]string{true: "pv-3"}[on]
		if got := rec.Header().Get(HeaderPolicyVersion); got != want {
			t.Errorf("WithPolicyVersionHeader %v: %s %q, want %q", on, HeaderPolicyVersion, got, want)
		}
	}
}

// TestBreakerStatesFollowThePolicy: the breakers observed for
// inmesh.circuit_breaker.state are /breakers' own: the service's, shared
// by its routes, and a route's that overrides it, of the destinations
// compiled: a service no call needed yet has none observed (its breakers,
// closed, could not have changed).
func TestBreakerStatesFollowThePolicy(t *testing.T) {
	m := newTestMesh(t, plainBilling("127.0.0.1:1", `    circuit_breaker: {consecutive_failures: 5}
    routes:
      - {name: main}
      - name: charge
        match: {path_prefix: /charge}
        circuit_breaker: {consecutive_failures: 2}
`))
	got := map[string]string{}
	m.breakerStates(func(service, route, state string) { got[service+"/"+route] = state })
	if len(got) != 0 {
		t.Errorf("breakers %v before any call, want none", got)
	}
	m.destination(m.state.Load(), "billing") // compiled as a first call would
	m.breakerStates(func(service, route, state string) { got[service+"/"+route] = state })
	if len(got) != 2 || got["billing/"] != "closed" || got["billing/charge"] != "closed" {
		t.Errorf("breakers %v, want billing's and its route charge's, closed", got)
	}
}
