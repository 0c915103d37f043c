package mesh

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/inmesh/inmesh/internal/meshtest"
)

// protectedPolicy has every protection block: enrollment (this mesh) puts
// a rate limit on its callers and audits its authorization; billing has a
// concurrency limit, a rate breaker, a hedge and a fault on one route.
const protectedPolicy = `
version: prot-1
services:
  enrollment:
    endpoints: [{address: 127.0.0.1:9004}]
    tls: disable
    rate_limit: {requests_per_second: 100, burst: 200, per_caller: true, overrides: {progress: 500}}
    authorization:
      default: allow
      mode: audit
      deny: [{from: ["*"], paths: [/admin]}]
  billing:
    endpoints: [{address: 127.0.0.1:9001}, {address: 127.0.0.1:9002}]
    tls: disable
    concurrency: {adaptive: {min: 2, initial: 20, max: 500}, max_wait: 25ms}
    circuit_breaker: {failure_rate: 0.5, window: 10s, min_calls: 20, open_for: 5s}
    rate_limit: {requests_per_second: 50}
    hedge: {delay: 20ms}
    routes:
      - name: charge
        match: {path_prefix: /charge}
        fault: {abort: {percent: 5}, only_with_header: x-inmesh-fault}
      - name: rest
  catalog:
    endpoints: [{address: 127.0.0.1:9003}]
    tls: disable
`

// TestExplainShowsProtections: Explain shows each protection in force for
// the request, and nothing for a destination without any.
func TestExplainShowsProtections(t *testing.T) {
	m := newTestMesh(t, protectedPolicy)
	ex, err := m.Explain(meshtest.MustRequest(t, http.MethodGet, "http://billing/charge/1"))
	if err != nil {
		t.Fatal(err)
	}
	if c := ex.Concurrency; c == nil || c.Adaptive == nil || c.Adaptive.Max != 500 || c.MaxWait.Std() != 25*time.Millisecond || c.Limit != 20 {
		t.Errorf("concurrency = %+v", c)
	}
	if ex.Hedge == nil || ex.Hedge.Delay.Std() != 20*time.Millisecond || ex.Hedge.Max != 1 {
		t.Errorf("hedge = %+v", ex.Hedge)
	}
	if f := ex.Fault; f == nil || f.Abort == nil || f.Abort.Percent != 5 || f.Abort.HTTPStatus != 503 || f.OnlyWithHeader != "x-inmesh-fault" {
		t.Errorf("fault = %+v", f)
	}
	if r := ex.RateLimit; r == nil || r.RequestsPerSecond != 50 || r.Burst != 50 {
		t.Errorf("rate_limit = %+v", r)
	}
	b, err := json.Marshal(ex)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	if c, _ := raw["concurrency"].(map[string]any); c["max_wait"] != "25ms" {
		t.Errorf("concurrency as JSON = %v, want max_wait \"25ms\"", raw["concurrency"])
	}

	rest, err := m.Explain(meshtest.MustRequest(t, http.MethodGet, "http://billing/other"))
	if err != nil {
		t.Fatal(err)
	}
	if rest.Fault != nil || rest.Hedge == nil {
		t.Errorf("route rest: fault %+v, hedge %+v; want no fault and the service's hedge", rest.Fault, rest.Hedge)
	}
	for _, tc := range []struct{ url, want string }{
		{"http://enrollment/admin/x", "denied by deny[0] (deny 0) (mode audit: logged, let through)"},
		{"http://enrollment/courses", "allowed by default"},
		{"http://billing/charge", "no authorization block: every caller of the trust domain"},
	} {
		ex, _ := m.Explain(meshtest.MustRequest(t, http.MethodGet, tc.url))
		if ex == nil || ex.Authorization != tc.want {
			t.Errorf("%s: authorization %q, want %q", tc.url, ex.Authorization, tc.want)
		}
	}
	plain, err := m.Explain(meshtest.MustRequest(t, http.MethodGet, "http://catalog/x"))
	if err != nil {
		t.Fatal(err)
	}
	if plain.Concurrency != nil || plain.Hedge != nil || plain.Fault != nil || plain.RateLimit != nil {
		t.Errorf("catalog has no protection, Explain says %+v %+v %+v %+v", plain.Concurrency, plain.Hedge, plain.Fault, plain.RateLimit)
	}
}

// TestAdminProtections: /protections shows this service's inbound limits
// and mode and every destination's protections; an active fault is also
// on the index page.
func TestAdminProtections(t *testing.T) {
	m := newTestMesh(t, protectedPolicy, WithService("enrollment"))
	get := func(path string, v any) {
		t.Helper()
		rec := httptest.NewRecorder()
		m.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	var p Protections
	get("/protections", &p)
	if p.Service != "enrollment" || p.RateLimit == nil || p.RateLimit.Overrides["progress"] != 500 || p.AuthorizationMode != "audit" || len(p.Deny) != 1 {
		t.Errorf("inbound = %+v", p)
	}
	if len(p.Destinations) != 1 || p.Destinations[0].Service != "billing" {
		t.Fatalf("destinations = %+v, want billing alone", p.Destinations)
	}
	d := p.Destinations[0]
	if d.Concurrency == nil || d.Breaker == nil || d.Breaker.FailureRate != 0.5 || d.BreakerNow != "closed" || len(d.Routes) != 2 {
		t.Errorf("billing = %+v", d)
	}
	if len(p.Faults) != 1 || p.Faults[0].Route != "charge" {
		t.Errorf("faults = %+v", p.Faults)
	}
	var breakers []BreakerState
	get("/breakers", &breakers)
	if len(breakers) != 1 || breakers[0].Form != "failure_rate" || breakers[0].Config.MinCalls != 20 || breakers[0].State != "closed" {
		t.Errorf("breakers = %+v", breakers)
	}
	var index struct {
		Faults []FaultState `json:"faults_active"`
		Audit  string       `json:"authorization_audit"`
	}
	get("/", &index)
	if len(index.Faults) != 1 || index.Faults[0].Service != "billing" || index.Audit == "" {
		t.Errorf("index faults_active = %+v, authorization_audit %q", index.Faults, index.Audit)
	}
}
