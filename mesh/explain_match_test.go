package mesh

import (
	"bytes"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/inmesh/inmesh/policy"
)

const matchExplainPolicy = `
version: match-1
defaults: {tls: disable}
services:
  billing:
    endpoints: [{address: 127.0.0.1:9001, labels: {version: v1}}]
    subsets: {v1: {version: v1}}
    routes:
      - name: exact
        match: {path_exact: /charge}
      - name: regex
        match: {path_regex: "/v[0-9]+/refund"}
      - name: staging
        match: {header: [{name: X-Env, prefix: st}]}
      - name: not-beta
        match: {header: [{name: x-beta, present: true, invert: true}], query_param: [{name: debug}]}
      - name: rewrite
        match: {path_prefix: /v1/, query_param: [{name: id, regex: "[0-9]+"}]}
        prefix_rewrite: /v2/
        request_headers: {add: {X-Tag: a}, set: {x-env: prod}, remove: [X-Debug]}
`

// TestExplainRouteConditions: Explain names, for each route that does not
// match, the condition that failed; and shows the matched route's
// conditions and actions, with the path the request is sent with.
func TestExplainRouteConditions(t *testing.T) {
	m := newTestMesh(t, matchExplainPolicy)
	req, _ := http.NewRequest(http.MethodGet, "http://billing/v1/a%2Fb?id=42", nil)
	req.Header.Set("X-Env", "prod")
	req.Header.Set("X-Beta", "1")
	ex, err := m.Explain(req)
	if err != nil {
		t.Fatal(err)
	}
	want := []RouteDecision{
		{Name: "exact", Reason: "path /v1/a/b is not /charge"},
		{Name: "regex", Reason: `path /v1/a/b does not match regex "/v[0-9]+/refund"`},
		{Name: "staging", Reason: `header x-env: prefix "st" not matched (got "prod")`},
		{Name: "not-beta", Reason: "header x-beta: present, and the condition is inverted"},
		{Name: "rewrite", Matched: true, Reason: "first match"},
	}
	if !reflect.DeepEqual(ex.Routes, want) {
		t.Errorf("routes\n got %+v\nwant %+v", ex.Routes, want)
	}
	if ex.Route != "rewrite" || ex.PrefixRewrite != "/v2/" || ex.RewrittenPath != "/v2/a%2Fb" {
		t.Errorf("route %q, prefix_rewrite %q, path %q", ex.Route, ex.PrefixRewrite, ex.RewrittenPath)
	}
	wantHM := &policy.HeaderMutation{Add: map[string]string{"x-tag": "a"}, Set: map[string]string{"x-env": "prod"}, Remove: []string{"x-debug"}}
	if !reflect.DeepEqual(ex.RequestHeaders, wantHM) {
		t.Errorf("request_headers %+v", ex.RequestHeaders)
	}
	b, err := json.Marshal(ex)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`"match":{"path_prefix":"/v1/","query_param":[{"name":"id","regex":"[0-9]+"}]}`, `"prefix_rewrite":"/v2/"`, `"rewritten_path":"/v2/a%2Fb"`,
		`"request_headers":{"add":{"x-tag":"a"},"set":{"x-env":"prod"},"remove":["x-debug"]}`} {
		if !strings.Contains(string(b), s) {
			t.Errorf("no %s in %s", s, b)
		}
	}

	// The query, absent or not matched; an RPC has none.
	for _, tc := range []struct{ url, why string }{
		{"http://billing/v1/a", "query id: absent"},
		{"http://billing/v1/a?id=x1", `query id: regex "[0-9]+" not matched (got "x1")`},
		{"grpc://billing/v1/a", "query id: an RPC has no query"},
	} {
		req, _ := http.NewRequest(http.MethodPost, tc.url, nil)
		req.Header.Set("X-Beta", "1")
		ex, _ := m.Explain(req)
		if n := len(ex.Routes); n != 5 || ex.Routes[4].Reason != tc.why {
			t.Errorf("%s: routes %+v, want the last %q", tc.url, ex.Routes, tc.why)
		}
	}
}

// TestConfigShowsRouteConditions: /config shows the new conditions and
// actions, in the document and resolved, as the policy spells them.
func TestConfigShowsRouteConditions(t *testing.T) {
	rec := adminGet(t, newTestMesh(t, matchExplainPolicy).AdminHandler(), "/config", "")
	var compact bytes.Buffer
	if err := json.Compact(&compact, rec.Body.Bytes()); err != nil {
		t.Fatal(err)
	}
	body := compact.String()
	for _, s := range []string{`"path_exact":"/charge"`, `"path_regex":"/v[0-9]+/refund"`,
		`"header":[{"name":"X-Env","prefix":"st"}]`, `"header":[{"name":"x-env","prefix":"st"}]`,
		`"header":[{"name":"x-beta","present":true,"invert":true}],"query_param":[{"name":"debug"}]`,
		`"prefix_rewrite":"/v2/"`, `"request_headers":{"add":{"X-Tag":"a"},"set":{"x-env":"prod"},"remove":["X-Debug"]}`,
		`"request_headers":{"add":{"x-tag":"a"},"set":{"x-env":"prod"},"remove":["x-debug"]}`} {
		if !strings.Contains(body, s) {
			t.Errorf("no %s in /config", s)
		}
	}
}
