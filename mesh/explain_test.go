package mesh

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/internal/meshlink"
	"github.com/inmesh/inmesh/internal/meshtest"
)

func TestExplain(t *testing.T) {
	m := newTestMesh(t, `
version: ex-1
services:
  billing:
    endpoints:
      - {address: 127.0.0.1:9001, labels: {version: v1}}
      - {address: 127.0.0.1:9002, labels: {version: v2}}
    subsets: {v1: {version: v1}, v2: {version: v2}}
    timeout: 2s
    retry: {attempts: 3, per_try_timeout: 500ms}
    circuit_breaker: {consecutive_failures: 5}
    tls: disable
    routes:
      - name: canary-by-header
        match: {headers: {x-canary: "true"}}
        split: [{subset: v2, weight: 100}]
      - name: charge
        match: {path_prefix: /charge, methods: [POST]}
        timeout: 1s
        split: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]
`)
	tests := []struct {
		name      string
		req       *http.Request
		want      Explanation
		wantLayer Layer
	}{
		{
			name: "header route",
			req:  meshtest.MustRequest(t, http.MethodGet, "http://billing/anything", "X-Canary", "true"),
			want: Explanation{Service: "billing", Route: "canary-by-header", Timeout: 2 * time.Second, Attempts: 3,
				Split: []WeightedSubset{{Subset: "v2", Weight: 100}}, Endpoints: []string{"127.0.0.1:9002"}},
		},
		{
			name: "POST is not retried",
			req:  meshtest.MustRequest(t, http.MethodPost, "http://billing/charge"),
			want: Explanation{Service: "billing", Route: "charge", Timeout: time.Second, Attempts: 1,
				Split:     []WeightedSubset{{Subset: "v1", Weight: 90}, {Subset: "v2", Weight: 10}},
				Endpoints: []string{"127.0.0.1:9001", "127.0.0.1:9002"}},
		},
		{
			name:      "no route",
			req:       meshtest.MustRequest(t, http.MethodGet, "http://billing/refund"),
			want:      Explanation{Service: "billing"},
			wantLayer: LayerRoute,
		},
		{
			name: "passthrough",
			req:  meshtest.MustRequest(t, http.MethodGet, "http://example.invalid/"),
			want: Explanation{Service: "example.invalid", Passthrough: true},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ex, err := m.Explain(tc.req)
			if tc.wantLayer != "" {
				if ce := meshtest.ErrorAs[*CallError](t, err); ce.Layer != tc.wantLayer || ex.Layer != tc.wantLayer {
					t.Fatalf("layer %v / %v, want %v", ce.Layer, ex.Layer, tc.wantLayer)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if ex.PolicyVersion != "ex-1" {
				t.Fatalf("policy version %q", ex.PolicyVersion)
			}
			got := fmt.Sprint(ex.Service, ex.Passthrough, ex.Route, ex.Timeout, ex.Attempts, ex.Split, ex.Endpoints)
			want := fmt.Sprint(tc.want.Service, tc.want.Passthrough, tc.want.Route, tc.want.Timeout, tc.want.Attempts, tc.want.Split, tc.want.Endpoints)
			if got != want {
				t.Fatalf("\n got %s\nwant %s", got, want)
			}
			if tc.wantLayer == "" && !tc.want.Passthrough && (ex.Breaker != "closed" || ex.TLS != "disable" || ex.PerTryTimeout != 500*time.Millisecond) {
				t.Fatalf("breaker %q tls %q per-try %v", ex.Breaker, ex.TLS, ex.PerTryTimeout)
			}
		})
	}
}

func TestAdminHandler(t *testing.T) {
	m := newTestMesh(t, `
services:
  billing:
    endpoints: [{address: 127.0.0.1:9001, labels: {version: v1}}]
    subsets: {v1: {version: v1}}
    circuit_breaker: {consecutive_failures: 5}
    routes: [{name: all, split: [{subset: v1, weight: 1}]}]
`)
	h := m.AdminHandler()
	tests := []struct {
		path     string
		wantCode int
		check    func(t *testing.T, body []byte)
	}{
		{"/endpoints", 200, func(t *testing.T, body []byte) {
			var out []ServiceEndpoints
			meshtest.MustJSON(t, body, &out)
			if len(out) != 1 || out[0].Service != "billing" || len(out[0].Endpoints) != 1 ||
				out[0].Endpoints[0].Address != "127.0.0.1:9001" || out[0].Endpoints[0].Subsets[0] != "v1" {
				t.Fatalf("%s", body)
			}
		}},
		{"/breakers", 200, func(t *testing.T, body []byte) {
			var out []BreakerState
			meshtest.MustJSON(t, body, &out)
			if len(out) != 1 || out[0].State != "closed" {
				t.Fatalf("%s", body)
			}
		}},
		{"/explain?url=" + url.QueryEscape("http://billing/x") + "&method=get&header=x-a:b", 200, func(t *testing.T, body []byte) {
			var ex Explanation
			meshtest.MustJSON(t, body, &ex)
			if ex.Route != "all" || len(ex.Endpoints) != 1 {
				t.Fatalf("%s", body)
			}
		}},
		{"/explain", 400, nil},
		{"/explain?url=http://billing/&header=nocolon", 400, nil},
		{"/config", 200, func(t *testing.T, body []byte) {
			var cv map[string]any
			meshtest.MustJSON(t, body, &cv)
			if cv["version"] == "" || cv["effective"] == nil || cv["document"] == nil {
				t.Fatalf("%s", body)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
			if rec.Code != tc.wantCode {
				t.Fatalf("code %d: %s", rec.Code, rec.Body.String())
			}
			if tc.check != nil {
				tc.check(t, rec.Body.Bytes())
			}
		})
	}
}

// TestExplanationJSONDurations: the JSON of an Explanation writes its
// durations as Go duration strings, and reads them back.
func TestExplanationJSONDurations(t *testing.T) {
	in := Explanation{Service: "billing", Timeout: 2 * time.Second, PerTryTimeout: 250 * time.Millisecond, Attempts: 3}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	meshtest.MustJSON(t, b, &raw)
	if raw["timeout"] != "2s" || raw["per_try_timeout"] != "250ms" || raw["service"] != "billing" {
		t.Fatalf("%s", b)
	}
	var out Explanation
	meshtest.MustJSON(t, b, &out)
	if out.Timeout != in.Timeout || out.PerTryTimeout != in.PerTryTimeout || out.Attempts != 3 || out.Service != "billing" {
		t.Fatalf("read back %+v from %s", out, b)
	}
}

// reasonsPolicy has defaults, a service with routes and one without: each
// of Explain's reasons names the level its setting came from.
const reasonsPolicy = `
version: why-1
defaults:
  timeout: 5s
  retry: {attempts: 2}
services:
  billing:
    endpoints:
      - {address: 127.0.0.1:9001, labels: {version: v1}}
      - {address: 127.0.0.1:9002, labels: {version: v2}}
      - {address: 127.0.0.1:9003, labels: {version: v3}}
    subsets: {v1: {version: v1}, v2: {version: v2}, v3: {version: v3}}
    retry: {attempts: 3, per_try_timeout: 500ms}
    circuit_breaker: {consecutive_failures: 5}
    outlier_detection: {consecutive_failures: 2, base_ejection: 10s, max_ejection_percent: 50}
    load_balancer: least_request
    tls: disable
    concurrency: {max: 10, max_wait: 50ms}
    authorization:
      rules:
        - {from: [tester], methods: [GET, POST]}
        - {from: [frontend], paths: [/charge], methods: [POST]}
      deny: [{from: [intruder]}]
    routes:
      - name: canary
        match: {headers: {x-canary: "true"}}
        split: [{subset: v2, weight: 100}]
      - name: charge
        match: {path_prefix: /charge, methods: [POST]}
        timeout: 1s
        split: [{subset: v1, weight: 90}, {subset: v2, weight: 10}, {subset: v3, weight: 0}]
      - name: refunds
        match: {path_prefix: /refund}
        retry: {non_idempotent: true}
        circuit_breaker: {failure_rate: 0.5, window: 10s, min_calls: 4}
        hedge: {delay: 20ms}
      - name: rpc
        match: {path_prefix: /billing.Billing/}
        tls: strict
      - name: reads
        match: {methods: [GET]}
  ledger:
    endpoints: [{address: 127.0.0.1:9101}]
`

// unreplayable is a POST whose body cannot be sent again.
func unreplayable(t *testing.T, url string) *http.Request {
	req := meshtest.MustRequest(t, http.MethodPost, url)
	req.Body, req.GetBody = io.NopCloser(strings.NewReader("x")), nil
	return req
}

// TestExplainReasons: every decision of an Explanation comes with its
// reason, the routes tried with why each earlier one did not match, over
// HTTP requests and RPCs.
func TestExplainReasons(t *testing.T) {
	m := newTestMesh(t, reasonsPolicy)
	canaryMiss := RouteDecision{Name: "canary", Reason: `header x-canary: want "true", got none`}
	tests := []struct {
		name      string
		req       *http.Request
		routes    []RouteDecision
		reasons   Reasons // only the fields set are compared
		wantLayer Layer
	}{
		{
			name:   "header route, settings of the service and the defaults",
			req:    meshtest.MustRequest(t, http.MethodGet, "http://billing/anything", "X-Canary", "true"),
			routes: []RouteDecision{{Name: "canary", Matched: true, Reason: "first match"}},
			reasons: Reasons{
				Split:         "v2 100/100: split of route canary",
				Timeout:       "5s: timeout of the defaults",
				PerTryTimeout: "500ms: retry.per_try_timeout of service billing",
				Attempts:      "3: retry.attempts of service billing",
				LoadBalancer:  "least_request: load_balancer of service billing",
				Breaker:       "closed: consecutive_failures 5, open_for 30s; circuit_breaker of service billing",
				Concurrency:   "max 10, queued up to 50ms when full; now 0 in flight, 0 waiting, 0 shed; concurrency of service billing",
				Hedge:         "none: no level sets hedge",
				Fault:         "none: no level sets fault",
				TLS:           "disable: tls of service billing",
				Authorization: "caller tester, GET /anything: allowed by rules[0], mode enforce; authorization of service billing",
			},
		},
		{
			name:   "POST: timeout of the route, one attempt",
			req:    meshtest.MustRequest(t, http.MethodPost, "http://billing/charge"),
			routes: []RouteDecision{canaryMiss, {Name: "charge", Matched: true, Reason: "first match"}},
			reasons: Reasons{
				Split:    "v1 90/100, v2 10/100, v3 0/100: split of route charge; subset v3 has weight 0: it gets no traffic",
				Timeout:  "1s: timeout of route charge",
				Attempts: "1: POST is not idempotent and the route does not say non_idempotent (retry.attempts 3 of service billing)",
			},
		},
		{
			name: "body that cannot be replayed; the route's own rate breaker and hedge",
			req:  unreplayable(t, "http://billing/refund/7"),
			routes: []RouteDecision{canaryMiss, {Name: "charge", Reason: "path /refund/7 does not start with /charge"},
				{Name: "refunds", Matched: true, Reason: "first match"}},
			reasons: Reasons{
				Split:    "none: every endpoint of the service",
				Attempts: "1: the body cannot be replayed (retry.attempts 3 of service billing)",
				Breaker: "closed: failure_rate 0.5 over 10s with min_calls 4 (window now: 0 calls, 0 failed), open_for 30s; " +
					"circuit_breaker of route refunds (the route's own breaker)",
				Hedge: "up to 1 more attempt(s) after 20ms; hedge of route refunds; not for this request: the body cannot be replayed",
			},
		},
		{
			name:   "non_idempotent route retries a POST",
			req:    meshtest.MustRequest(t, http.MethodPost, "http://billing/refund/7"),
			routes: []RouteDecision{canaryMiss, {Name: "charge", Reason: "path /refund/7 does not start with /charge"}, {Name: "refunds", Matched: true, Reason: "first match"}},
			reasons: Reasons{
				Attempts: "3: retry.attempts of service billing; retry.non_idempotent of route refunds lets POST be retried",
				Hedge:    "up to 1 more attempt(s) after 20ms; hedge of route refunds; not for this request: POST is not idempotent and the hedge does not say non_idempotent",
			},
		},
		{
			name: "no route: every route with its reason",
			req:  meshtest.MustRequest(t, http.MethodDelete, "http://billing/other"),
			routes: []RouteDecision{canaryMiss, {Name: "charge", Reason: "path /other does not start with /charge"},
				{Name: "refunds", Reason: "path /other does not start with /refund"},
				{Name: "rpc", Reason: "path /other does not start with /billing.Billing/"},
				{Name: "reads", Reason: "method DELETE not in [GET]"}},
			wantLayer: LayerRoute,
		},
		{
			name:   "no routes, everything from the defaults",
			req:    meshtest.MustRequest(t, http.MethodGet, "http://ledger/"),
			routes: []RouteDecision{{Matched: true, Reason: "no routes: the service's implicit route takes every request"}},
			reasons: Reasons{
				Split:         "none: every endpoint of the service",
				Timeout:       "5s: timeout of the defaults",
				PerTryTimeout: "none: an attempt may take the whole timeout",
				Attempts:      "2: retry.attempts of the defaults",
				LoadBalancer:  "round_robin: the default",
				Breaker:       "none: no level sets circuit_breaker",
				Outlier:       "none: no level sets outlier_detection",
				Concurrency:   "none: neither the service nor the defaults set concurrency",
				TLS:           "strict: the default, no level sets tls",
				Authorization: "caller tester: allowed, neither the service nor the defaults have an authorization block",
			},
		},
		{
			name: "RPC: retried, TLS of the service",
			req:  meshtest.MustRequest(t, http.MethodPost, "grpc://billing/billing.Billing/Charge"),
			routes: []RouteDecision{canaryMiss, {Name: "charge", Reason: "path /billing.Billing/Charge does not start with /charge"},
				{Name: "refunds", Reason: "path /billing.Billing/Charge does not start with /refund"},
				{Name: "rpc", Matched: true, Reason: "first match"}},
			reasons: Reasons{
				Attempts:      "3: retry.attempts of service billing",
				TLS:           "disable: tls of service billing (an RPC takes the service's mode: gRPC connections are shared)",
				Authorization: "caller tester, POST /billing.Billing/Charge: allowed by rules[0], mode enforce; authorization of service billing",
			},
		},
		{
			name:      "RPC by content type, no route",
			req:       meshtest.MustRequest(t, http.MethodPost, "http://billing/pkg.Other/Get", "Content-Type", "application/grpc", "X-Canary", "false"),
			routes:    []RouteDecision{{Name: "canary", Reason: `header x-canary: want "true", got "false"`}, {Name: "charge", Reason: "path /pkg.Other/Get does not start with /charge"}, {Name: "refunds", Reason: "path /pkg.Other/Get does not start with /refund"}, {Name: "rpc", Reason: "path /pkg.Other/Get does not start with /billing.Billing/"}, {Name: "reads", Reason: "method POST not in [GET]"}},
			wantLayer: LayerRoute,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ex, err := m.Explain(tc.req)
			if tc.wantLayer != "" {
				if ce := meshtest.ErrorAs[*CallError](t, err); ce.Layer != tc.wantLayer {
					t.Fatalf("layer %v, want %v", ce.Layer, tc.wantLayer)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ex.Routes, tc.routes) {
				t.Errorf("routes\n got %+v\nwant %+v", ex.Routes, tc.routes)
			}
			got, want := reflect.ValueOf(ex.Reasons), reflect.ValueOf(tc.reasons)
			for i := range want.NumField() {
				if w := want.Field(i).String(); w != "" && got.Field(i).String() != w {
					t.Errorf("reason %s\n got %q\nwant %q", want.Type().Field(i).Name, got.Field(i).String(), w)
				}
			}
			if tc.wantLayer == "" && ex.Reasons.Timeout == "" {
				t.Errorf("no timeout reason: %+v", ex.Reasons)
			}
		})
	}
}

// TestExplainOutlierAndBreakerState: the outlier reason lists the ejected
// endpoints until when, the breaker's the state and the rate breaker's
// window counts.
func TestExplainOutlierAndBreakerState(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	fc := clocktest.NewFake(start)
	m := newTestMesh(t, reasonsPolicy, meshlink.WithClock(fc).(Option))
	_, d := m.destination(m.state.Load(), "billing") // compiled as a first call would
	for _, rt := range d.Routes {
		if rt.Name != "charge" {
			continue
		}
		h := rt.Split[1].Pool.Hosts[0] // v2: 127.0.0.1:9002
		core.Health(h).Report(true, start)
		core.Health(h).Report(true, start)
	}
	fc.Advance(4 * time.Second)
	ex, err := m.Explain(meshtest.MustRequest(t, http.MethodPost, "http://billing/charge"))
	if err != nil {
		t.Fatal(err)
	}
	want := "1 of 2 endpoints ejected: 127.0.0.1:9002 until 2026-01-02T03:04:15Z (6s from now); " +
		"consecutive_failures 2, base_ejection 10s, max_ejection_percent 50; outlier_detection of service billing"
	if ex.Reasons.Outlier != want {
		t.Fatalf("outlier\n got %q\nwant %q", ex.Reasons.Outlier, want)
	}
	if ex.OutlierDetection == nil || ex.OutlierDetection.ConsecutiveFailures != 2 {
		t.Fatalf("outlier detection %+v", ex.OutlierDetection)
	}
	if bd := ex.BreakerDetail; bd == nil || bd.Form != "consecutive_failures" || bd.State != "closed" || bd.Route != "" {
		t.Fatalf("breaker detail %+v", ex.BreakerDetail)
	}

	ex, err = m.Explain(meshtest.MustRequest(t, http.MethodGet, "http://billing/refund/1"))
	if err != nil {
		t.Fatal(err)
	}
	if bd := ex.BreakerDetail; bd == nil || bd.Form != "failure_rate" || bd.Route != "refunds" {
		t.Fatalf("breaker detail %+v", ex.BreakerDetail)
	}
}

// TestExplainAs: the authorization a named caller would meet, with the
// rule that decided and the mode, from ExplainAs and from /explain?caller=.
func TestExplainAs(t *testing.T) {
	m := newTestMesh(t, reasonsPolicy)
	h := m.AdminHandler()
	tests := []struct {
		caller, method, path     string
		authz, rule, reasonStart string
	}{
		{"", http.MethodGet, "/x", "allowed by rules[0]", "rules[0]", "caller tester, GET /x: "},
		{"frontend", http.MethodPost, "/charge", "allowed by rules[1]", "rules[1]", "caller frontend, POST /charge: "},
		{"frontend", http.MethodGet, "/x", "denied by default (default deny)", "default", "caller frontend, GET /x: "},
		{"intruder", http.MethodGet, "/x", "denied by deny[0] (deny 0)", "deny[0]", "caller intruder, GET /x: "},
	}
	for _, tc := range tests {
		t.Run(tc.caller+" "+tc.method+" "+tc.path, func(t *testing.T) {
			check := func(t *testing.T, ex *Explanation) {
				t.Helper()
				wantCaller := cmp.Or(tc.caller, "tester")
				if ex.Authorization != tc.authz || ex.AuthorizationRule != tc.rule || ex.AuthorizationMode != "enforce" || ex.Caller != wantCaller {
					t.Fatalf("authorization %q rule %q mode %q caller %q", ex.Authorization, ex.AuthorizationRule, ex.AuthorizationMode, ex.Caller)
				}
				want := tc.reasonStart + tc.authz + ", mode enforce; authorization of service billing"
				if ex.Reasons.Authorization != want {
					t.Fatalf("reason\n got %q\nwant %q", ex.Reasons.Authorization, want)
				}
			}
			ex, _ := m.ExplainAs(meshtest.MustRequest(t, tc.method, "http://billing"+tc.path), tc.caller)
			check(t, ex)

			q := url.Values{"url": {"http://billing" + tc.path}, "method": {tc.method}}
			if tc.caller != "" {
				q.Set("caller", tc.caller)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/explain?"+q.Encode(), nil))
			if rec.Code != http.StatusOK {
				t.Fatalf("code %d: %s", rec.Code, rec.Body)
			}
			var got Explanation
			meshtest.MustJSON(t, rec.Body.Bytes(), &got)
			check(t, &got)
		})
	}
}

// TestExplainJSONDurationsAll: every duration of an Explanation, new ones
// included, is a Go duration string in JSON, and the reasons and routes
// read back.
func TestExplainJSONDurationsAll(t *testing.T) {
	m := newTestMesh(t, reasonsPolicy)
	for _, path := range []string{"/refund/1", "/charge"} {
		ex, err := m.Explain(meshtest.MustRequest(t, http.MethodPost, "http://billing"+path))
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(ex)
		if err != nil {
			t.Fatal(err)
		}
		var raw any
		meshtest.MustJSON(t, b, &raw)
		durations := map[string]bool{"timeout": true, "per_try_timeout": true, "max_wait": true, "open_for": true,
			"window": true, "base_ejection": true, "delay": true, "duration": true}
		seen := map[string]bool{}
		var walk func(v any, in string)
		walk = func(v any, in string) {
			switch v := v.(type) {
			case map[string]any:
				for k, x := range v {
					if durations[k] && in != "reasons" {
						if _, ok := x.(string); !ok {
							t.Errorf("%s.%s = %v: not a duration string", in, k, x)
						}
						seen[k] = true
					}
					walk(x, k)
				}
			case []any:
				for _, x := range v {
					walk(x, in)
				}
			}
		}
		walk(raw, "")
		for _, k := range []string{"timeout", "per_try_timeout", "max_wait", "open_for", "base_ejection"} {
			if !seen[k] {
				t.Errorf("%s: no %q in %s", path, k, b)
			}
		}
		var back Explanation
		meshtest.MustJSON(t, b, &back)
		if !reflect.DeepEqual(back.Reasons, ex.Reasons) || !slices.Equal(back.Routes, ex.Routes) || back.Timeout != ex.Timeout {
			t.Fatalf("read back\n%+v\nfrom %s", back, b)
		}
	}
}

// TestExplainDefaultsRoutes: a service without routes of its own takes the
// defaults' routes, and the reasons say so.
func TestExplainDefaultsRoutes(t *testing.T) {
	m := newTestMesh(t, `
defaults:
  routes:
    - name: slow
      match: {path_prefix: /slow}
      timeout: 3s
    - name: all
services:
  ledger:
    endpoints: [{address: 127.0.0.1:9101}]
    timeout: 2s
`)
	tests := []struct {
		path, timeout string
		routes        []RouteDecision
	}{
		{"/slow/1", "3s: timeout of route slow of the defaults", []RouteDecision{{Name: "slow", Matched: true, Reason: "first match"}}},
		{"/fast", "2s: timeout of service ledger", []RouteDecision{{Name: "slow", Reason: "path /fast does not start with /slow"},
			{Name: "all", Matched: true, Reason: "first match"}}},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			ex, err := m.Explain(meshtest.MustRequest(t, http.MethodGet, "http://ledger"+tc.path))
			if err != nil {
				t.Fatal(err)
			}
			if ex.Reasons.Timeout != tc.timeout || !slices.Equal(ex.Routes, tc.routes) {
				t.Fatalf("timeout %q routes %+v", ex.Reasons.Timeout, ex.Routes)
			}
		})
	}
}
