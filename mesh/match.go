package mesh

import (
	"net/http"
	"net/textproto"
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
	if m.pathPrefix != "" && !strings.HasPrefix(req.URL.Path, m.pathPrefix) {
		return false
	}
	if len(m.methods) > 0 && !m.matchMethod(req.Method) {
		return false
	}
	for i := range m.headers {
		if !anyEqual(req.Header[m.headers[i].key], m.headers[i].value) {
			return false
		}
	}
	return true
}

func (m *matcher) matchMethod(method string) bool {
	if method == "" {
		method = http.MethodGet
	}
	for _, want := range m.methods {
		if want == method {
			return true
		}
	}
	return false
}

func anyEqual(vals []string, want string) bool {
	for _, v := range vals {
		if v == want {
			return true
		}
	}
	return false
}
