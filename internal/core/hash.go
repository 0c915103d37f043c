package core

import (
	"net"
	"net/textproto"
	"os"
	"strings"
	"sync"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/policy"
)

// Hasher computes the hash of a request from a route's hash policies, for
// the ring_hash and maglev load balancers (Envoy's hash policies). It is
// immutable and safe for concurrent use.
//
// The policies are tried in order. A policy produces a value when its
// input is in the request:
//
//   - header: the first value of the header (later values are ignored);
//     gRPC reads the call's outgoing metadata, by lower-case key;
//   - cookie: the value of the first cookie of that name in the Cookie
//     header (quotes around it removed); never for gRPC;
//   - query_parameter: the value of the first parameter of that name in
//     the raw query, as written (not unescaped); never for gRPC;
//   - source_ip: the caller's own address. The mesh runs in the calling
//     process, so this is constant: every call of the process goes to one
//     endpoint, as with an Envoy sidecar hashing its own application's
//     address.
//
// The values produced are combined (CombineHash); a terminal policy that
// produced a value ends the list. When none produced one, the request has
// no hash and the balancer picks as random does (Envoy's behaviour).
type Hasher struct {
	policies []hashPolicy
}

type hashKind uint8

const (
	hashHeader hashKind = iota
	hashCookie
	hashQuery
	hashSourceIP
)

type hashPolicy struct {
	kind     hashKind
	header   HeaderKey // hashHeader
	name     string    // the cookie or query parameter
	terminal bool
}

// cookieKey is the Cookie header.
var cookieKey = HeaderKey{Canonical: "Cookie", Lower: "cookie"}

// NewHasher compiles the hash policies of a route; nil when it has none.
func NewHasher(hash *policy.HashLB) *Hasher {
	if hash == nil || len(hash.Policies) == 0 {
		return nil
	}
	h := &Hasher{policies: make([]hashPolicy, len(hash.Policies))}
	for i, p := range hash.Policies {
		hp := &h.policies[i]
		hp.terminal = p.Terminal
		switch {
		case p.Header != "":
			hp.kind = hashHeader
			hp.header = HeaderKey{Canonical: textproto.CanonicalMIMEHeaderKey(p.Header), Lower: strings.ToLower(p.Header)}
		case p.Cookie != "":
			hp.kind, hp.name = hashCookie, p.Cookie
		case p.QueryParameter != "":
			hp.kind, hp.name = hashQuery, p.QueryParameter
		default:
			hp.kind = hashSourceIP
		}
	}
	return h
}

// Hash returns the hash of req, and false when no policy produced a
// value.
//
// HOT: no allocations (beyond what req.Header's Values does).
func (h *Hasher) Hash(req *Request) (uint64, bool) {
	var acc uint64
	ok := false
	for i := range h.policies {
		p := &h.policies[i]
		v, found := p.value(req)
		if !found {
			continue
		}
		hv := discovery.HashString(v)
		if ok {
			acc = discovery.CombineHash(acc, hv)
		} else {
			acc, ok = hv, true
		}
		if p.terminal {
			break
		}
	}
	return acc, ok
}

// Inputs names the policies that produce a value for req, in the order
// they are combined (for Explain): "header x-user", "cookie session",
// "query_parameter user", "source_ip".
func (h *Hasher) Inputs(req *Request) []string {
	var out []string
	for i := range h.policies {
		p := &h.policies[i]
		if _, found := p.value(req); !found {
			continue
		}
		switch p.kind {
		case hashHeader:
			out = append(out, "header "+p.header.Lower)
		case hashCookie:
			out = append(out, "cookie "+p.name)
		case hashQuery:
			out = append(out, "query_parameter "+p.name)
		default:
			out = append(out, "source_ip")
		}
		if p.terminal {
			break
		}
	}
	return out
}

// value returns the input of p in req.
func (p *hashPolicy) value(req *Request) (string, bool) {
	switch p.kind {
	case hashHeader:
		if req.Header == nil {
			return "", false
		}
		if vs := req.Header.Values(p.header); len(vs) > 0 {
			return vs[0], true
		}
	case hashCookie:
		if req.RPC || req.Header == nil {
			return "", false
		}
		for _, line := range req.Header.Values(cookieKey) {
			if v, ok := cookieValue(line, p.name); ok {
				return v, true
			}
		}
	case hashQuery:
		if req.RPC {
			return "", false
		}
		return queryValue(req.RawQuery, p.name)
	case hashSourceIP:
		return sourceAddress(), true
	}
	return "", false
}

// cookieValue finds the cookie name in the value of a Cookie header
// ("a=1; b=2"), without allocating.
func cookieValue(line, name string) (string, bool) {
	for line != "" {
		var part string
		part, line, _ = strings.Cut(line, ";")
		part = strings.TrimLeft(part, " \t")
		k, v, ok := strings.Cut(part, "=")
		if !ok || strings.TrimRight(k, " \t") != name {
			continue
		}
		v = strings.Trim(v, " \t")
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		return v, true
	}
	return "", false
}

// queryValue finds the parameter name in a raw query ("a=1&b=2"), as
// written, without allocating. A parameter without "=" has the value "".
func queryValue(raw, name string) (string, bool) {
	for raw != "" {
		var part string
		part, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(part, "=")
		if k == name {
			return v, true
		}
	}
	return "", false
}

// sourceAddress is this process's address, the input of a source_ip hash
// policy: the first global unicast address of its interfaces, else its
// host name, read once.
var sourceAddress = sync.OnceValue(func() string {
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.IsGlobalUnicast() {
				return n.IP.String()
			}
		}
	}
	if h, err := os.Hostname(); err == nil {
		return h
	}
	return "127.0.0.1"
})
