package core

import (
	"fmt"
	"net/textproto"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/inmesh/inmesh/policy"
)

// Header is how a route's match reads the headers of a call: HTTP headers
// by canonical MIME key, gRPC metadata by lower-case key. HTTPHeader and
// Metadata are the map forms; an adapter whose headers live elsewhere (the
// outgoing metadata of a gRPC context) implements it on a pointer it has
// anyway. Maps and pointers convert to an interface without allocating.
type Header interface {
	Values(key HeaderKey) []string
}

// HeaderKey is the name of a header condition in both of its spellings.
type HeaderKey struct {
	Canonical string // canonical MIME header key ("X-Canary")
	Lower     string // lower case, as gRPC metadata keys are ("x-canary")
}

// HTTPHeader is an http.Header (canonical keys) as a Header.
type HTTPHeader map[string][]string

// Values returns the values of key.Canonical.
func (h HTTPHeader) Values(key HeaderKey) []string { return h[key.Canonical] }

// Metadata is gRPC metadata (lower-case keys) as a Header.
type Metadata map[string][]string

// Values returns the values of key.Lower.
func (m Metadata) Values(key HeaderKey) []string { return m[key.Lower] }

// Matcher is a compiled policy.Match. The zero value matches every call.
type Matcher struct {
	pathPrefix string
	pathExact  string         // "" when unset (a set one starts with "/")
	pathRegex  *regexp.Regexp // anchored; nil when unset
	regexText  string         // pathRegex as the policy spells it
	methods    []string       // upper case; empty: any
	headers    []headerPair   // all must match
	conds      []headerCond   // the header conditions, in policy order; all must hold
	query      []queryCond    // the query_param conditions, in policy order; all must hold
}

type headerPair struct {
	key   HeaderKey
	value string
}

// op is the operator of a header or query condition.
type op uint8

const (
	opPresent op = iota
	opExact
	opPrefix
	opSuffix
	opRegex
)

// test is one condition's operator and operand: whether a value satisfies
// it (present: any value does).
type test struct {
	op    op
	value string         // exact, prefix, suffix, or the regex's text
	re    *regexp.Regexp // anchored, for opRegex
}

func (t *test) holds(v string) bool {
	switch t.op {
	case opExact:
		return v == t.value
	case opPrefix:
		return strings.HasPrefix(v, t.value)
	case opSuffix:
		return strings.HasSuffix(v, t.value)
	case opRegex:
		return t.re.MatchString(v)
	}
	return true
}

// String is the condition as Why names it: present, exact "a".
func (t *test) String() string {
	names := [...]string{opPresent: "present", opExact: "exact", opPrefix: "prefix", opSuffix: "suffix", opRegex: "regex"}
	if t.op == opPresent {
		return names[opPresent]
	}
	return names[t.op] + " " + strconv.Quote(explainText(t.value))
}

// headerCond is a compiled policy.HeaderMatch. It holds when some value of
// the header satisfies its test (present: the header has a value, empty
// or not), or, inverted, when none does (present: the header is absent).
// Invert is the negation of the whole condition, so a route with a
// condition and one with its inversion share the calls between them.
type headerCond struct {
	key    HeaderKey
	test   test
	invert bool
}

// queryCond is a compiled policy.QueryParamMatch. It holds when some value
// of the parameter in the call's query satisfies its test (present: the
// parameter is there, with a value or without). An RPC has no query: a
// query condition never holds for one.
type queryCond struct {
	name string
	test test
}

// Regexes compiles the regular expressions of routes, anchored at both
// ends (a regex condition matches the whole value, as RE2's full match
// does), each once: a Registry keeps them across compilations.
type Regexes map[string]*regexp.Regexp

// compile returns expr compiled and anchored, from r when it is there.
func (r Regexes) compile(expr string) (*regexp.Regexp, error) {
	if re, ok := r[expr]; ok {
		return re, nil
	}
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		return nil, err
	}
	if r != nil {
		r[expr] = re
	}
	return re, nil
}

// neverMatches stands for a regex that did not compile: the policy
// validates them, so it is a safety net, and its condition never holds.
var neverMatches = regexp.MustCompile(`[^\x00-\x{10FFFF}]`)

// CompileMatch compiles m. A regex that does not compile (the policy
// validates them) makes its condition never hold.
func CompileMatch(m policy.Match) Matcher {
	c, _ := compileMatch(m, nil)
	return c
}

