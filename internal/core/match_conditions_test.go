package core

import (
	"io"
	"log/slog"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/telemetry"
)

// TestMatchConditions: every operator of the header and query_param
// conditions, inverted or not, on absent, single and repeated values; the
// path forms; the regex anchoring (a full match of the whole value); and
// Why, which names the failing condition exactly when Match is false.
func TestMatchConditions(t *testing.T) {
	hdr := func(name string, vals ...string) HTTPHeader { return HTTPHeader{name: vals} }
	tests := []struct {
		name string
		m    policy.Match
		req  Request
		why  string // "": matches
	}{
		// Paths.
		{"exact", policy.Match{PathExact: "/charge"}, Request{Path: "/charge"}, ""},
		{"exact longer", policy.Match{PathExact: "/charge"}, Request{Path: "/charge/1"}, "path /charge/1 is not /charge"},
		{"exact rpc", policy.Match{PathExact: "/billing.Billing/Charge"}, Request{Path: "/billing.Billing/Charge", RPC: true}, ""},
		{"regex", policy.Match{PathRegex: "/v[0-9]+/.*"}, Request{Path: "/v2/charge"}, ""},
		{"regex anchored at the end", policy.Match{PathRegex: "/v[0-9]+"}, Request{Path: "/v2/charge"}, `path /v2/charge does not match regex "/v[0-9]+"`},
		{"regex anchored at the start", policy.Match{PathRegex: "v[0-9]+/.*"}, Request{Path: "/v2/charge"}, `path /v2/charge does not match regex "v[0-9]+/.*"`},
		{"regex alternation is whole", policy.Match{PathRegex: "/a|/b"}, Request{Path: "/b"}, ""},
		{"regex alternation anchored", policy.Match{PathRegex: "/a|/b"}, Request{Path: "/bc"}, `path /bc does not match regex "/a|/b"`},
		{"regex multiline flag stays inside", policy.Match{PathRegex: "(?m)/a$"}, Request{Path: "/a\n/b"}, `path /a /b does not match regex "(?m)/a$"`},
		{"regex rpc method", policy.Match{PathRegex: `/billing\.Billing/.*`}, Request{Path: "/billing.Billing/Refund", RPC: true}, ""},

		// Header operators.
		{"present (no operator)", policy.Match{Header: []policy.HeaderMatch{{Name: "x-env"}}}, Request{Header: hdr("X-Env", "")}, ""},
		{"present absent", policy.Match{Header: []policy.HeaderMatch{{Name: "x-env", Present: true}}}, Request{}, "header x-env: absent"},
		{"present inverted absent", policy.Match{Header: []policy.HeaderMatch{{Name: "x-env", Present: true, Invert: true}}}, Request{}, ""},
		{"present inverted", policy.Match{Header: []policy.HeaderMatch{{Name: "x-env", Invert: true}}}, Request{Header: hdr("X-Env", "a")}, "header x-env: present, and the condition is inverted"},
		{"exact", policy.Match{Header: []policy.HeaderMatch{{Name: "x-env", Exact: "prod"}}}, Request{Header: hdr("X-Env", "prod")}, ""},
		{"exact is case-sensitive", policy.Match{Header: []policy.HeaderMatch{{Name: "x-env", Exact: "prod"}}}, Request{Header: hdr("X-Env", "Prod")}, `header x-env: exact "prod" not matched (got "Prod")`},
		{"exact absent", policy.Match{Header: []policy.HeaderMatch{{Name: "x-env", Exact: "prod"}}}, Request{}, "header x-env: absent"},
		{"prefix", policy.Match{Header: []policy.HeaderMatch{{Name: "x-env", Prefix: "st"}}}, Request{Header: hdr("X-Env", "staging")}, ""},
		{"prefix not", policy.Match{Header: []policy.HeaderMatch{{Name: "X-ENV", Prefix: "st"}}}, Request{Header: hdr("X-Env", "prod")}, `header x-env: prefix "st" not matched (got "prod")`},
		{"suffix", policy.Match{Header: []policy.HeaderMatch{{Name: "x-env", Suffix: "-eu"}}}, Request{Header: hdr("X-Env", "prod-eu")}, ""},
		{"suffix not", policy.Match{Header: []policy.HeaderMatch{{Name: "x-env", Suffix: "-eu"}}}, Request{Header: hdr("X-Env", "prod-us")}, `header x-env: suffix "-eu" not matched (got "prod-us")`},
		{"regex", policy.Match{Header: []policy.HeaderMatch{{Name: "x-env", Regex: "prod-[a-z]{2}"}}}, Request{Header: hdr("X-Env", "prod-eu")}, ""},
		{"regex whole value", policy.Match{Header: []policy.HeaderMatch{{Name: "x-env", Regex: "prod"}}}, Request{Header: hdr("X-Env", "preprod")}, `header x-env: regex "prod" not matched (got "preprod")`},
		{"regex empty value", policy.Match{Header: []policy.HeaderMatch{{Name: "x-env", Regex: ".*"}}}, Request{Header: hdr("X-Env", "")}, ""},
		{"regex absent", policy.Match{Header: []policy.HeaderMatch{{Name: "x-env", Regex: ".*"}}}, Request{}, "header x-env: absent"},

		// Repeated headers: some value satisfies; inverted, none does.
		{"repeated, second value", policy.Match{Header: []policy.HeaderMatch{{Name: "x-env", Exact: "prod"}}}, Request{Header: hdr("X-Env", "dev", "prod")}, ""},
		{"repeated, none", policy.Match{Header: []policy.HeaderMatch{{Name: "x-env", Prefix: "p"}}}, Request{Header: hdr("X-Env", "dev", "qa", "st")}, `header x-env: prefix "p" not matched (got "dev" and 2 more)`},
		{"repeated inverted, one matches", policy.Match{Header: []policy.HeaderMatch{{Name: "x-env", Exact: "prod", Invert: true}}}, Request{Header: hdr("X-Env", "dev", "prod")}, `header x-env: exact "prod" matched "prod", and the condition is inverted`},
		{"repeated inverted, none matches", policy.Match{Header: []policy.HeaderMatch{{Name: "x-env", Exact: "prod", Invert: true}}}, Request{Header: hdr("X-Env", "dev", "qa")}, ""},
		{"inverted absent", policy.Match{Header: []policy.HeaderMatch{{Name: "x-env", Prefix: "st", Invert: true}}}, Request{}, ""},
		{"comma is no separator", policy.Match{Header: []policy.HeaderMatch{{Name: "x-env", Exact: "prod"}}}, Request{Header: hdr("X-Env", "dev,prod")}, `header x-env: exact "prod" not matched (got "dev,prod")`},
		{"metadata", policy.Match{Header: []policy.HeaderMatch{{Name: "X-Env", Prefix: "st"}}}, Request{Header: Metadata{"x-env": {"staging"}}, RPC: true}, ""},
		{"conditions in order", policy.Match{Header: []policy.HeaderMatch{{Name: "b", Exact: "1"}, {Name: "a", Exact: "1"}}}, Request{}, "header b: absent"},
		{"all must hold", policy.Match{Header: []policy.HeaderMatch{{Name: "a"}, {Name: "b", Exact: "2"}}}, Request{Header: HTTPHeader{"A": {"1"}, "B": {"3"}}}, `header b: exact "2" not matched (got "3")`},

		// Query parameters.
		{"query present", policy.Match{QueryParam: []policy.QueryParamMatch{{Name: "debug", Present: true}}}, Request{RawQuery: "a=1&debug"}, ""},
		{"query present empty", policy.Match{QueryParam: []policy.QueryParamMatch{{Name: "debug"}}}, Request{RawQuery: "debug="}, ""},
		{"query absent", policy.Match{QueryParam: []policy.QueryParamMatch{{Name: "debug"}}}, Request{RawQuery: "a=1&debugx=1"}, "query debug: absent"},
		{"query no query", policy.Match{QueryParam: []policy.QueryParamMatch{{Name: "debug"}}}, Request{}, "query debug: absent"},
		{"query exact", policy.Match{QueryParam: []policy.QueryParamMatch{{Name: "v", Exact: "2"}}}, Request{RawQuery: "v=1&v=2"}, ""},
		{"query exact not", policy.Match{QueryParam: []policy.QueryParamMatch{{Name: "v", Exact: "2"}}}, Request{RawQuery: "v=1&v=3"}, `query v: exact "2" not matched (got "1")`},
		{"query escaped", policy.Match{QueryParam: []policy.QueryParamMatch{{Name: "a b", Exact: "c&d"}}}, Request{RawQuery: "a+b=c%26d"}, ""},
		{"query bad escape skipped", policy.Match{QueryParam: []policy.QueryParamMatch{{Name: "v", Exact: "1"}}}, Request{RawQuery: "v=%zz&v=1"}, ""},
		{"query semicolon skipped", policy.Match{QueryParam: []policy.QueryParamMatch{{Name: "v", Exact: "1"}}}, Request{RawQuery: "v=1;x=2"}, "query v: absent"},
		{"query regex", policy.Match{QueryParam: []policy.QueryParamMatch{{Name: "id", Regex: "[0-9]+"}}}, Request{RawQuery: "id=123"}, ""},
		{"query regex whole", policy.Match{QueryParam: []policy.QueryParamMatch{{Name: "id", Regex: "[0-9]+"}}}, Request{RawQuery: "id=12a"}, `query id: regex "[0-9]+" not matched (got "12a")`},
		{"query rpc", policy.Match{QueryParam: []policy.QueryParamMatch{{Name: "debug"}}}, Request{Path: "/a.B/C", RPC: true, RawQuery: "debug"}, "query debug: an RPC has no query"},

		// Order: path, methods, headers, conditions, query.
		{"path before conditions", policy.Match{PathExact: "/a", Header: []policy.HeaderMatch{{Name: "x"}}}, Request{Path: "/b"}, "path /b is not /a"},
		{"headers before conditions", policy.Match{Headers: map[string]string{"y": "1"}, Header: []policy.HeaderMatch{{Name: "x"}}}, Request{}, `header y: want "1", got none`},
		{"conditions before query", policy.Match{Header: []policy.HeaderMatch{{Name: "x"}}, QueryParam: []policy.QueryParamMatch{{Name: "q"}}}, Request{}, "header x: absent"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := compileMatch(tc.m, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Why(&tc.req); got != tc.why {
				t.Errorf("Why = %q, want %q", got, tc.why)
			}
			if got := m.Match(&tc.req); got != (tc.why == "") {
				t.Errorf("Match = %v, want %v", got, tc.why == "")
			}
		})
	}
}

