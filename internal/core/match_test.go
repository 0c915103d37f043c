package core

import (
	"strings"
	"testing"

	"github.com/inmesh/inmesh/policy"
)

// TestMatcherWhy: Why names the first condition that fails, in a stable
// order, with the request's own text bounded, and is "" exactly when Match
// is true.
func TestMatcherWhy(t *testing.T) {
	m := CompileMatch(policy.Match{PathPrefix: "/charge", Methods: []string{"post"},
		Headers: map[string]string{"x-canary": "true", "a-tenant": "t1"}})
	long := "/" + strings.Repeat("x", 200)
	tests := []struct {
		name string
		req  Request
		want string
	}{
		{"path", Request{Path: "/refund", Method: "POST"}, "path /refund does not start with /charge"},
		{"long path bounded", Request{Path: long}, "path " + long[:61] + "... does not start with /charge"},
		{"control characters", Request{Path: "/a\nb"}, "path /a b does not start with /charge"},
		{"method", Request{Path: "/charge", Method: "GET"}, "method GET not in [POST]"},
		{"no method is GET", Request{Path: "/charge"}, "method GET not in [POST]"},
		{"headers in name order", Request{Path: "/charge", Method: "POST"}, `header a-tenant: want "t1", got none`},
		{"header value", Request{Path: "/charge", Method: "POST", Header: HTTPHeader{"A-Tenant": {"t1"}, "X-Canary": {"false"}}},
			`header x-canary: want "true", got "false"`},
		{"metadata values", Request{Path: "/charge", Method: "POST", Header: Metadata{"a-tenant": {"t1"}, "x-canary": {"no", "nope"}}},
			`header x-canary: want "true", got "no" and 1 more`},
		{"match", Request{Path: "/charge/1", Method: "POST", Header: HTTPHeader{"A-Tenant": {"t1"}, "X-Canary": {"true"}}}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := m.Why(&tc.req)
			if got != tc.want {
				t.Fatalf("Why = %q, want %q", got, tc.want)
			}
			if m.Match(&tc.req) != (got == "") {
				t.Fatalf("Match = %v but Why = %q", m.Match(&tc.req), got)
			}
		})
	}
	var zero Matcher
	if w := zero.Why(&Request{Path: "/x"}); w != "" {
		t.Fatalf("zero Matcher: %q", w)
	}
}

// BenchmarkMatch is a route's match on the call path: no allocation.
func BenchmarkMatch(b *testing.B) {
	m := CompileMatch(policy.Match{PathPrefix: "/charge", Methods: []string{"POST"}, Headers: map[string]string{"x-canary": "true", "a-tenant": "t1"}})
	req := &Request{Path: "/charge/1", Method: "POST", Header: HTTPHeader{"A-Tenant": {"t1"}, "X-Canary": {"true"}}}
	b.ReportAllocs()
	for b.Loop() {
		if !m.Match(req) {
			b.Fatal("no match")
		}
	}
}
