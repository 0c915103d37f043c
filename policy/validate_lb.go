package policy

// The load balancers of the load_balancer field.
var loadBalancers = []string{"round_robin", "least_request", "random", "ring_hash", "maglev"}

// Bounds of the consistent-hash settings.
const (
	maxHashPolicies = 16        // hash entries at one level
	maxRingSize     = 8_388_608 // ring_hash maximum_ring_size (Envoy's)
	maxHashName     = 256       // a header, cookie or query parameter name
)

// isHashLB reports whether lb hashes requests (ring_hash or maglev).
func isHashLB(lb string) bool { return lb == "ring_hash" || lb == "maglev" }

// loadBalancer checks load_balancer, hash and ring_hash of one level, at
// the path being checked. A level's hash without a load_balancer means
// ring_hash; with one that does not hash requests it is an error, as is a
// ring_hash block beside a load_balancer other than ring_hash.
func (v *validator) loadBalancer(s *Settings) {
	v.oneOf("load_balancer", s.LoadBalancer, loadBalancers...)
	if len(s.Hash) > 0 && s.LoadBalancer != "" && !isHashLB(s.LoadBalancer) {
		v.addAt("hash", "needs load_balancer ring_hash or maglev, not %q", s.LoadBalancer)
	}
	if len(s.Hash) > maxHashPolicies {
		v.addAt("hash", "at most %d hash policies, got %d", maxHashPolicies, len(s.Hash))
	}
	if s.Hash != nil && len(s.Hash) == 0 {
		v.addAt("hash", "an empty list: give at least one hash policy, or leave hash out")
	}
	if len(s.Hash) > 0 {
		m := v.push("hash")
		for i := range min(len(s.Hash), maxHashPolicies) {
			mi := v.pushIndex(i)
			v.hashPolicy(&s.Hash[i])
			v.pop(mi)
		}
		v.pop(m)
	}
	if r := s.RingHash; r != nil {
		m := v.push("ring_hash")
		if s.LoadBalancer != "" && s.LoadBalancer != "ring_hash" {
			v.add("needs load_balancer ring_hash, not %q", s.LoadBalancer)
		}
		lo, loOK := v.ringSize("minimum_ring_size", r.MinimumRingSize)
		hi, hiOK := v.ringSize("maximum_ring_size", r.MaximumRingSize)
		if loOK && hiOK && lo > 0 && hi > 0 && lo > hi {
			v.addAt("minimum_ring_size", "must be at most maximum_ring_size (%d), got %d", hi, lo)
		}
		v.pop(m)
	}
}

// ringSize checks a ring size at key: unset (0) or 1..8,388,608.
func (v *validator) ringSize(key string, n int) (int, bool) {
	if v.set(key, n) && (n < 1 || n > maxRingSize) {
		v.addAt(key, "must be 1..%d, got %d", maxRingSize, n)
		return n, false
	}
	return n, true
}

// hashPolicy checks one entry of hash, at the path being checked.
func (v *validator) hashPolicy(h *HashPolicy) {
	n := 0
	if h.Header != "" {
		n++
		if !isToken(h.Header) || len(h.Header) > maxHashName {
			v.addAt("header", "invalid header name %q", truncate(h.Header, 64))
		}
	}
	if h.Cookie != "" {
		n++
		if !isToken(h.Cookie) || len(h.Cookie) > maxHashName {
			v.addAt("cookie", "invalid cookie name %q", truncate(h.Cookie, 64))
		}
	}
	if h.QueryParameter != "" {
		n++
		if len(h.QueryParameter) > maxHashName || !validQueryName(h.QueryParameter) {
			v.addAt("query_parameter", "invalid query parameter name %q", truncate(h.QueryParameter, 64))
		}
	}
	if h.SourceIP {
		n++
	}
	if n != 1 {
		v.add("must have exactly one of header, cookie, query_parameter, source_ip; got %d", n)
	}
}

// validQueryName reports whether s may name a query parameter as it is
// written in a raw query: printable ASCII without '&', '=', '#' or a space.
func validQueryName(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '&' || c == '=' || c == '#' {
			return false
		}
	}
	return true
}
