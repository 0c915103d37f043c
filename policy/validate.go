package policy

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/inmesh/inmesh/resilience"
)

// Limits of the document beyond those of DESIGN.md.
const (
	maxVersionLen  = 256       // version label
	maxSplitWeight = 1_000_000 // one split entry; keeps the sum far from overflow
)

// Validate checks d and returns every problem found as a *ValidationError
// (errors.Is(err, ErrInvalid) holds), or nil when d is valid. Parse and
// NewSnapshot call it; call it yourself for a Document built in code.
//
// Field rules are checked where a field is written. Rules that depend on
// several levels (a split naming a subset; backoff max >= initial) are
// checked on the merged view, defaults ⊕ service ⊕ route, for each service.
// Validate does not modify d.
func (d *Document) Validate() error {
	if d == nil {
		return invalid("", "no document")
	}
	var v validator
	v.document(d)
	if len(v.problems) == 0 {
		return nil
	}
	return &ValidationError{Problems: v.problems}
}

// validator collects the problems of one document.
type validator struct {
	problems []FieldError
}

func (v *validator) add(path, format string, args ...any) {
	v.problems = append(v.problems, FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) document(d *Document) {
	if len(d.Version) > maxVersionLen || strings.ContainsFunc(d.Version, unicode.IsControl) {
		v.add("version", "must be at most %d characters, without control characters", maxVersionLen)
	}
	if d.TrustDomain != "" && !isTrustDomain(d.TrustDomain) {
		v.add("trust_domain", "invalid trust domain %q: must be a lower-case DNS name such as \"mesh.local\"", d.TrustDomain)
	}
	switch d.Egress {
	case "", EgressAllow, EgressDeny:
	default:
		v.add("egress", "must be allow or deny, not %q", d.Egress)
	}
	if d.Defaults != nil {
		v.service("defaults", d.Defaults)
		v.mergedDefaults(d.Defaults)
	}
	for _, name := range slices.Sorted(maps.Keys(d.Services)) {
		path := join("services", name)
		if trimmed, dot := strings.CutSuffix(name, "."); dot && IsServiceName(trimmed) {
			v.add(path, "invalid service name %q: write it without the trailing dot (%q), which names the same host", name, trimmed)
		} else if !IsServiceName(name) {
			v.add(path, "invalid service name %q: use a-z, 0-9, \".\", \"_\", \"-\", starting with a letter or digit, at most 253 characters", name)
		}
		svc := d.Services[name]
		v.service(path, svc)
		v.merged(path, name, d.Defaults, svc)
	}
}

// service checks the fields of one service block (or the defaults) as written.
func (v *validator) service(path string, s *Service) {
	if s == nil {
		return
	}
	seen := make(map[string]int, len(s.Endpoints))
	for i, ep := range s.Endpoints {
		p := index(join(path, "endpoints"), i)
		if err := checkAddress(ep.Address); err != "" {
			v.add(join(p, "address"), "%s", err)
		} else if first, dup := seen[ep.Address]; dup {
			v.add(join(p, "address"), "duplicate address %q (also endpoints[%d])", ep.Address, first)
		} else {
			seen[ep.Address] = i
		}
		v.labels(join(p, "labels"), ep.Labels)
	}
	for _, name := range slices.Sorted(maps.Keys(s.Subsets)) {
		p := join(join(path, "subsets"), name)
		if name == "" {
			v.add(p, "a subset needs a name")
		}
		v.labels(p, s.Subsets[name])
	}
	v.settings(path, &s.Settings)
	names := make(map[string]int, len(s.Routes))
	for i := range s.Routes {
		r := &s.Routes[i]
		p := index(join(path, "routes"), i)
		name := routeName(r, i)
		if first, dup := names[name]; dup {
			v.add(join(p, "name"), "duplicate route name %q (also routes[%d])", name, first)
		} else {
			names[name] = i
		}
		v.route(p, r)
	}
	if a := s.Authorization; a != nil {
		v.authorization(join(path, "authorization"), a)
	}
}

func (v *validator) labels(path string, labels map[string]string) {
	if _, ok := labels[""]; ok {
		v.add(join(path, ""), "a label needs a name")
	}
}

// settings checks the per-call settings of one level.
func (v *validator) settings(path string, s *Settings) {
	v.positive(join(path, "timeout"), s.Timeout)
	if r := s.Retry; r != nil {
		p := join(path, "retry")
		if r.Attempts != 0 && (r.Attempts < 1 || r.Attempts > 10) {
			v.add(join(p, "attempts"), "must be 1..10")
		}
		v.positive(join(p, "per_try_timeout"), r.PerTryTimeout)
		if b := r.Backoff; b != nil {
			v.positive(join(join(p, "backoff"), "initial"), b.Initial)
			v.positive(join(join(p, "backoff"), "max"), b.Max)
		}
		v.retryOn(join(p, "retry_on"), r.RetryOn)
		if b := r.Budget; b != nil {
			if b.Ratio != nil && !(*b.Ratio >= 0 && *b.Ratio <= 1) {
				v.add(join(join(p, "budget"), "ratio"), "must be 0..1")
			}
			if b.MinPerSecond != nil && (*b.MinPerSecond < 0 || *b.MinPerSecond > 10000) {
				v.add(join(join(p, "budget"), "min_per_second"), "must be 0..10000")
			}
		}
	}
	if c := s.CircuitBreaker; c != nil {
		p := join(path, "circuit_breaker")
		if c.ConsecutiveFailures < 0 {
			v.add(join(p, "consecutive_failures"), "must be >= 1")
		}
		v.positive(join(p, "open_for"), c.OpenFor)
		if c.HalfOpenRequests != 0 && (c.HalfOpenRequests < 1 || c.HalfOpenRequests > 1000) {
			v.add(join(p, "half_open_requests"), "must be 1..1000")
		}
	}
	if o := s.OutlierDetection; o != nil {
		p := join(path, "outlier_detection")
		if o.ConsecutiveFailures < 0 {
			v.add(join(p, "consecutive_failures"), "must be >= 1")
		}
		v.positive(join(p, "base_ejection"), o.BaseEjection)
		if o.MaxEjectionPercent < 0 || o.MaxEjectionPercent > 100 {
			v.add(join(p, "max_ejection_percent"), "must be 0..100")
		}
	}
	v.oneOf(join(path, "load_balancer"), s.LoadBalancer, "round_robin", "least_request", "random")
	v.oneOf(join(path, "tls"), s.TLS, "strict", "disable")
}

// positive checks a duration that is 0 when unset and must be > 0 when set.
func (v *validator) positive(path string, d Duration) {
	if d < 0 {
		v.add(path, "must be > 0, got %s", d)
	}
}

// oneOf checks an enumerated string; "" means unset.
func (v *validator) oneOf(path, got string, allowed ...string) {
	if got != "" && !slices.Contains(allowed, got) {
		v.add(path, "must be one of %s; got %q", strings.Join(allowed, ", "), got)
	}
}

// retryOn reports every entry of names that resilience.ParseRetryOn refuses.
func (v *validator) retryOn(path string, names []string) {
	for off := 0; off < len(names); {
		_, err := resilience.ParseRetryOn(names[off:])
		if err == nil {
			return
		}
		var ce *resilience.ConditionError
		if !errors.As(err, &ce) {
			v.add(path, "%v", err)
			return
		}
		v.add(index(path, off+ce.Index), "unknown condition %q", ce.Name)
		off += ce.Index + 1
	}
}

func (v *validator) route(path string, r *Route) {
	m := &r.Match
	mp := join(path, "match")
	if m.PathPrefix != "" && !strings.HasPrefix(m.PathPrefix, "/") {
		v.add(join(mp, "path_prefix"), "must start with \"/\"")
	}
	lower := make(map[string]string, len(m.Headers))
	for _, name := range slices.Sorted(maps.Keys(m.Headers)) {
		hp := join(join(mp, "headers"), name)
		switch l := strings.ToLower(name); {
		case name == "":
			v.add(hp, "a header needs a name")
		case !isToken(name):
			v.add(hp, "invalid header name %q", name)
		case lower[l] != "":
			v.add(hp, "header %q given twice (names are case-insensitive; also %q)", name, lower[l])
		default:
			lower[l] = name
		}
	}
	v.methods(join(mp, "methods"), m.Methods)

	sp := join(path, "split")
	sum := 0
	seen := make(map[string]int, len(r.Split))
	for i, ws := range r.Split {
		p := index(sp, i)
		switch {
		case ws.Weight < 0:
			v.add(join(p, "weight"), "must be >= 0")
		case ws.Weight > maxSplitWeight:
			v.add(join(p, "weight"), "must be at most %d", maxSplitWeight)
		default:
			sum += ws.Weight
		}
		if ws.Subset == "" {
			v.add(join(p, "subset"), "must name a subset")
		} else if first, dup := seen[ws.Subset]; dup {
			v.add(join(p, "subset"), "subset %q appears twice in the split (also split[%d])", ws.Subset, first)
		} else {
			seen[ws.Subset] = i
		}
	}
	if len(r.Split) > 0 && sum == 0 {
		v.add(sp, "the weights must add up to more than 0")
	}
	v.settings(path, &r.Settings)
}

func (v *validator) methods(path string, methods []string) {
	for i, m := range methods {
		if !isToken(m) {
			v.add(index(path, i), "invalid method %q", m)
		}
	}
}

func (v *validator) authorization(path string, a *Authorization) {
	v.oneOf(join(path, "default"), a.Default, "deny", "allow")
	for i, r := range a.Rules {
		p := index(join(path, "rules"), i)
		if len(r.From) == 0 {
			v.add(join(p, "from"), "must name at least one calling service (or \"*\" for any)")
		}
		for j, from := range r.From {
			if from != "*" && !IsServiceName(from) {
				v.add(index(join(p, "from"), j), "invalid service name %q", from)
			}
		}
		for j, prefix := range r.Paths {
			if !strings.HasPrefix(prefix, "/") {
				v.add(index(join(p, "paths"), j), "must start with \"/\"")
			}
		}
		v.methods(join(p, "methods"), r.Methods)
	}
}

// mergedDefaults checks the defaults on their own merged view: their backoff
// and the backoff of their routes.
func (v *validator) mergedDefaults(def *Service) {
	if setsBackoff(&def.Settings) {
		v.backoff("defaults", "", &def.Settings)
	}
	for i := range def.Routes {
		if r := &def.Routes[i]; setsBackoff(&r.Settings) {
			v.backoff(index("defaults.routes", i), "", &def.Settings, &r.Settings)
		}
	}
}

// merged checks the service called name on the merged view defaults ⊕ svc:
// every split names a subset of the service, and backoff max >= initial
// wherever a level sets the backoff. Problems in routes inherited from the defaults are
// reported at the defaults' path, naming the service.
func (v *validator) merged(path, name string, def, svc *Service) {
	subsets := mergedSubsets(def, svc)
	routes, fromDefaults := effectiveRoutes(def, svc)
	routesPath, note := join(path, "routes"), ""
	if fromDefaults {
		routesPath, note = "defaults.routes", " for service "+name
	}
	if setsBackoff(settingsOf(svc)) {
		v.backoff(path, "", settingsOf(def), settingsOf(svc))
	}
	for i := range routes {
		r := &routes[i]
		p := index(routesPath, i)
		for j, ws := range r.Split {
			if _, ok := subsets[ws.Subset]; !ok && ws.Subset != "" {
				v.add(join(index(join(p, "split"), j), "subset"), "unknown subset %q%s", ws.Subset, note)
			}
		}
		// An inherited route was checked with the defaults alone; check it
		// again only if the service's own backoff takes part.
		if setsBackoff(&r.Settings) && (!fromDefaults || setsBackoff(settingsOf(svc))) {
			v.backoff(p, note, settingsOf(def), settingsOf(svc), &r.Settings)
		}
	}
}

// backoff checks that the merged backoff max is not below the merged
// initial delay. path names the most specific level.
func (v *validator) backoff(path, note string, levels ...*Settings) {
	e := effective(levels...)
	if e.BackoffMax < e.BackoffInitial {
		v.add(join(join(join(path, "retry"), "backoff"), "max"), "must be >= initial (%s), got %s%s", e.BackoffInitial, e.BackoffMax, note)
	}
}

func setsBackoff(s *Settings) bool {
	return s != nil && s.Retry != nil && s.Retry.Backoff != nil &&
		(s.Retry.Backoff.Initial != 0 || s.Retry.Backoff.Max != 0)
}

// IsServiceName reports whether name is a valid service name: 1..253
// characters of a-z, 0-9, '.', '_', '-', starting with a letter or a digit
// and not ending with a dot. Service names are URL hosts
// ("http://billing/charge"), which the mesh matches as DNS matches names:
// "Billing", "billing." and "billing:8080" name billing. A name is written
// in that canonical form, lower case and without the trailing dot, so that
// no two names of a policy match the same host.
func IsServiceName(name string) bool {
	if name == "" || len(name) > 253 || !isLowerAlnum(name[0]) || name[len(name)-1] == '.' {
		return false
	}
	for i := 1; i < len(name); i++ {
		if c := name[i]; !isLowerAlnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

func isLowerAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// isTrustDomain reports whether s is a lower-case DNS-like name: dot-separated
// labels of a-z, 0-9, '-', '_', each 1..63 long and not starting or ending
// with '-', 253 characters at most.
func isTrustDomain(s string) bool {
	if len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isLowerAlnum(c) && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}

// checkAddress checks a host:port endpoint address and returns the problem,
// or "".
func checkAddress(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("invalid address %q: want host:port", addr)
	}
	if host == "" {
		return fmt.Sprintf("invalid address %q: no host", addr)
	}
	if _, err := netip.ParseAddr(host); err != nil && !isHostname(host) {
		return fmt.Sprintf("invalid address %q: bad host %q", addr, host)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || port[0] < '0' || port[0] > '9' {
		return fmt.Sprintf("invalid address %q: port must be 1..65535", addr)
	}
	return ""
}

// isHostname reports whether s is made of DNS name characters.
func isHostname(s string) bool {
	if len(s) > 253 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isLowerAlnum(c) || c >= 'A' && c <= 'Z' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// isToken reports whether s is an HTTP token (RFC 9110), as header names and
// methods are.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isLowerAlnum(c) || c >= 'A' && c <= 'Z' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
