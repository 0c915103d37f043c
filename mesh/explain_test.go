package mesh

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

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
