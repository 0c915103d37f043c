package core

import "strings"

// ServiceOf returns the service name a URL host (or the endpoint of a gRPC
// target) names, matched as DNS matches names: the port dropped (the
// endpoints' addresses decide where a call goes), then one trailing dot,
// and ASCII letters folded to lower case. "BILLING.:80" names billing. An
// IPv6 literal ("[::1]:80") comes back as "[::1]", which names no service.
// It allocates only for a host with an upper-case letter: the lookup of an
// already canonical host costs nothing.
func ServiceOf(host string) string {
	if strings.HasPrefix(host, "[") {
		if i := strings.IndexByte(host, ']'); i >= 0 {
			return host[:i+1]
		}
		return host
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	for i := 0; i < len(host); i++ {
		if c := host[i]; 'A' <= c && c <= 'Z' {
			return lowerASCII(host)
		}
	}
	return host
}

// lowerASCII folds the ASCII letters of s to lower case and leaves every
// other byte alone, as DNS compares names; strings.ToLower would also fold
// letters such as the Kelvin sign into "k", which DNS never matches.
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
