package policy

import (
	"reflect"
	"strings"
	"testing"
)

// TestValidateRouteConditions: the match conditions and route actions of
// issue 12, each rule with the path of the field it names.
func TestValidateRouteConditions(t *testing.T) {
	const pre = "services: {billing: {routes: [{"
	const post = "}]}}"
	long := strings.Repeat("a", maxRegexLen+1)
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"all valid", `match: {path_regex: "/v[0-9]+/.*", header: [{name: x-env, prefix: st}, {name: X-Beta, invert: true}, {name: a, regex: "b.*"}, {name: p, present: true}, {name: s, suffix: z}, {name: e, exact: ""}], query_param: [{name: debug}, {name: v, exact: "1"}, {name: r, regex: "[a-z]+"}, {name: q, present: true}]}`, nil},
		{"path exact", "match: {path_exact: /charge}, prefix_rewrite: /v2/charge", nil},
		{"two path forms", "match: {path_prefix: /a, path_exact: /a}", []string{"services.billing.routes[0].match: at most one of path_prefix, path_exact and path_regex"}},
		{"three path forms", "match: {path_prefix: /a, path_exact: /a, path_regex: /a}", []string{"services.billing.routes[0].match: at most one of path_prefix, path_exact and path_regex"}},
		{"path exact slash", "match: {path_exact: charge}", []string{`services.billing.routes[0].match.path_exact: must start with "/"`}},
		{"path regex invalid", `match: {path_regex: "/a("}`, []string{"services.billing.routes[0].match.path_regex: invalid regular expression: error parsing regexp: missing closing ): `/a(`"}},
		{"path regex too long", "match: {path_regex: " + long + "}", []string{"services.billing.routes[0].match.path_regex: must be at most 1024 bytes, got 1025"}},
		{"path regex backreference", `match: {path_regex: "(a)\\1"}`, []string{"services.billing.routes[0].match.path_regex: invalid regular expression: error parsing regexp: invalid escape sequence: `\\1`"}},
		{"header no name", "match: {header: [{exact: x}]}", []string{"services.billing.routes[0].match.header[0].name: a header condition needs a name"}},
		{"header bad name", `match: {header: [{name: ok}, {name: "x y"}]}`, []string{`services.billing.routes[0].match.header[1].name: invalid header name "x y"`}},
		{"header pseudo name", `match: {header: [{name: ":authority", exact: x}]}`, []string{`services.billing.routes[0].match.header[0].name: invalid header name ":authority"`}},
		{"header two operators", "match: {header: [{name: a, exact: x, prefix: y}]}", []string{"services.billing.routes[0].match.header[0]: at most one of present, exact, prefix, suffix and regex"}},
		{"header present and regex", "match: {header: [{name: a, present: true, regex: y}]}", []string{"services.billing.routes[0].match.header[0]: at most one of present, exact, prefix, suffix and regex"}},
		{"header regex", `match: {header: [{name: a}, {name: b, regex: "["}]}`, []string{"services.billing.routes[0].match.header[1].regex: invalid regular expression: error parsing regexp: missing closing ]: `[`"}},
		{"header regex too long", "match: {header: [{name: b, regex: " + long + "}]}", []string{"services.billing.routes[0].match.header[0].regex: must be at most 1024 bytes, got 1025"}},
		{"query no name", "match: {query_param: [{exact: x}]}", []string{"services.billing.routes[0].match.query_param[0].name: a query parameter needs a name"}},
		{"query two operators", "match: {query_param: [{name: a, exact: x, regex: y}]}", []string{"services.billing.routes[0].match.query_param[0]: at most one of present, exact and regex"}},
		{"query regex", `match: {query_param: [{name: a, regex: "*"}]}`, []string{"services.billing.routes[0].match.query_param[0].regex: invalid regular expression: error parsing regexp: missing argument to repetition operator: `*`"}},

		{"rewrite prefix", "match: {path_prefix: /v1/}, prefix_rewrite: /v2/", nil},
		{"rewrite without path", "prefix_rewrite: /v2", []string{"services.billing.routes[0].prefix_rewrite: needs match.path_prefix or match.path_exact, whose part of the path it replaces"}},
		{"rewrite with regex", "match: {path_regex: /a.*}, prefix_rewrite: /v2", []string{"services.billing.routes[0].prefix_rewrite: needs match.path_prefix or match.path_exact, whose part of the path it replaces"}},
		{"rewrite slash", "match: {path_prefix: /a}, prefix_rewrite: v2", []string{`services.billing.routes[0].prefix_rewrite: must start with "/"`}},
		{"rewrite query", `match: {path_prefix: /a}, prefix_rewrite: "/b?x=1"`, []string{`services.billing.routes[0].prefix_rewrite: must be a path, without control characters, "?" or "#"`}},

		{"headers valid", "request_headers: {add: {X-Tag: a}, set: {x-env: prod}, remove: [x-debug]}", nil},
		{"headers reserved", `request_headers: {add: {Host: h, Inmesh-Timeout-Ms: "1"}, set: {connection: close, ":path": /x, grpc-timeout: 1S}, remove: [Content-Length, inmesh-caller, "a b"]}`, []string{
			"services.billing.routes[0].request_headers.add.Host: header Host is set by the transport, not by a route",
			"services.billing.routes[0].request_headers.add.Inmesh-Timeout-Ms: header Inmesh-Timeout-Ms belongs to the mesh",
			`services.billing.routes[0].request_headers.set[":path"]: pseudo-header :path cannot be changed`,
			"services.billing.routes[0].request_headers.set.connection: header connection is set by the transport, not by a route",
			"services.billing.routes[0].request_headers.set.grpc-timeout: header grpc-timeout is reserved by gRPC",
			"services.billing.routes[0].request_headers.remove[0]: header Content-Length is set by the transport, not by a route",
			"services.billing.routes[0].request_headers.remove[1]: header inmesh-caller belongs to the mesh",
			`services.billing.routes[0].request_headers.remove[2]: invalid header name "a b"`,
		}},
		{"headers twice", "request_headers: {add: {x-a: '1'}, set: {X-A: '2'}, remove: [x-a]}", []string{
			"services.billing.routes[0].request_headers.set.X-A: header \"X-A\" is changed twice (names are case-insensitive; also add.x-a)",
			"services.billing.routes[0].request_headers.remove[0]: header \"x-a\" is changed twice (names are case-insensitive; also add.x-a)",
		}},
		{"header value control", `request_headers: {set: {x-a: "a\nb"}}`, []string{"services.billing.routes[0].request_headers.set.x-a: invalid header value: control characters"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { wantProblems(t, pre+tc.in+post, tc.want) })
	}
	t.Run("in the defaults", func(t *testing.T) {
		wantProblems(t, "defaults: {routes: [{match: {path_exact: y}}]}\nservices: {billing: {}}",
			[]string{`defaults.routes[0].match.path_exact: must start with "/"`})
	})
}

