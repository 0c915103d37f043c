package mesh

import (
	"net/http"
	"net/textproto"
	"slices"
	"strings"

	"github.com/inmesh/inmesh/policy"
)

// matcher is a compiled policy.Match. The zero value matches every request.
type matcher struct {
	pathPrefix string
	methods    []string     // upper case; empty: any
	headers    []headerPair // all must match
}

type headerPair struct {
	key   string // canonical MIME header key, also valid as lower-case gRPC metadata via lowerKey
	lower string
	value string
}

func compileMatch(m policy.Match) matcher {
	c := matcher{pathPrefix: m.PathPrefix}
	for _, meth := range m.Methods {
		c.methods = append(c.methods, strings.ToUpper(meth))
	}
	for k, v := range m.Headers {
		c.headers = append(c.headers, headerPair{
			key:   textproto.CanonicalMIMEHeaderKey(k),
			lower: strings.ToLower(k),
			value: v,
		})
	}
	return c
}

// matchHTTP reports whether req satisfies every condition. It does not
// allocate.
func (m *matcher) matchHTTP(req *http.Request) bool {
	if !m.matchPath(req.URL.Path, req.Method) {
		return false
	}
	for i := range m.headers {
		if !slices.Contains(req.Header[m.headers[i].key], m.headers[i].value) {
			return false
		}
	}
	return true
}

// matchPath checks the path prefix and the methods: the part of a match
// that HTTP requests and gRPC calls (path = full method, method = POST,
// see matchRPC) share.
func (m *matcher) matchPath(path, method string) bool {
	if m.pathPrefix != "" && !strings.HasPrefix(path, m.pathPrefix) {
		return false
	}
	return len(m.methods) == 0 || m.matchMethod(method)
}

func (m *matcher) matchMethod(method string) bool {
	if method == "" {
		method = http.MethodGet
	}
	return slices.Contains(m.methods, method)
}
