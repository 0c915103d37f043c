package core

import (
	"fmt"
	"net/textproto"
	"slices"
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
	methods    []string     // upper case; empty: any
	headers    []headerPair // all must match
}

type headerPair struct {
	key   HeaderKey
	value string
}

// CompileMatch compiles m.
func CompileMatch(m policy.Match) Matcher {
	c := Matcher{pathPrefix: m.PathPrefix}
	for _, meth := range m.Methods {
		c.methods = append(c.methods, strings.ToUpper(meth))
	}
	for k, v := range m.Headers {
		c.headers = append(c.headers, headerPair{
			key:   HeaderKey{Canonical: textproto.CanonicalMIMEHeaderKey(k), Lower: strings.ToLower(k)},
			value: v,
		})
	}
	// In key order, so that Why names the same failing header every time.
	slices.SortFunc(c.headers, func(a, b headerPair) int { return strings.Compare(a.key.Lower, b.key.Lower) })
	return c
}

// Match reports whether req satisfies every condition: path_prefix against
// the path (an RPC's full method), methods (an RPC is a POST, over HTTP/2),
// and headers. It does not allocate.
func (m *Matcher) Match(req *Request) bool {
	if m.pathPrefix != "" && !strings.HasPrefix(req.Path, m.pathPrefix) {
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
	return true
}

// maxExplainText bounds, in bytes, the text of a request (its path, a
// header's value) that Why quotes.
const maxExplainText = 64

// Why says why req does not satisfy m, naming the first condition that
// fails in the order Match checks them (path_prefix, methods, then headers
// by name): "path /refund does not start with /charge", "method GET not in
// [POST]", `header x-canary: want "true", got none`. It returns "" when m
// matches req. The request's own text is quoted bounded and sanitized. It
// is for Explain, not for the call path: it allocates.
func (m *Matcher) Why(req *Request) string {
	if m.pathPrefix != "" && !strings.HasPrefix(req.Path, m.pathPrefix) {
		return fmt.Sprintf("path %s does not start with %s", explainText(req.Path), m.pathPrefix)
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
		case 1:
			return fmt.Sprintf("header %s: want %q, got %q", hp.key.Lower, hp.value, explainText(got[0]))
		default:
			return fmt.Sprintf("header %s: want %q, got %q and %d more", hp.key.Lower, hp.value, explainText(got[0]), len(got)-1)
		}
	}
	return ""
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
