package identity

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"net/url"
	gopath "path"
	"strings"
	"testing"

	"github.com/inmesh/inmesh/policy"
)

// designPolicy is the reference authorization example: billing takes
// POST /charge from enrollment and progress, anything from admin, and
// denies the rest.
var designPolicy = policy.Authorization{
	Default: "deny",
	Rules: []policy.Rule{
		{From: []string{"enrollment", "progress"}, Paths: []string{"/charge"}, Methods: []string{"POST"}},
		{From: []string{"admin"}},
	},
}

func TestAuthorize(t *testing.T) {
	wildcard := policy.Authorization{Rules: []policy.Rule{
		{From: []string{"web"}, Paths: []string{"/private"}},
		{From: []string{"*"}, Paths: []string{"/public", "/health"}, Methods: []string{"get", "HEAD"}},
		{From: []string{"web", "*"}, Paths: []string{"/both"}},
		{From: nil}, // matches nobody
		{From: []string{""}, Paths: []string{"/"}},
	}}
	tests := []struct {
		name                 string
		a                    policy.Authorization
		caller, method, path string
		allow                bool
		rule                 int
		reason               string
	}{
		{"allowed by rule 0", designPolicy, "enrollment", "POST", "/charge", true, 0, "rule 0"},
		{"second caller of rule 0", designPolicy, "progress", "POST", "/charge/123", true, 0, "rule 0"},
		{"wrong method", designPolicy, "enrollment", "GET", "/charge", false, -1, "default deny"},
		{"method case matters on the request", designPolicy, "enrollment", "post", "/charge", false, -1, "default deny"},
		{"wrong path", designPolicy, "enrollment", "POST", "/refund", false, -1, "default deny"},
		{"admin anything", designPolicy, "admin", "DELETE", "/anything", true, 1, "rule 1"},
		{"unknown caller", designPolicy, "evil", "POST", "/charge", false, -1, "default deny"},
		{"default allow", policy.Authorization{Default: "allow"}, "anyone", "GET", "/", true, -1, "default allow"},
		{"empty default denies", policy.Authorization{}, "anyone", "GET", "/", false, -1, "default deny"},
		{"unknown default denies", policy.Authorization{Default: "maybe"}, "anyone", "GET", "/", false, -1, "default deny"},
		{"empty caller denied under default allow", policy.Authorization{Default: "allow"}, "", "GET", "/", false, -1, "no caller identity"},
		{"wildcard for any caller", wildcard, "billing", "GET", "/public/x", true, 1, "rule 1"},
		{"wildcard methods upper-cased", wildcard, "billing", "GET", "/health", true, 1, "rule 1"},
		{"wildcard wrong method", wildcard, "billing", "POST", "/public", false, -1, "default deny"},
		{"named caller still gets wildcard rules", wildcard, "web", "HEAD", "/public", true, 1, "rule 1"},
		{"named rule first", wildcard, "web", "PUT", "/private", true, 0, "rule 0"},
		{"rule naming caller and * once", wildcard, "web", "GET", "/both", true, 2, "rule 2"},
		{"other caller of a * rule", wildcard, "x", "GET", "/both", true, 2, "rule 2"},
		{"not the named caller", wildcard, "x", "GET", "/private", false, -1, "default deny"},
		{"rule without From matches nobody", wildcard, "x", "GET", "/nothing", false, -1, "default deny"},
		{"dot-dot path cannot pass a prefix", wildcard, "x", "GET", "/public/../admin", false, -1, "default deny"},
		{"dot path cannot pass a prefix", wildcard, "x", "GET", "/public/./x", false, -1, "default deny"},
		{"trailing dot-dot", wildcard, "x", "GET", "/public/..", false, -1, "default deny"},
		{"relative path", wildcard, "x", "GET", "public", false, -1, "default deny"},
		{"dots inside a segment are fine", wildcard, "x", "GET", "/public/a..b/.c", true, 1, "rule 1"},
		{"unclean path under a rule without paths", designPolicy, "admin", "GET", "/x/../y", true, 1, "rule 1"},
		// Rule paths cover at a segment boundary.
		{"rule path exactly", designPolicy, "enrollment", "POST", "/charge", true, 0, "rule 0"},
		{"below the rule path", designPolicy, "enrollment", "POST", "/charge/x/y", true, 0, "rule 0"},
		{"rule path with a trailing slash", designPolicy, "enrollment", "POST", "/charge/", true, 0, "rule 0"},
		{"longer segment is not below", designPolicy, "enrollment", "POST", "/chargeback", false, -1, "default deny"},
		{"longer segment with more", designPolicy, "enrollment", "POST", "/charge-admin/x", false, -1, "default deny"},
		{"rule path ending in a slash covers below", slashRule, "web", "GET", "/api/x", true, 0, "rule 0"},
		{"rule path ending in a slash covers itself", slashRule, "web", "GET", "/api/", true, 0, "rule 0"},
		{"rule path ending in a slash, parent", slashRule, "web", "GET", "/api", false, -1, "default deny"},
		{"rule path ending in a slash, longer segment", slashRule, "web", "GET", "/apix", false, -1, "default deny"},
		// Decided on the decoded path; non-canonical spellings never match.
		{"escaped letter decodes", designPolicy, "enrollment", "POST", "/ch%61rge/x", true, 0, "rule 0"},
		{"escaped slash", designPolicy, "enrollment", "POST", "/charge%2Fx", false, -1, "default deny"},
		{"escaped dot-dot", wildcard, "x", "GET", "/public/%2e%2e/admin", false, -1, "default deny"},
		{"dot-dot escaped slash", wildcard, "x", "GET", "/public/..%2fadmin", false, -1, "default deny"},
		{"double slash", wildcard, "x", "GET", "/public//admin", false, -1, "default deny"},
		{"backslash", wildcard, "x", "GET", `/public\..\admin`, false, -1, "default deny"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewAuthorizer(tt.a).Authorize(tt.caller, tt.method, tt.path)
			if d.Allow != tt.allow || d.Rule != tt.rule || d.Reason != tt.reason {
				t.Errorf("Authorize(%q, %q, %q) = %+v, want allow %v rule %d reason %q",
					tt.caller, tt.method, tt.path, d, tt.allow, tt.rule, tt.reason)
			}
		})
	}
}

