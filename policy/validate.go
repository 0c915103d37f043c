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
	"time"
	"unicode"

	"github.com/inmesh/inmesh/resilience"
)

// Bounds on values that no field rule limits otherwise.
const (
	maxVersionLen  = 256       // version label
	maxSplitWeight = 1_000_000 // one split entry; keeps the sum far from overflow
)

// Upper bounds of durations, so that no clock arithmetic on them can
// overflow (time.Duration ends at about 292 years, UnixNano in 2262).
const (
	// maxDuration bounds timeout, per_try_timeout, open_for and
	// base_ejection: no deadline, breaker or ejection past a year.
	maxDuration = 365 * 24 * time.Hour
	// maxBackoff bounds the backoff's initial and max delays: a retry
	// that waits longer than an hour is no retry.
	maxBackoff = time.Hour
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
	return d.validate(nil)
}

// validate is Validate knowing the paths of the integers the source wrote
// as 0 (see decode), which are checked as written values, not as unset.
func (d *Document) validate(zeros map[string]bool) error {
	if d == nil {
		return invalid("", "no document")
	}
	v := validator{zeros: zeros}
	v.document(d)
	if len(v.problems) == 0 {
		return nil
	}
	return &ValidationError{Problems: capped(v.problems, v.dropped)}
}

// validator collects the problems of one document.
type validator struct {
	problems []FieldError
	dropped  int             // problems beyond maxProblems, not kept
	zeros    map[string]bool // paths of the integers written as 0 (nil for a Document built in code)
}

// set reports whether the integer field at path is set: non-zero, or
// written as 0.
func (v *validator) set(path string, n int) bool { return n != 0 || v.zeros[path] }

func (v *validator) add(path, format string, args ...any) {
	if len(v.problems) >= maxProblems {
		v.dropped++
		return
	}
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
	v.duration(join(path, "timeout"), s.Timeout, maxDuration)
	if r := s.Retry; r != nil {
		p := join(path, "retry")
		if ap := join(p, "attempts"); v.set(ap, r.Attempts) && (r.Attempts < 1 || r.Attempts > 10) {
			v.add(ap, "must be 1..10")
		}
		v.duration(join(p, "per_try_timeout"), r.PerTryTimeout, maxDuration)
		if b := r.Backoff; b != nil {
			v.duration(join(join(p, "backoff"), "initial"), b.Initial, maxBackoff)
			v.duration(join(join(p, "backoff"), "max"), b.Max, maxBackoff)
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
		if fp := join(p, "consecutive_failures"); v.set(fp, c.ConsecutiveFailures) && c.ConsecutiveFailures < 1 {
			v.add(fp, "must be >= 1")
		}
		v.duration(join(p, "open_for"), c.OpenFor, maxDuration)
		if hp := join(p, "half_open_requests"); v.set(hp, c.HalfOpenRequests) && (c.HalfOpenRequests < 1 || c.HalfOpenRequests > 1000) {
			v.add(hp, "must be 1..1000")
		}
	}
	if o := s.OutlierDetection; o != nil {
		p := join(path, "outlier_detection")
		if fp := join(p, "consecutive_failures"); v.set(fp, o.ConsecutiveFailures) && o.ConsecutiveFailures < 1 {
			v.add(fp, "must be >= 1")
		}
		v.duration(join(p, "base_ejection"), o.BaseEjection, maxDuration)
		if o.MaxEjectionPercent < 0 || o.MaxEjectionPercent > 100 {
			v.add(join(p, "max_ejection_percent"), "must be 0..100")
		}
	}
	v.oneOf(join(path, "load_balancer"), s.LoadBalancer, "round_robin", "least_request", "random")
	v.oneOf(join(path, "tls"), s.TLS, "strict", "disable")
}

// duration checks a duration that is 0 when unset and must be in
// (0, most] when set.
func (v *validator) duration(path string, d Duration, most time.Duration) {
	switch {
	case d < 0:
		v.add(path, "must be > 0, got %s", d)
	case d.Std() > most:
		v.add(path, "must be at most %s, got %s", hours(most), d)
	}
}

// hours writes a whole number of hours as "8760h", other durations as Go
// does.
func hours(d time.Duration) string {
	if d%time.Hour == 0 {
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	}
	return d.String()
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
	v.emptySubsets(path, name, def, svc, subsets, routes)
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

// emptySubsets reports, for a service with static endpoints, every subset
// that selects none of them: a split to it would fail its share of the
// calls. The service's own subsets are checked all; those it inherits from
// the defaults, which serve many services, only when one of its routes
// splits to them (reported at the defaults' path, naming the service).
func (v *validator) emptySubsets(path, name string, def, svc *Service, subsets map[string]map[string]string, routes []Route) {
	eps := pick(def, svc, func(s *Service) []Endpoint { return s.Endpoints })
	if len(eps) == 0 {
		return // discovered endpoints come and go; nothing to check here
	}
	count := fmt.Sprintf("%d endpoints", len(eps))
	if len(eps) == 1 {
		count = "1 endpoint"
	}
	for _, sub := range slices.Sorted(maps.Keys(subsets)) {
		if slices.ContainsFunc(eps, func(ep Endpoint) bool { return selects(subsets[sub], ep.Labels) }) {
			continue
		}
		own := false
		if svc != nil {
			_, own = svc.Subsets[sub]
		}
		if own {
			v.add(join(join(path, "subsets"), sub), "selects none of the %s", count)
		} else if splitsTo(routes, sub) {
			v.add(join("defaults.subsets", sub), "selects none of the %s of service %s", count, name)
		}
	}
}

// selects reports whether every label of selector is one of labels.
func selects(selector, labels map[string]string) bool {
	for k, want := range selector {
		if got, ok := labels[k]; !ok || got != want {
			return false
		}
	}
	return true
}

// splitsTo reports whether a route of routes splits to subset.
func splitsTo(routes []Route, subset string) bool {
	for i := range routes {
		if slices.ContainsFunc(routes[i].Split, func(ws WeightedSubset) bool { return ws.Subset == subset }) {
			return true
		}
	}
	return false
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