// TestCompileMatchBadRegex: a regex that does not compile (validation
// refuses it) is reported, and its condition never holds.
func TestCompileMatchBadRegex(t *testing.T) {
	m, err := compileMatch(policy.Match{Header: []policy.HeaderMatch{{Name: "x", Regex: "("}}}, nil)
	if err == nil {
		t.Fatal("no error")
	}
	if m.Match(&Request{Header: HTTPHeader{"X": {"("}}}) {
		t.Error("a bad regex matched")
	}
}

// TestRegexesShared: compileMatch compiles each regex once through the
// Regexes it is given.
func TestRegexesShared(t *testing.T) {
	res := Regexes{}
	a, _ := compileMatch(policy.Match{PathRegex: "/a.*"}, res)
	b, _ := compileMatch(policy.Match{PathRegex: "/a.*"}, res)
	if a.pathRegex != b.pathRegex || len(res) != 1 {
		t.Errorf("regex compiled twice: %p %p, %d cached", a.pathRegex, b.pathRegex, len(res))
	}
}

// refMatch is a reference of the header and query conditions, written the
// slow and obvious way: url.ParseQuery, regexp.MatchString anchored per
// call, a loop over every value.
func refMatch(m policy.Match, hdr map[string][]string, rawQuery string) bool {
	for _, h := range m.Header {
		vals := hdr[strings.ToLower(h.Name)]
		some := false
		for _, v := range vals {
			var ok bool
			switch {
			case h.Exact != "":
				ok = v == h.Exact
			case h.Prefix != "":
				ok = strings.HasPrefix(v, h.Prefix)
			case h.Suffix != "":
				ok = strings.HasSuffix(v, h.Suffix)
			case h.Regex != "":
				ok, _ = regexp.MatchString("^(?:"+h.Regex+")$", v)
			default:
				ok = true
			}
			some = some || ok
		}
		if some == h.Invert {
			return false
		}
	}
	q, _ := url.ParseQuery(rawQuery)
	for _, c := range m.QueryParam {
		vals, present := q[c.Name]
		if !present {
			return false
		}
		ok := false
		for _, v := range vals {
			switch {
			case c.Exact != "":
				ok = ok || v == c.Exact
			case c.Regex != "":
				r, _ := regexp.MatchString("^(?:"+c.Regex+")$", v)
				ok = ok || r
			default:
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// FuzzMatch checks the matcher's header and query conditions against
// refMatch, on fuzzed values and queries.
func FuzzMatch(f *testing.F) {
	f.Add("st", "staging,prod", "v=1&debug&id=%31%32", uint8(0))
	f.Add("p", "", "a+b=c%26d;x", uint8(7))
	f.Add("", "x", "v=%zz&v=1", uint8(13))
	f.Fuzz(func(t *testing.T, operand, values, rawQuery string, sel uint8) {
		var h policy.HeaderMatch
		h.Name = "x-env"
		switch sel % 5 {
		case 1:
			h.Exact = operand
		case 2:
			h.Prefix = operand
		case 3:
			h.Suffix = operand
		case 4:
			h.Regex = regexp.QuoteMeta(operand) + ".*"
		}
		h.Invert = sel&8 != 0
		var q policy.QueryParamMatch
		q.Name = "v"
		switch (sel >> 4) % 3 {
		case 1:
			q.Exact = operand
		case 2:
			q.Regex = "[0-9]*" + regexp.QuoteMeta(operand)
		}
		pm := policy.Match{Header: []policy.HeaderMatch{h}, QueryParam: []policy.QueryParamMatch{q}}
		var vals []string
		if values != "" {
			vals = strings.Split(values, ",")
		}
		hdr := map[string][]string{}
		if vals != nil {
			hdr["x-env"] = vals
		}
		m, err := compileMatch(pm, nil)
		if err != nil {
			t.Skip()
		}
		req := Request{Header: Metadata(hdr), RawQuery: rawQuery}
		want := refMatch(pm, hdr, rawQuery)
		if got := m.Match(&req); got != want {
			t.Fatalf("Match(%q, %q) = %v, reference %v (condition %+v %+v)", vals, rawQuery, got, want, h, q)
		}
		if (m.Why(&req) == "") != want {
			t.Fatalf("Why = %q, reference %v", m.Why(&req), want)
		}
	})
}

// benchRoutes is a route table of 10 routes with path regex, header and
// query conditions; each of the first 9 fails on its last condition, the
// query's value, so every condition of every route is evaluated, and the
// call matches the last.
func benchRoutes() []Matcher {
	var out []Matcher
	for i := range 10 {
		out = append(out, CompileMatch(policy.Match{
			PathRegex:  "/api/v[0-9]+/.*",
			Methods:    []string{"GET", "POST"},
			Header:     []policy.HeaderMatch{{Name: "x-env", Prefix: "st"}, {Name: "x-tenant", Regex: "t[0-9]+"}, {Name: "x-beta", Invert: true}, {Name: "accept", Suffix: "*"}},
			QueryParam: []policy.QueryParamMatch{{Name: "debug", Exact: strconv.Itoa(10 - i)}},
		}))
	}
	return out
}

// BenchmarkMatchTable is a lookup through 10 routes with header, regex
// and query conditions: no allocation.
func BenchmarkMatchTable(b *testing.B) {
	routes := benchRoutes()
	req := &Request{Path: "/api/v2/charge", Method: "GET", RawQuery: "a=b&debug=1",
		Header: HTTPHeader{"X-Env": {"staging"}, "X-Tenant": {"t42"}, "Accept": {"*/*"}}}
	b.ReportAllocs()
	for b.Loop() {
		i := 0
		for i < len(routes) && !routes[i].Match(req) {
			i++
		}
		if i != 9 {
			b.Fatalf("matched route %d", i)
		}
	}
}

// TestCompileKeepsRegexes: a recompilation (new endpoints, a reload that
// keeps a regex) reuses the compiled regexes of the last one; a regex no
// route uses any more is dropped.
func TestCompileKeepsRegexes(t *testing.T) {
	in, err := telemetry.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Close() })
	env := &Env{Clock: clocktest.NewFake(epoch), Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Instr: in}
	compile := func(old *Registry, routes string) (*Destination, *Registry) {
		doc, err := policy.Parse([]byte("services:\n  billing:\n    endpoints: [{address: 10.0.0.1:80}]\n    routes: " + routes + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		snap, err := policy.NewSnapshot(doc, "test")
		if err != nil {
			t.Fatal(err)
		}
		dests, next := Compile(env, old, snap, discovery.StaticOf(snap))
		return dests["billing"], next
	}
	const two = `[{match: {path_regex: "/a.*", header: [{name: x, regex: "[0-9]+"}]}}, {match: {query_param: [{name: q, regex: "/a.*"}]}}]`
	d1, reg := compile(NewRegistry(), two)
	if len(reg.regexes) != 2 || d1.Routes[0].Match.pathRegex != d1.Routes[1].Match.query[0].test.re {
		t.Fatalf("%d regexes compiled; one regex not shared between routes", len(reg.regexes))
	}
	d2, reg2 := compile(reg, two)
	if d2.Routes[0].Match.pathRegex != d1.Routes[0].Match.pathRegex || d2.Routes[0].Match.conds[0].test.re != d1.Routes[0].Match.conds[0].test.re {
		t.Error("a recompilation compiled the regexes again")
	}
	_, reg3 := compile(reg2, `[{match: {path_regex: "/a.*"}}]`)
	if len(reg3.regexes) != 1 {
		t.Errorf("%d regexes kept, want the one in use", len(reg3.regexes))
	}
}