// slashRule has a rule path that ends in "/".
var slashRule = policy.Authorization{Rules: []policy.Rule{{From: []string{"web"}, Paths: []string{"/api/"}}}}

func TestAuthorizeDeniesOnError(t *testing.T) {
	var nilZ *Authorizer
	if d := nilZ.Authorize("admin", "GET", "/"); d.Allow || d.Rule != -1 || d.Reason != "no authorization policy" {
		t.Errorf("nil Authorizer: %+v", d)
	}
	z := NewAuthorizer(policy.Authorization{Default: "allow"})
	tests := []struct {
		name   string
		id     ID
		reason string
	}{
		{"zero ID", ID{}, "no caller identity"},
		{"ID without a service", MustParseID("spiffe://mesh.local/workload/x"), "caller ID names no service"},
		{"trust domain ID", MustParseID("spiffe://mesh.local"), "caller ID names no service"},
	}
	for _, tt := range tests {
		if d := z.AuthorizeID(tt.id, "GET", "/"); d.Allow || d.Rule != -1 || d.Reason != tt.reason {
			t.Errorf("%s: %+v", tt.name, d)
		}
	}
	if d := z.AuthorizeID(MustParseID("spiffe://mesh.local/ns/default/dc/dc1/svc/web"), "GET", "/"); !d.Allow {
		t.Errorf("Consul ID under default allow: %+v", d)
	}
	if d := nilZ.AuthorizeID(MustParseID("spiffe://mesh.local/svc/web"), "GET", "/"); d.Allow {
		t.Errorf("nil Authorizer, valid ID: %+v", d)
	}
}

func TestNewAuthorizerCopies(t *testing.T) {
	a := policy.Authorization{Rules: []policy.Rule{{From: []string{"web"}, Paths: []string{"/x"}, Methods: []string{"GET"}}}}
	z := NewAuthorizer(a)
	a.Rules[0].From[0], a.Rules[0].Paths[0], a.Rules[0].Methods[0] = "evil", "/", "POST"
	if d := z.Authorize("web", "GET", "/x"); !d.Allow {
		t.Errorf("changing the policy afterwards changed the Authorizer: %+v", d)
	}
	if d := z.Authorize("evil", "POST", "/"); d.Allow {
		t.Errorf("changing the policy afterwards changed the Authorizer: %+v", d)
	}
}