// compileMatch compiles m, its regexes through res (nil: compiled here).
// It returns the first regex that did not compile as err, with a Matcher
// in which that condition never holds.
func compileMatch(m policy.Match, res Regexes) (Matcher, error) {
	c := Matcher{pathPrefix: m.PathPrefix, pathExact: m.PathExact}
	var first error
	regex := func(expr string) *regexp.Regexp {
		re, err := res.compile(expr)
		if err != nil {
			if first == nil {
				first = fmt.Errorf("regex %q: %w", expr, err)
			}
			return neverMatches
		}
		return re
	}
	if m.PathRegex != "" {
		c.pathRegex, c.regexText = regex(m.PathRegex), m.PathRegex
	}
	for _, meth := range m.Methods {
		c.methods = append(c.methods, strings.ToUpper(meth))
	}
	for k, v := range m.Headers {
		c.headers = append(c.headers, headerPair{key: headerKey(k), value: v})
	}
	// In key order, so that Why names the same failing header every time.
	slices.SortFunc(c.headers, func(a, b headerPair) int { return strings.Compare(a.key.Lower, b.key.Lower) })
	for _, h := range m.Header {
		hc := headerCond{key: headerKey(h.Name), invert: h.Invert}
		switch {
		case h.Exact != "":
			hc.test = test{op: opExact, value: h.Exact}
		case h.Prefix != "":
			hc.test = test{op: opPrefix, value: h.Prefix}
		case h.Suffix != "":
			hc.test = test{op: opSuffix, value: h.Suffix}
		case h.Regex != "":
			hc.test = test{op: opRegex, value: h.Regex, re: regex(h.Regex)}
		}
		c.conds = append(c.conds, hc)
	}
	for _, q := range m.QueryParam {
		qc := queryCond{name: q.Name}
		switch {
		case q.Exact != "":
			qc.test = test{op: opExact, value: q.Exact}
		case q.Regex != "":
			qc.test = test{op: opRegex, value: q.Regex, re: regex(q.Regex)}
		}
		c.query = append(c.query, qc)
	}
	return c, first
}

// headerKey is name in both of its spellings.
func headerKey(name string) HeaderKey {
	return HeaderKey{Canonical: textproto.CanonicalMIMEHeaderKey(name), Lower: strings.ToLower(name)}
}

// Match reports whether req satisfies every condition: the path form
// (path_prefix, path_exact or path_regex) against the path (an RPC's full
// method), methods (an RPC is a POST, over HTTP/2), headers, the header
// conditions and the query_param conditions. It does not allocate, but to
// unescape a query parameter written with escapes.
func (m *Matcher) Match(req *Request) bool {
	if !m.pathMatches(req.Path) {
		return false
	}
	if len(m.methods) > 0 {
		method := req.Method
		if method == "" {
			method = "GET"
		}
		if !slices.Contains(m.methods, method) {
			return false
		}
	}
	for i := range m.headers {
		if req.Header == nil || !slices.Contains(req.Header.Values(m.headers[i].key), m.headers[i].value) {
			return false
		}
	}
	for i := range m.conds {
		if !m.conds[i].holds(req.Header) {
			return false
		}
	}
	for i := range m.query {
		if req.RPC {
			return false
		}
		if _, ok := m.query[i].find(req.RawQuery); !ok {
			return false
		}
	}
	return true
}

func (m *Matcher) pathMatches(path string) bool {
	switch {
	case m.pathPrefix != "":
		return strings.HasPrefix(path, m.pathPrefix)
	case m.pathExact != "":
		return path == m.pathExact
	case m.pathRegex != nil:
		return m.pathRegex.MatchString(path)
	}
	return true
}

// holds reports whether the condition holds for the header h.
func (c *headerCond) holds(h Header) bool {
	var vals []string
	if h != nil {
		vals = h.Values(c.key)
	}
	_, some := c.satisfied(vals)
	return some != c.invert
}

// satisfied returns the first of vals that satisfies c's test, and whether
// one does.
func (c *headerCond) satisfied(vals []string) (string, bool) {
	for _, v := range vals {
		if c.test.holds(v) {
			return v, true
		}
	}
	return "", false
}

// find returns the first value of q's parameter in the raw query that
// satisfies q's test, and whether one does. Pairs are read as
// url.ParseQuery reads them (split at "&", a pair holding ";" skipped, a
// name or value with a bad escape skipped); only a name or value written
// with escapes is unescaped, and only then does find allocate.
func (q *queryCond) find(raw string) (string, bool) {
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" || strings.IndexByte(pair, ';') >= 0 {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		if escaped(k) {
			var err error
			if k, err = url.QueryUnescape(k); err != nil {
				continue
			}
		}
		if k != q.name {
			continue
		}
		if escaped(v) {
			var err error
			if v, err = url.QueryUnescape(v); err != nil {
				continue
			}
		}
		if q.test.holds(v) {
			return v, true
		}
	}
	return "", false
}

