package policy

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// maxRegexLen bounds, in bytes, a regular expression of a route's match
// (path_regex, a header's or a query parameter's regex).
const maxRegexLen = 1024

// routeConditions checks the match conditions of issue 12 (path_exact,
// path_regex, header, query_param) of match m, at the path of the match.
func (v *validator) routeConditions(m *Match) {
	n := 0
	for _, p := range []string{m.PathPrefix, m.PathExact, m.PathRegex} {
		if p != "" {
			n++
		}
	}
	if n > 1 {
		v.add("at most one of path_prefix, path_exact and path_regex")
	}
	if m.PathExact != "" && !strings.HasPrefix(m.PathExact, "/") {
		v.addAt("path_exact", "must start with \"/\"")
	}
	if m.PathRegex != "" {
		v.regex("path_regex", m.PathRegex)
	}
	if len(m.Header) > 0 {
		mh := v.push("header")
		for i := range m.Header {
			mi := v.pushIndex(i)
			h := &m.Header[i]
			v.conditionName(h.Name)
			v.atMostOne("present, exact, prefix, suffix and regex", h.Present, h.Exact != "", h.Prefix != "", h.Suffix != "", h.Regex != "")
			if h.Regex != "" {
				v.regex("regex", h.Regex)
			}
			v.pop(mi)
		}
		v.pop(mh)
	}
	if len(m.QueryParam) > 0 {
		mq := v.push("query_param")
		for i := range m.QueryParam {
			mi := v.pushIndex(i)
			q := &m.QueryParam[i]
			if q.Name == "" {
				v.addAt("name", "a query parameter needs a name")
			}
			v.atMostOne("present, exact and regex", q.Present, q.Exact != "", q.Regex != "")
			if q.Regex != "" {
				v.regex("regex", q.Regex)
			}
			v.pop(mi)
		}
		v.pop(mq)
	}
}

// atMostOne reports a condition that sets more than one of the operators
// it names.
func (v *validator) atMostOne(names string, set ...bool) {
	n := 0
	for _, s := range set {
		if s {
			n++
		}
	}
	if n > 1 {
		v.add("at most one of %s", names)
	}
}

// conditionName checks the name of a header condition, at key name.
func (v *validator) conditionName(name string) {
	switch {
	case name == "":
		v.addAt("name", "a header condition needs a name")
	case !isToken(name):
		v.addAt("name", "invalid header name %q", name)
	}
}

// regex checks the RE2 expression at key: bounded, and compiling.
func (v *validator) regex(key, expr string) {
	if len(expr) > maxRegexLen {
		v.addAt(key, "must be at most %d bytes, got %d", maxRegexLen, len(expr))
		return
	}
	if _, err := regexp.Compile(expr); err != nil {
		v.addAt(key, "invalid regular expression: %v", err)
	}
}

// routeActions checks prefix_rewrite and request_headers of route r, at
// the path of the route.
func (v *validator) routeActions(r *Route) {
	if rw := r.PrefixRewrite; rw != "" {
		switch {
		case r.Match.PathPrefix == "" && r.Match.PathExact == "":
			v.addAt("prefix_rewrite", "needs match.path_prefix or match.path_exact, whose part of the path it replaces")
		case !strings.HasPrefix(rw, "/"):
			v.addAt("prefix_rewrite", "must start with \"/\"")
		case !validFieldValue(rw) || strings.ContainsAny(rw, "?#"):
			v.addAt("prefix_rewrite", "must be a path, without control characters, \"?\" or \"#\"")
		}
	}
	hm := r.RequestHeaders
	if hm == nil {
		return
	}
	mr := v.push("request_headers")
	lower := map[string]string{} // lower-case name -> where it is set
	for _, op := range []struct {
		key string
		m   map[string]string
	}{{"add", hm.Add}, {"set", hm.Set}} {
		if len(op.m) == 0 {
			continue
		}
		mo := v.push(op.key)
		for _, name := range sortedKeys(op.m, &v.headerKeys) {
			if why := unchangeable(name); why != "" {
				v.addAt(name, "%s", why)
				continue
			}
			l := strings.ToLower(name)
			if at, dup := lower[l]; dup {
				v.addAt(name, "header %q is changed twice (names are case-insensitive; also %s)", name, at)
				continue
			}
			lower[l] = op.key + "." + name
			if !validFieldValue(op.m[name]) {
				v.addAt(name, "invalid header value: control characters")
			}
		}
		v.pop(mo)
	}
	if len(hm.Remove) > 0 {
		mo := v.push("remove")
		for i, name := range hm.Remove {
			mi := v.pushIndex(i)
			if why := unchangeable(name); why != "" {
				v.add("%s", why)
			} else {
				l := strings.ToLower(name)
				if at, dup := lower[l]; dup {
					v.add("header %q is changed twice (names are case-insensitive; also %s)", name, at)
				}
				lower[l] = "remove"
			}
			v.pop(mi)
		}
		v.pop(mo)
	}
	v.pop(mr)
}

// reservedHeaders are the headers request_headers may not change: the
// hop-by-hop ones, those the transport writes (Host, Content-Length), and
// those gRPC reserves. The Inmesh-* headers, which the mesh owns, are
// refused by prefix.
var reservedHeaders = []string{
	"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer",
	"host", "content-length", "content-type",
}

// unchangeable says why request_headers may not change the header name,
// or "" when it may.
func unchangeable(name string) string {
	l := strings.ToLower(name)
	switch {
	case name == "":
		return "a header needs a name"
	case strings.HasPrefix(name, ":"):
		return "pseudo-header " + name + " cannot be changed"
	case !isToken(name):
		return "invalid header name " + strconv.Quote(name)
	case strings.HasPrefix(l, "inmesh-"):
		return "header " + name + " belongs to the mesh"
	case strings.HasPrefix(l, "grpc-"):
		return "header " + name + " is reserved by gRPC"
	case slices.Contains(reservedHeaders, l):
		return "header " + name + " is set by the transport, not by a route"
	}
	return ""
}

// validFieldValue reports whether s may be a header field value: no
// control characters but tab.
func validFieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