// fiftyRules is a policy of 50 rules: each names two callers, two paths and
// two methods; the last one is for any caller.
func fiftyRules() policy.Authorization {
	a := policy.Authorization{Default: "deny"}
	for i := range 49 {
		a.Rules = append(a.Rules, policy.Rule{
			From:    []string{fmt.Sprintf("svc-%d", i), fmt.Sprintf("svc-%d", i+1)},
			Paths:   []string{fmt.Sprintf("/api/v1/r%d/", i), fmt.Sprintf("/api/v2/r%d/", i)},
			Methods: []string{"GET", "POST"},
		})
	}
	a.Rules = append(a.Rules, policy.Rule{From: []string{"*"}, Paths: []string{"/health"}, Methods: []string{"GET"}})
	return a
}

var authzCases = []struct {
	name                 string
	caller, method, path string
	allow                bool
}{
	{"allow named", "svc-48", "POST", "/api/v2/r48/items/123", true},
	{"allow wildcard", "unknown", "GET", "/health", true},
	{"deny named", "svc-48", "DELETE", "/api/v2/r48/items/123", false},
	{"deny unknown", "unknown", "GET", "/api/v1/r3/x", false},
}

func TestAuthorizeFiftyRulesNoAllocs(t *testing.T) {
	z := NewAuthorizer(fiftyRules())
	for _, c := range authzCases {
		if d := z.Authorize(c.caller, c.method, c.path); d.Allow != c.allow {
			t.Errorf("%s: %+v", c.name, d)
		}
		if n := testing.AllocsPerRun(1000, func() { _ = z.Authorize(c.caller, c.method, c.path) }); n != 0 {
			t.Errorf("%s: %v allocations per call", c.name, n)
		}
	}
	id := MustParseID("spiffe://mesh.local/svc/svc-48")
	if n := testing.AllocsPerRun(1000, func() { _ = z.AuthorizeID(id, "GET", "/api/v1/r48/") }); n != 0 {
		t.Errorf("AuthorizeID: %v allocations per call", n)
	}
}

func BenchmarkAuthorize(b *testing.B) {
	z := NewAuthorizer(fiftyRules())
	for _, c := range authzCases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if d := z.Authorize(c.caller, c.method, c.path); d.Allow != c.allow {
					b.Fatal(d)
				}
			}
		})
	}
	// The whole per-call check: the peer's ID from the connection state,
	// then the decision.
	b.Run("PeerIDFromState+AuthorizeID", func(b *testing.B) {
		ca := newTestCA(b)
		cs := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{mustCurrent(b, mustSource(b, ca, "svc-48")).Certificate.Leaf}}
		b.ReportAllocs()
		for b.Loop() {
			id, err := PeerIDFromState(cs)
			if err != nil {
				b.Fatal(err)
			}
			if d := z.AuthorizeID(id, "POST", "/api/v2/r48/items/123"); !d.Allow {
				b.Fatal(d)
			}
		}
	})
}

// worstCase is 50 rules for any caller, none of which matches the
// benchmark's call: Authorize looks at every rule.
func worstCase() policy.Authorization {
	a := policy.Authorization{}
	for i := range 50 {
		a.Rules = append(a.Rules, policy.Rule{From: []string{"*"}, Paths: []string{fmt.Sprintf("/api/r%d", i), "/other"}, Methods: []string{"GET", "POST"}})
	}
	return a
}

func BenchmarkAuthorizeWorstCase(b *testing.B) {
	z := NewAuthorizer(worstCase())
	b.ReportAllocs()
	for b.Loop() {
		if d := z.Authorize("web", "GET", "/api/x/items/123"); d.Allow {
			b.Fatal(d)
		}
	}
}

