package mesh

import (
	"errors"
	"maps"
	"net/http"
	"testing"

	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/policy"
)

// TestReusedDestinationNamesNewVersion: a policy update that changes
// another service's block keeps billing's compiled destination, breaker
// state included, and billing's call errors name the version now in
// force, not the one billing was compiled at.
func TestReusedDestinationNamesNewVersion(t *testing.T) {
	b := meshtest.NewBackend(t, "down", meshtest.Status(503))
	doc := func(ledgerTimeout string) string {
		return plainBilling(b.Addr(), `
    circuit_breaker: {consecutive_failures: 1, open_for: 1h}
    routes: [{name: charge, match: {path_prefix: /charge}}]
  ledger:
    endpoints: [{address: 127.0.0.1:1}]
    timeout: `+ledgerTimeout+`
`)
	}
	m := newTestMesh(t, "version: v1\n"+doc("1s"))
	m.destination(m.state.Load(), "ledger") // compiled as a first call would: active
	if code, _, err := get(t, m, "http://billing/charge"); err != nil || code != 503 {
		t.Fatalf("first call: %d %v, want the 503", code, err)
	}
	st1 := m.state.Load()

	// The update a write of ledger's block makes: billing's resolved
	// service is the same.
	d, err := policy.Parse([]byte("version: v2\n" + doc("2s")))
	if err != nil {
		t.Fatal(err)
	}
	changed, err := policy.NewSnapshot(d, "test")
	if err != nil {
		t.Fatal(err)
	}
	v2 := *st1.policy
	v2.Version = "v2"
	v2.Services = maps.Clone(st1.policy.Services)
	v2.Services["ledger"] = changed.Services["ledger"]
	m.apply(&v2)
	st2 := m.state.Load()
	if st2.policy.Version != "v2" || st2.services["billing"] != st1.services["billing"] || st2.services["ledger"] == st1.services["ledger"] {
		t.Fatal("billing compiled again, or ledger not")
	}

	for _, tc := range []struct {
		path  string
		layer Layer
	}{
		{"/charge", LayerBreaker}, // the breaker the 503 opened is still open
		{"/other", LayerRoute},
	} {
		_, _, err := get(t, m, "http://billing"+tc.path)
		var ce *CallError
		if !errors.As(err, &ce) || ce.Layer != tc.layer || ce.PolicyVersion != "v2" || ce.Service != "billing" {
			t.Fatalf("%s: %v (%+v), want layer %s under policy v2", tc.path, err, ce, tc.layer)
		}
	}
	if got := b.Hits.Load(); got != 1 {
		t.Fatalf("%d calls reached billing, want 1 (its breaker open)", got)
	}
	ex, _ := m.Explain(mustRequest(t, "http://billing/charge"))
	if ex.PolicyVersion != "v2" {
		t.Fatalf("explained under %q", ex.PolicyVersion)
	}
}

func mustRequest(t *testing.T, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}
