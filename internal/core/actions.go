package core

import (
	"net/url"
	"slices"
	"strings"

	"github.com/inmesh/inmesh/policy"
)

// Rewrite is a route's prefix_rewrite, compiled: the part of the path
// that the route's path_prefix (or path_exact) matched is replaced by To
// in the request sent. It applies to HTTP calls; an RPC's method is never
// rewritten.
type Rewrite struct {
	Prefix string // the path_prefix or path_exact replaced
	To     string // the replacement, decoded as URL.Path is
	ToRaw  string // To escaped, as URL.RawPath is
}

// Path returns path rewritten and true, or path and false when it does not
// start with the prefix (it always does for a call the route matched).
func (rw *Rewrite) Path(path string) (string, bool) {
	if !strings.HasPrefix(path, rw.Prefix) {
		return path, false
	}
	return rw.To + path[len(rw.Prefix):], true
}

// HeaderActions are a route's request_headers, compiled: applied to the
// request sent, per call, before its first attempt, as Remove, then Set,
// then Add (the policy changes a header in one of them at most). Each list
// is in name order.
type HeaderActions struct {
	Remove []HeaderKey
	Set    []HeaderValue // replaces every value
	Add    []HeaderValue // appends a value
}

// HeaderValue is a header with one value, also as a one-value slice
// (capped) that calls share: no one writes a request's header values in
// place (a RoundTripper must not modify its request), and an append to it
// copies.
type HeaderValue struct {
	Key    HeaderKey
	Value  string
	Values []string
}

// compileActions compiles the actions of rr: nil for each one the route
// does not have, so a call without them pays nothing.
func compileActions(rr *policy.ResolvedRoute) (*Rewrite, *HeaderActions) {
	var rw *Rewrite
	if rr.PrefixRewrite != "" {
		prefix := rr.Match.PathPrefix
		if prefix == "" {
			prefix = rr.Match.PathExact
		}
		if prefix != "" {
			rw = &Rewrite{Prefix: prefix, To: rr.PrefixRewrite, ToRaw: (&url.URL{Path: rr.PrefixRewrite}).EscapedPath()}
		}
	}
	hm := rr.RequestHeaders
	if hm == nil || len(hm.Add) == 0 && len(hm.Set) == 0 && len(hm.Remove) == 0 {
		return rw, nil
	}
	ha := &HeaderActions{Set: headerValues(hm.Set), Add: headerValues(hm.Add)}
	for _, name := range hm.Remove {
		ha.Remove = append(ha.Remove, headerKey(name))
	}
	slices.SortFunc(ha.Remove, func(a, b HeaderKey) int { return strings.Compare(a.Lower, b.Lower) })
	return rw, ha
}

func headerValues(m map[string]string) []HeaderValue {
	out := make([]HeaderValue, 0, len(m))
	for k, v := range m {
		out = append(out, HeaderValue{Key: headerKey(k), Value: v, Values: []string{v}[:1:1]})
	}
	slices.SortFunc(out, func(a, b HeaderValue) int { return strings.Compare(a.Key.Lower, b.Key.Lower) })
	return out
}

// Apply applies ha to the header map h, keyed by the spelling key picks
// (canonical for HTTP, lower case for gRPC metadata). h must be the call's
// own copy: values are replaced or appended to, never written in place,
// so the caller's slices, which h may share capped, stay as they were.
func (ha *HeaderActions) Apply(h map[string][]string, key func(HeaderKey) string) {
	for _, k := range ha.Remove {
		delete(h, key(k))
	}
	for _, hv := range ha.Set {
		h[key(hv.Key)] = hv.Values
	}
	for _, hv := range ha.Add {
		k := key(hv.Key)
		if v := h[k]; len(v) > 0 {
			h[k] = append(v[:len(v):len(v)], hv.Value)
		} else {
			h[k] = hv.Values
		}
	}
}

// CanonicalKey and LowerKey are the key spellings of HTTP headers and of
// gRPC metadata, for Apply.
func CanonicalKey(k HeaderKey) string { return k.Canonical }
func LowerKey(k HeaderKey) string     { return k.Lower }