// naiveAuthorize is the reference semantics: the deny list in order, first
// match denies (a deny rule with paths denies a path that is not
// canonical); then the rules in order, first match allows.
func naiveAuthorize(a policy.Authorization, caller, method, path string) Decision {
	if caller == "" {
		return Decision{Rule: -1, Reason: reasonNoCaller}
	}
	// Canonical: no escaped slash, dot or backslash, and once decoded
	// rooted, no backslash, and what path.Clean leaves as is (but for a
	// trailing slash); covered: the rule path itself or below it.
	dec, err := url.PathUnescape(path)
	low := strings.ToLower(path)
	clean := err == nil && !strings.Contains(low, "%2f") && !strings.Contains(low, "%2e") && !strings.Contains(low, "%5c") &&
		strings.HasPrefix(dec, "/") && !strings.Contains(dec, `\`) &&
		(dec == "/" || gopath.Clean(dec) == strings.TrimSuffix(dec, "/"))
	// match reports whether r names the caller and the method, and whether
	// one of its paths covers the path (any path without paths).
	match := func(r policy.Rule) (callerMethod, covered bool) {
		from := false
		for _, f := range r.From {
			from = from || f == "*" || (f != "" && f == caller)
		}
		meth := len(r.Methods) == 0
		for _, m := range r.Methods {
			meth = meth || strings.ToUpper(m) == method
		}
		p := len(r.Paths) == 0
		for _, pre := range r.Paths {
			p = p || (clean && (dec == pre || strings.HasPrefix(dec, strings.TrimSuffix(pre, "/")+"/")))
		}
		return from && meth, p
	}
	for i, r := range a.Deny {
		cm, covered := match(r)
		if !cm {
			continue
		}
		if len(r.Paths) > 0 && !clean {
			return Decision{Rule: i, List: ListDeny, Name: fmt.Sprintf("deny[%d]", i), Reason: fmt.Sprintf("deny %d: path not canonical", i)}
		}
		if covered {
			return Decision{Rule: i, List: ListDeny, Name: fmt.Sprintf("deny[%d]", i), Reason: fmt.Sprintf("deny %d", i)}
		}
	}
	for i, r := range a.Rules {
		if cm, covered := match(r); cm && covered {
			return Decision{Allow: true, Rule: i, List: ListRules, Name: fmt.Sprintf("rules[%d]", i), Reason: fmt.Sprintf("rule %d", i)}
		}
	}
	if a.Default == "allow" {
		return Decision{Allow: true, Rule: -1, Name: "default", Reason: reasonDefaultAllow}
	}
	return Decision{Rule: -1, Name: "default", Reason: reasonDefaultDeny}
}

func TestAuthorizeMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	callers := []string{"a", "b", "c", "*", ""}
	paths := []string{"/", "/x", "/x/y", "/y", "/x/", "/xy", "/x/../y", "/x/.", "x", "/x//y", "/x%2Fy", "/x%79", "/x%2e%2e/y", `/x\y`, "/x%5Cy", "/x%zz"}
	methods := []string{"GET", "POST", "get", "DELETE"}
	pick := func(from []string, max int) []string {
		var out []string
		for range rng.IntN(max + 1) {
			out = append(out, from[rng.IntN(len(from))])
		}
		return out
	}
	for range 2000 {
		a := policy.Authorization{Default: []string{"", "deny", "allow"}[rng.IntN(3)]}
		for range rng.IntN(6) {
			a.Rules = append(a.Rules, policy.Rule{From: pick(callers, 3), Paths: pick(paths[:5], 2), Methods: pick(methods, 2)})
		}
		for range rng.IntN(3) {
			a.Deny = append(a.Deny, policy.Rule{From: pick(callers, 2), Paths: pick(paths[:5], 2), Methods: pick(methods, 2)})
		}
		z := NewAuthorizer(a)
		for _, c := range []string{"a", "b", "c", "d", ""} {
			for _, p := range paths {
				for _, m := range methods {
					got, want := z.Authorize(c, m, p), naiveAuthorize(a, c, m, p)
					if got != want {
						t.Fatalf("policy %+v: Authorize(%q, %q, %q) = %+v, reference %+v", a, c, m, p, got, want)
					}
				}
			}
		}
	}
}

// denyPolicy allows web and admin everything, enrollment POST /charge and
// what lies below it, and denies /admin to every caller, DELETE to web,
// /charge/refund to enrollment, and anything at all to evil.
var denyPolicy = policy.Authorization{
	Default: "deny",
	Rules: []policy.Rule{
		{From: []string{"web", "admin", "evil"}},
		{From: []string{"enrollment"}, Paths: []string{"/charge"}, Methods: []string{"POST"}},
	},
	Deny: []policy.Rule{
		{From: []string{"*"}, Paths: []string{"/admin"}},
		{From: []string{"web"}, Methods: []string{"delete"}},
		{From: []string{"enrollment"}, Paths: []string{"/charge/refund"}, Methods: []string{"POST"}},
		{From: []string{"evil"}},
		{From: nil, Paths: []string{"/"}}, // matches nobody
	},
}

func TestAuthorizeDeny(t *testing.T) {
	tests := []struct {
		name                 string
		a                    policy.Authorization
		caller, method, path string
		allow                bool
		list                 RuleList
		rule                 int
		ruleName, reason     string
	}{
		{"rules allow what no deny matches", denyPolicy, "web", "GET", "/x", true, ListRules, 0, "rules[0]", "rule 0"},
		{"deny before the rules", denyPolicy, "web", "GET", "/admin", false, ListDeny, 0, "deny[0]", "deny 0"},
		{"* deny for any caller", denyPolicy, "admin", "POST", "/admin/users", false, ListDeny, 0, "deny[0]", "deny 0"},
		{"* deny for a caller no rule names", denyPolicy, "stranger", "GET", "/admin", false, ListDeny, 0, "deny[0]", "deny 0"},
		{"deny at a segment boundary", denyPolicy, "web", "GET", "/administrator", true, ListRules, 0, "rules[0]", "rule 0"},
		{"deny path with a trailing slash", denyPolicy, "web", "GET", "/admin/", false, ListDeny, 0, "deny[0]", "deny 0"},
		{"paths are case-sensitive", denyPolicy, "web", "GET", "/ADMIN", true, ListRules, 0, "rules[0]", "rule 0"},
		{"escaped letter decodes to the denied path", denyPolicy, "web", "GET", "/%61dmin", false, ListDeny, 0, "deny[0]", "deny 0"},
		{"dot-dot cannot dodge a deny", denyPolicy, "web", "GET", "/x/../admin", false, ListDeny, 0, "deny[0]", "deny 0: path not canonical"},
		{"double slash cannot dodge a deny", denyPolicy, "web", "GET", "//admin", false, ListDeny, 0, "deny[0]", "deny 0: path not canonical"},
		{"dot segment cannot dodge a deny", denyPolicy, "web", "GET", "/./admin", false, ListDeny, 0, "deny[0]", "deny 0: path not canonical"},
		{"escaped slash cannot dodge a deny", denyPolicy, "web", "GET", "/x%2F..%2Fadmin", false, ListDeny, 0, "deny[0]", "deny 0: path not canonical"},
		{"backslash cannot dodge a deny", denyPolicy, "web", "GET", `/x\..\admin`, false, ListDeny, 0, "deny[0]", "deny 0: path not canonical"},
		{"any unclean path under a deny with paths", denyPolicy, "web", "GET", "/public/./x", false, ListDeny, 0, "deny[0]", "deny 0: path not canonical"},
		{"deny by method", denyPolicy, "web", "DELETE", "/x", false, ListDeny, 1, "deny[1]", "deny 1"},
		{"deny by method, other methods pass", denyPolicy, "web", "PUT", "/x", true, ListRules, 0, "rules[0]", "rule 0"},
		{"request method case matters", denyPolicy, "web", "delete", "/x", true, ListRules, 0, "rules[0]", "rule 0"},
		{"named deny, not this caller", denyPolicy, "admin", "DELETE", "/x", true, ListRules, 0, "rules[0]", "rule 0"},
		{"deny below an allowed path", denyPolicy, "enrollment", "POST", "/charge/refund/1", false, ListDeny, 2, "deny[2]", "deny 2"},
		{"allowed path beside a denied one", denyPolicy, "enrollment", "POST", "/charge/1", true, ListRules, 1, "rules[1]", "rule 1"},
		{"deny of another method leaves the path to the rules", denyPolicy, "enrollment", "GET", "/charge/refund", false, ListNone, -1, "default", "default deny"},
		{"deny without paths on any path", denyPolicy, "evil", "GET", "/x", false, ListDeny, 3, "deny[3]", "deny 3"},
		{"the first deny decides an unclean path", denyPolicy, "evil", "GET", "/x/../y", false, ListDeny, 0, "deny[0]", "deny 0: path not canonical"},
		{"deny without paths on an unclean path", policy.Authorization{Rules: denyPolicy.Rules, Deny: denyPolicy.Deny[3:]}, "evil", "GET", "/x/../y", false, ListDeny, 0, "deny[0]", "deny 0"},
		{"deny without From matches nobody", denyPolicy, "stranger", "GET", "/x", false, ListNone, -1, "default", "default deny"},
		{"deny under default allow", policy.Authorization{Default: "allow", Deny: denyPolicy.Deny}, "stranger", "GET", "/admin", false, ListDeny, 0, "deny[0]", "deny 0"},
		{"unclean path under default allow and a deny", policy.Authorization{Default: "allow", Deny: denyPolicy.Deny}, "stranger", "GET", "/a/../b", false, ListDeny, 0, "deny[0]", "deny 0: path not canonical"},
		{"unclean path under default allow and no deny with paths for the caller", policy.Authorization{Default: "allow", Deny: denyPolicy.Deny[1:2]}, "stranger", "GET", "/a/../b", true, ListNone, -1, "default", "default allow"},
		{"unclean path, deny with paths of another method", policy.Authorization{Default: "allow", Deny: []policy.Rule{{From: []string{"*"}, Paths: []string{"/admin"}, Methods: []string{"POST"}}}}, "web", "GET", "/x/../admin", true, ListNone, -1, "default", "default allow"},
		{"default allow", policy.Authorization{Default: "allow", Deny: denyPolicy.Deny}, "stranger", "GET", "/x", true, ListNone, -1, "default", "default allow"},
		{"no caller", denyPolicy, "", "GET", "/x", false, ListNone, -1, "", "no caller identity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewAuthorizer(tt.a).Authorize(tt.caller, tt.method, tt.path)
			want := Decision{Allow: tt.allow, Rule: tt.rule, List: tt.list, Name: tt.ruleName, Reason: tt.reason}
			if d != want {
				t.Errorf("Authorize(%q, %q, %q) = %+v, want %+v", tt.caller, tt.method, tt.path, d, want)
			}
		})
	}
}

func TestAuthorizerMode(t *testing.T) {
	var nilZ *Authorizer
	if nilZ.Audit() {
		t.Error("a nil Authorizer audits")
	}
	for _, tt := range []struct {
		mode  string
		audit bool
	}{{"", false}, {policy.AuthzEnforce, false}, {policy.AuthzAudit, true}, {"AUDIT", false}, {"dry-run", false}} {
		a := denyPolicy
		a.Mode = tt.mode
		z := NewAuthorizer(a)
		if z.Audit() != tt.audit {
			t.Errorf("mode %q: Audit() = %v, want %v", tt.mode, z.Audit(), tt.audit)
		}
		// The decisions are the same in every mode.
		if d := z.Authorize("web", "GET", "/admin"); d.Allow || d.Name != "deny[0]" {
			t.Errorf("mode %q: %+v, want denied by deny[0]", tt.mode, d)
		}
		if d := z.Authorize("web", "GET", "/x"); !d.Allow || d.Name != "rules[0]" {
			t.Errorf("mode %q: %+v, want allowed by rules[0]", tt.mode, d)
		}
	}
}

func TestRuleListString(t *testing.T) {
	for l, want := range map[RuleList]string{ListNone: "", ListRules: "rules", ListDeny: "deny", 9: ""} {
		if got := l.String(); got != want {
			t.Errorf("RuleList(%d).String() = %q, want %q", l, got, want)
		}
	}
}

// fiftyRulesTenDenies is fiftyRules behind a deny list of ten rules, the
// last one for any caller.
func fiftyRulesTenDenies() policy.Authorization {
	a := fiftyRules()
	for i := range 9 {
		a.Deny = append(a.Deny, policy.Rule{From: []string{fmt.Sprintf("svc-%d", i)}, Paths: []string{fmt.Sprintf("/api/v1/r%d/admin", i)}, Methods: []string{"DELETE"}})
	}
	a.Deny = append(a.Deny, policy.Rule{From: []string{"*"}, Paths: []string{"/admin"}})
	return a
}

func TestAuthorizeWithDenyNoAllocs(t *testing.T) {
	z := NewAuthorizer(fiftyRulesTenDenies())
	cases := append(authzCases[:len(authzCases):len(authzCases)], struct {
		name                 string
		caller, method, path string
		allow                bool
	}{"denied", "svc-48", "GET", "/admin/x", false})
	for _, c := range cases {
		if d := z.Authorize(c.caller, c.method, c.path); d.Allow != c.allow {
			t.Errorf("%s: %+v", c.name, d)
		}
		if n := testing.AllocsPerRun(1000, func() { _ = z.Authorize(c.caller, c.method, c.path) }); n != 0 {
			t.Errorf("%s: %v allocations per call", c.name, n)
		}
	}
}

func BenchmarkAuthorizeWithDeny(b *testing.B) {
	z := NewAuthorizer(fiftyRulesTenDenies())
	for _, c := range authzCases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if d := z.Authorize(c.caller, c.method, c.path); d.Allow != c.allow {
					b.Fatal(d)
				}
			}
		})
	}
}