// TestResolveRouteConditions: the resolved route carries the conditions
// with lower-case header names and the actions with lower-case names,
// leaving the document as it was.
func TestResolveRouteConditions(t *testing.T) {
	doc := mustParse(t, `services: {billing: {routes: [{match: {path_prefix: /v1/, header: [{name: X-Env, prefix: st}, {name: x-b}]}, prefix_rewrite: /v2/, request_headers: {add: {X-Tag: a}, set: {X-Env: prod}, remove: [X-Debug]}}, {request_headers: {}}]}}`)
	snap, err := NewSnapshot(doc, "v1")
	if err != nil {
		t.Fatal(err)
	}
	rr := snap.Services["billing"].Routes[0]
	if got := []HeaderMatch{{Name: "x-env", Prefix: "st"}, {Name: "x-b"}}; !reflect.DeepEqual(rr.Match.Header, got) {
		t.Errorf("header = %+v", rr.Match.Header)
	}
	if rr.PrefixRewrite != "/v2/" {
		t.Errorf("prefix_rewrite = %q", rr.PrefixRewrite)
	}
	want := &HeaderMutation{Add: map[string]string{"x-tag": "a"}, Set: map[string]string{"x-env": "prod"}, Remove: []string{"x-debug"}}
	if !reflect.DeepEqual(rr.RequestHeaders, want) {
		t.Errorf("request_headers = %+v", rr.RequestHeaders)
	}
	if r1 := snap.Services["billing"].Routes[1]; r1.RequestHeaders != nil {
		t.Errorf("empty request_headers resolved to %+v, want nil", r1.RequestHeaders)
	}
	if doc.Services["billing"].Routes[0].Match.Header[0].Name != "X-Env" || doc.Services["billing"].Routes[0].RequestHeaders.Set["X-Env"] != "prod" {
		t.Error("resolving modified the document")
	}
}