// firstValue returns the first value of q's parameter in raw, and whether
// there is one, for Why.
func (q *queryCond) firstValue(raw string) (string, bool) {
	present := queryCond{name: q.name}
	return present.find(raw)
}

func escaped(s string) bool { return strings.ContainsAny(s, "%+") }

// maxExplainText bounds, in bytes, the text of a request (its path, a
// header's value) that Why quotes.
const maxExplainText = 64

// Why says why req does not satisfy m, naming the first condition that
// fails in the order Match checks them (the path, methods, headers by
// name, then the header and query_param conditions in policy order):
// "path /refund does not start with /charge", "path /a is not /b", "path
// /a does not match regex \"/v[0-9]+\"", "method GET not in [POST]",
// `header x-canary: want "true", got none`, `header x-env: prefix "st" not
// matched (got "prod")`, "header x-env: absent", `header x-beta: present,
// and the condition is inverted`, "query debug: absent". It returns ""
// when m matches req. The request's own text is quoted bounded and
// sanitized. It is for Explain, not for the call path: it allocates.
func (m *Matcher) Why(req *Request) string {
	if !m.pathMatches(req.Path) {
		switch {
		case m.pathPrefix != "":
			return fmt.Sprintf("path %s does not start with %s", explainText(req.Path), m.pathPrefix)
		case m.pathExact != "":
			return fmt.Sprintf("path %s is not %s", explainText(req.Path), m.pathExact)
		default:
			return fmt.Sprintf("path %s does not match regex %q", explainText(req.Path), explainText(m.regexText))
		}
	}
	if len(m.methods) > 0 {
		method := req.Method
		if method == "" {
			method = "GET"
		}
		if !slices.Contains(m.methods, method) {
			return fmt.Sprintf("method %s not in [%s]", explainText(method), strings.Join(m.methods, " "))
		}
	}
	for i := range m.headers {
		hp := &m.headers[i]
		var got []string
		if req.Header != nil {
			got = req.Header.Values(hp.key)
		}
		if slices.Contains(got, hp.value) {
			continue
		}
		switch len(got) {
		case 0:
			return fmt.Sprintf("header %s: want %q, got none", hp.key.Lower, hp.value)
		default:
			return fmt.Sprintf("header %s: want %q, got %s", hp.key.Lower, hp.value, gotValues(got))
		}
	}
	for i := range m.conds {
		c := &m.conds[i]
		if c.holds(req.Header) {
			continue
		}
		var vals []string
		if req.Header != nil {
			vals = req.Header.Values(c.key)
		}
		switch {
		case c.invert && c.test.op == opPresent:
			return fmt.Sprintf("header %s: present, and the condition is inverted", c.key.Lower)
		case c.invert:
			v, _ := c.satisfied(vals)
			return fmt.Sprintf("header %s: %s matched %q, and the condition is inverted", c.key.Lower, &c.test, explainText(v))
		case len(vals) == 0:
			return fmt.Sprintf("header %s: absent", c.key.Lower)
		default:
			return fmt.Sprintf("header %s: %s not matched (got %s)", c.key.Lower, &c.test, gotValues(vals))
		}
	}
	for i := range m.query {
		q := &m.query[i]
		if req.RPC {
			return fmt.Sprintf("query %s: an RPC has no query", explainText(q.name))
		}
		if _, ok := q.find(req.RawQuery); ok {
			continue
		}
		v, present := q.firstValue(req.RawQuery)
		if !present {
			return fmt.Sprintf("query %s: absent", explainText(q.name))
		}
		return fmt.Sprintf("query %s: %s not matched (got %q)", explainText(q.name), &q.test, explainText(v))
	}
	return ""
}

// gotValues quotes the first of vals, and counts the others.
func gotValues(vals []string) string {
	s := strconv.Quote(explainText(vals[0]))
	if len(vals) > 1 {
		s += fmt.Sprintf(" and %d more", len(vals)-1)
	}
	return s
}

// explainText is s as PeerText makes it, cut to maxExplainText bytes.
func explainText(s string) string {
	s = PeerText(s)
	if len(s) <= maxExplainText {
		return s
	}
	cut := maxExplainText - 3
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// matchRegexes lists the regexes of m.
func matchRegexes(m *policy.Match) []string {
	var out []string
	if m.PathRegex != "" {
		out = append(out, m.PathRegex)
	}
	for i := range m.Header {
		if m.Header[i].Regex != "" {
			out = append(out, m.Header[i].Regex)
		}
	}
	for i := range m.QueryParam {
		if m.QueryParam[i].Regex != "" {
			out = append(out, m.QueryParam[i].Regex)
		}
	}
	return out
}
