package core

import (
	"net/textproto"
	"slices"
	"strings"

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
