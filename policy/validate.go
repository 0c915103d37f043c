package policy

import (
	"errors"
	"fmt"
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
	// Size first: the services and routes a snapshot would resolve are
	// bounded whatever built the document (Parse, blocks assembled from a
	// control plane's keys, code).
	if err := checkResolvedSize(d); err != nil {
		return err
	}
	v := validator{zeros: zeros}
	v.document(d)
	if len(v.problems) == 0 {
		return nil
	}
	return &ValidationError{Problems: capped(v.problems, v.dropped)}
}

// validator collects the problems of one document.
//
// Like the decoder, it keeps the path being checked as bytes and renders it
// only for a problem, and it checks a valid document without allocating
// for each service.
type validator struct {
	problems []FieldError
	dropped  int             // problems beyond maxProblems, not kept
	zeros    map[string]bool // paths of the integers written as 0 (nil for a Document built in code)
	doc      *Document       // the document being checked

	fieldPath        // the path being checked
	alt       []byte // the other path buffer, while a problem is reported under the defaults (see rebase)

	// Buffers for sorted map keys, one per loop that sorts (none nests in
	// another of its kind).
	subsetKeys, headerKeys, mergedKeys []string
}

// rebase makes base the path being checked, until restore is called with
// what it returned. Rebases do not nest.
func (v *validator) rebase(base string) (saved []byte) {
	saved = v.path
	v.path = append(v.alt[:0], base...)
	return saved
}

func (v *validator) restore(saved []byte) { v.alt, v.path = v.path, saved }

// set reports whether the integer field key (below the path being checked)
// is set: non-zero, or written as 0.
func (v *validator) set(key string, n int) bool {
	if n != 0 || len(v.zeros) == 0 {
		return n != 0
	}
	m := v.push(key)
	written := v.zeros[string(v.path)]
	v.pop(m)
	return written
}

// add reports a problem at the path being checked.
func (v *validator) add(format string, args ...any) {
	if len(v.problems) >= maxProblems {
		v.dropped++
		return
	}
	v.problems = append(v.problems, FieldError{Path: string(v.path), Msg: fmt.Sprintf(format, args...)})
}

// addAt reports a problem at key below the path being checked.
func (v *validator) addAt(key, format string, args ...any) {
	m := v.push(key)
	v.add(format, args...)
	v.pop(m)
}

// sortedKeys returns the keys of m in order, in *buf.
func sortedKeys[V any](m map[string]V, buf *[]string) []string {
	keys := (*buf)[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	*buf = keys
	return keys
}

func (v *validator) document(d *Document) {
	v.doc = d
	v.globals(d)
	if d.Defaults != nil {
		m := v.push("defaults")
		v.serviceAt(d.Defaults)
		v.mergedDefaults(d.Defaults)
		v.pop(m)
	}
	names := make([]string, 0, len(d.Services))
	for name := range d.Services {
		names = append(names, name)
	}
	slices.Sort(names)
	ms := v.push("services")
	for _, name := range names {
		v.serviceNamed(name, d.Services[name])
	}
	v.pop(ms)
}

// globals checks the fields of the document that belong to no block.
func (v *validator) globals(d *Document) {
	if len(d.Version) > maxVersionLen || strings.ContainsFunc(d.Version, unicode.IsControl) {
		v.addAt("version", "must be at most %d characters, without control characters", maxVersionLen)
	}
	if d.TrustDomain != "" && !isTrustDomain(d.TrustDomain) {
		v.addAt("trust_domain", "invalid trust domain %q: must be a lower-case DNS name such as \"mesh.local\"", d.TrustDomain)
	}
	switch d.Egress {
	case "", EgressAllow, EgressDeny:
	default:
		v.addAt("egress", "must be allow or deny, not %q", d.Egress)
	}
}

// serviceNamed checks the service called name of v.doc, under the path
// being checked (services).
func (v *validator) serviceNamed(name string, svc *Service) {
	m := v.push(name)
	if trimmed, dot := strings.CutSuffix(name, "."); dot && IsServiceName(trimmed) {
		v.add("invalid service name %q: write it without the trailing dot (%q), which names the same host", name, trimmed)
	} else if !IsServiceName(name) {
		v.add("invalid service name %q: use a-z, 0-9, \".\", \"_\", \"-\", starting with a letter or digit, at most 253 characters", name)
	}
	v.serviceAt(svc)
	v.merged(name, v.doc.Defaults, svc)
	v.pop(m)
}

// validateOn is Validate for a document that follows a valid one, whose
// defaults and service blocks were base (nil services: none): a service
// of d with the block of base, the same pointer, under the same defaults
// pointer, was valid and stays so, unless a split or failover of its
// routes names another service, whose block may have changed; only the
// others are checked. When d has a problem, it returns Validate's error,
// every problem of the whole document.
//
// Blocks are compared by pointer: no block of base may have been modified.
func (d *Document) validateOn(baseDefaults *Service, base map[string]*Service) error {
	if d == nil || d.Defaults != baseDefaults {
		return d.Validate()
	}
	if err := checkResolvedSize(d); err != nil {
		return err
	}
	v := validator{doc: d}
	// The fields of the document itself are few: checked again.
	v.globals(d)
	ms := v.push("services")
	for name, svc := range d.Services {
		if old, ok := base[name]; ok && old == svc && !namesOthers(name, d.Defaults, svc) {
			continue
		}
		v.serviceNamed(name, svc)
		if len(v.problems) > 0 {
			break
		}
	}
	v.pop(ms)
	if len(v.problems) == 0 {
		return nil
	}
	return d.Validate()
}

// namesOthers reports whether a split or failover of the routes that apply
// to the service called name names another service.
func namesOthers(name string, def, svc *Service) bool {
	routes, _ := effectiveRoutes(def, svc)
	for i := range routes {
		for _, ws := range routes[i].Split {
			if ws.Service != "" && ws.Service != name {
				return true
			}
			for _, t := range ws.Failover {
				if t.Service != "" && t.Service != name {
					return true
				}
			}
		}
	}
	return false
}

// service checks the fields of one service block (or the defaults) as
// written, reporting problems under path.
func (v *validator) service(path string, s *Service) {
	v.path = append(v.path[:0], path...)
	v.serviceAt(s)
}

// serviceAt is service at the path being checked.
func (v *validator) serviceAt(s *Service) {
	if s == nil {
		return
	}
	if len(s.Endpoints) > 0 {
		m := v.push("endpoints")
		var seen map[string]int // address -> index, for many endpoints
		if len(s.Endpoints) > smallMapping {
			seen = make(map[string]int, len(s.Endpoints))
		}
		for i, ep := range s.Endpoints {
			mi := v.pushIndex(i)
			if err := checkAddress(ep.Address); err != "" {
				v.addAt("address", "%s", err)
			} else if first, dup := firstAddress(s.Endpoints, i, seen); dup {
				v.addAt("address", "duplicate address %q (also endpoints[%d])", ep.Address, first)
			} else if seen != nil {
				seen[ep.Address] = i
			}
			ml := v.push("labels")
			v.labels(ep.Labels)
			v.pop(ml)
			v.pop(mi)
		}
		v.pop(m)
	}
	if len(s.Subsets) > 0 {
		m := v.push("subsets")
		for _, name := range sortedKeys(s.Subsets, &v.subsetKeys) {
			mi := v.push(name)
			if name == "" {
				v.add("a subset needs a name")
			}
			v.labels(s.Subsets[name])
			v.pop(mi)
		}
		v.pop(m)
	}
	v.settings(&s.Settings)
	if len(s.Routes) > 0 {
		m := v.push("routes")
		var names map[string]int // route name -> index, for many routes
		if len(s.Routes) > smallMapping {
			names = make(map[string]int, len(s.Routes))
		}
		for i := range s.Routes {
			r := &s.Routes[i]
			mi := v.pushIndex(i)
			if first, dup := firstRoute(s.Routes, i, names); dup {
				v.addAt("name", "duplicate route name %q (also routes[%d])", routeName(r, i), first)
			} else if names != nil {
				names[routeName(r, i)] = i
			}
			v.route(r)
			v.pop(mi)
		}
		v.pop(m)
	}
	if a := s.Authorization; a != nil {
		m := v.push("authorization")
		v.authorization(a)
		v.pop(m)
	}
	if c := s.Concurrency; c != nil {
		m := v.push("concurrency")
		v.concurrency(c)
		v.pop(m)
	}
	if r := s.RateLimit; r != nil {
		m := v.push("rate_limit")
		v.rateLimit(r)
		v.pop(m)
	}
}

// firstAddress returns the index of the first endpoint before i with the
// address of endpoint i, from seen when it is not nil.
func firstAddress(eps []Endpoint, i int, seen map[string]int) (int, bool) {
	if seen != nil {
		first, ok := seen[eps[i].Address]
		return first, ok
	}
	for j := range i {
		if eps[j].Address == eps[i].Address {
			return j, true
		}
	}
	return 0, false
}

// firstRoute returns the index of the first route before i with the name
// of route i (see routeName), from names when it is not nil.
func firstRoute(routes []Route, i int, names map[string]int) (int, bool) {
	if names != nil {
		first, ok := names[routeName(&routes[i], i)]
		return first, ok
	}
	for j := range i {
		if sameRouteName(&routes[j], j, &routes[i], i) {
			return j, true
		}
	}
	return 0, false
}

// sameRouteName reports whether routeName(a, i) == routeName(b, j), without
// building the names.
func sameRouteName(a *Route, i int, b *Route, j int) bool {
	switch {
	case a.Name != "" && b.Name != "":
		return a.Name == b.Name
	case a.Name == "" && b.Name == "":
		return i == j
	case a.Name == "":
		a, i, b, j = b, j, a, i
	}
	// a is named, b is "route[j]".
	n, ok := strings.CutPrefix(a.Name, "route[")
	if n, ok = strings.CutSuffix(n, "]"); !ok {
		return false
	}
	return n == strconv.Itoa(j)
}

// labels checks a label map at the path being checked.
func (v *validator) labels(labels map[string]string) {
	if _, ok := labels[""]; ok {
		v.addAt("", "a label needs a name")
	}
}

// settings checks the per-call settings of one level, at the path being
// checked.
func (v *validator) settings(s *Settings) {
	v.duration("timeout", s.Timeout, maxDuration)
	if s.ConnectTimeout != 0 && (s.ConnectTimeout.Std() < minConnectTimeout || s.ConnectTimeout.Std() > maxConnectTimeout) {
		v.addAt("connect_timeout", "must be 1ms..1h, got %s", s.ConnectTimeout)
	}
	if r := s.Retry; r != nil {
		m := v.push("retry")
		if v.set("attempts", r.Attempts) && (r.Attempts < 1 || r.Attempts > 10) {
			v.addAt("attempts", "must be 1..10")
		}
		v.duration("per_try_timeout", r.PerTryTimeout, maxDuration)
		if b := r.Backoff; b != nil {
			mb := v.push("backoff")
			v.duration("initial", b.Initial, maxBackoff)
			v.duration("max", b.Max, maxBackoff)
			v.pop(mb)
		}
		if len(r.RetryOn) > 0 {
			mr := v.push("retry_on")
			v.retryOn(r.RetryOn)
			v.pop(mr)
		}
		if b := r.Budget; b != nil {
			mb := v.push("budget")
			if b.Ratio != nil && !(*b.Ratio >= 0 && *b.Ratio <= 1) {
				v.addAt("ratio", "must be 0..1")
			}
			if b.MinPerSecond != nil && (*b.MinPerSecond < 0 || *b.MinPerSecond > 10000) {
				v.addAt("min_per_second", "must be 0..10000")
			}
			v.pop(mb)
		}
		v.pop(m)
	}
	if c := s.CircuitBreaker; c != nil {
		m := v.push("circuit_breaker")
		if v.set("consecutive_failures", c.ConsecutiveFailures) && c.ConsecutiveFailures < 1 {
			v.addAt("consecutive_failures", "must be >= 1")
		}
		v.duration("open_for", c.OpenFor, maxDuration)
		if v.set("half_open_requests", c.HalfOpenRequests) && (c.HalfOpenRequests < 1 || c.HalfOpenRequests > 1000) {
			v.addAt("half_open_requests", "must be 1..1000")
		}
		v.breakerForm(c)
		v.pop(m)
	}
	if o := s.OutlierDetection; o != nil {
		m := v.push("outlier_detection")
		if v.set("consecutive_failures", o.ConsecutiveFailures) && o.ConsecutiveFailures < 1 {
			v.addAt("consecutive_failures", "must be >= 1")
		}
		v.duration("base_ejection", o.BaseEjection, maxDuration)
		if o.MaxEjectionPercent < 0 || o.MaxEjectionPercent > 100 {
			v.addAt("max_ejection_percent", "must be 0..100")
		}
		v.pop(m)
	}
	v.loadBalancer(s)
	v.oneOf("tls", s.TLS, "strict", "disable")
	if h := s.Hedge; h != nil {
		m := v.push("hedge")
		v.hedge(h)
		v.pop(m)
	}
	if f := s.Fault; f != nil {
		m := v.push("fault")
		v.fault(f)
		v.pop(m)
	}
}

// duration checks the duration at key, which is 0 when unset and must be
// in (0, most] when set.
func (v *validator) duration(key string, d Duration, most time.Duration) {
	switch {
	case d < 0:
		v.addAt(key, "must be > 0, got %s", d)
	case d.Std() > most:
		v.addAt(key, "must be at most %s, got %s", hours(most), d)
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

// oneOf checks the enumerated string at key; "" means unset.
func (v *validator) oneOf(key, got string, allowed ...string) {
	if got != "" && !slices.Contains(allowed, got) {
		v.addAt(key, "must be one of %s; got %q", strings.Join(allowed, ", "), got)
	}
}

// retryOn reports every entry of names that resilience.ParseRetryOn
// refuses; names is at the path being checked.
func (v *validator) retryOn(names []string) {
	for off := 0; off < len(names); {
		_, err := resilience.ParseRetryOn(names[off:])
		if err == nil {
			return
		}
		var ce *resilience.ConditionError
		if !errors.As(err, &ce) {
			v.add("%v", err)
			return
		}
		m := v.pushIndex(off + ce.Index)
		v.add("unknown condition %q", ce.Name)
		v.pop(m)
		off += ce.Index + 1
	}
}

// route checks route r, at the path being checked.
func (v *validator) route(r *Route) {
	m := &r.Match
	mm := v.push("match")
	if m.PathPrefix != "" && !strings.HasPrefix(m.PathPrefix, "/") {
		v.addAt("path_prefix", "must start with \"/\"")
	}
	if len(m.Headers) > 0 {
		mh := v.push("headers")
		lower := make(map[string]string, len(m.Headers))
		for _, name := range sortedKeys(m.Headers, &v.headerKeys) {
			switch l := strings.ToLower(name); {
			case name == "":
				v.addAt(name, "a header needs a name")
			case !isToken(name):
				v.addAt(name, "invalid header name %q", name)
			case lower[l] != "":
				v.addAt(name, "header %q given twice (names are case-insensitive; also %q)", name, lower[l])
			default:
				lower[l] = name
			}
		}
		v.pop(mh)
	}
	if len(m.Methods) > 0 {
		mt := v.push("methods")
		v.methods(m.Methods)
		v.pop(mt)
	}
	v.routeConditions(m)
	v.pop(mm)
	v.routeActions(r)

	if len(r.Split) > 0 {
		ms := v.push("split")
		v.split(r.Split)
		v.pop(ms)
	}
	v.settings(&r.Settings)
}

// methods checks a list of methods at the path being checked.
func (v *validator) methods(methods []string) {
	for i, m := range methods {
		if !isToken(m) {
			mi := v.pushIndex(i)
			v.add("invalid method %q", m)
			v.pop(mi)
		}
	}
}

// authorization checks a, at the path being checked.
func (v *validator) authorization(a *Authorization) {
	v.oneOf("default", a.Default, "deny", "allow")
	v.oneOf("mode", a.Mode, AuthzEnforce, AuthzAudit)
	v.rules("rules", a.Rules)
	v.rules("deny", a.Deny)
}

// rules checks the authorization rules at key, below the path being
// checked.
func (v *validator) rules(key string, rules []Rule) {
	if len(rules) == 0 {
		return
	}
	mr := v.push(key)
	for i, r := range rules {
		mi := v.pushIndex(i)
		if len(r.From) == 0 {
			v.addAt("from", "must name at least one calling service (or \"*\" for any)")
		}
		for j, from := range r.From {
			if from != "*" && !IsServiceName(from) {
				m := v.push("from")
				v.pushIndex(j)
				v.add("invalid service name %q", from)
				v.pop(m)
			}
		}
		for j, prefix := range r.Paths {
			problem := ""
			switch {
			case !strings.HasPrefix(prefix, "/"):
				problem = "must start with \"/\""
			case !canonicalRulePath(prefix):
				problem = "must be a clean path (no \"//\", \".\" or \"..\" segments, \"%\" or \"\\\"): requests are matched once cleaned and decoded, so this one could never match"
			}
			if problem != "" {
				m := v.push("paths")
				v.pushIndex(j)
				v.add("%s", problem)
				v.pop(m)
			}
		}
		if len(r.Methods) > 0 {
			m := v.push("methods")
			v.methods(r.Methods)
			v.pop(m)
		}
		v.pop(mi)
	}
	v.pop(mr)
}

// canonicalRulePath reports whether p (which starts with "/") is as a
// request path is once cleaned and decoded: no empty, "." or ".."
// segment but a trailing "/" (a prefix such as "/pkg.Service/"), no
// escape and no backslash.
func canonicalRulePath(p string) bool {
	if strings.ContainsAny(p, "%\\") {
		return false
	}
	segs := strings.Split(p[1:], "/")
	for i, seg := range segs {
		if seg == "." || seg == ".." || seg == "" && i < len(segs)-1 {
			return false
		}
	}
	return true
}

// mergedDefaults checks the defaults, at the path being checked, on their
// own merged view: their backoff and the backoff of their routes.
func (v *validator) mergedDefaults(def *Service) {
	if setsBackoff(&def.Settings) {
		v.backoff("", &def.Settings)
	}
	m := v.push("routes")
	for i := range def.Routes {
		if r := &def.Routes[i]; setsBackoff(&r.Settings) {
			mi := v.pushIndex(i)
			v.backoff("", &def.Settings, &r.Settings)
			v.pop(mi)
		}
	}
	v.pop(m)
}

// merged checks the service called name, at the path being checked, on the
// merged view defaults ⊕ svc: every split names a subset of the service,
// and backoff max >= initial wherever a level sets the backoff. Problems in
// routes inherited from the defaults are reported at the defaults' path,
// naming the service.
func (v *validator) merged(name string, def, svc *Service) {
	routes, fromDefaults := effectiveRoutes(def, svc)
	v.emptySubsets(name, def, svc, routes)
	if setsBackoff(settingsOf(svc)) {
		v.backoff("", settingsOf(def), settingsOf(svc))
	}
	if len(routes) == 0 {
		return
	}
	noteName := "" // the service to name in problems reported at the defaults' path
	if fromDefaults {
		noteName = name
		saved := v.rebase("defaults.routes")
		defer v.restore(saved)
	} else {
		defer v.pop(v.push("routes"))
	}
	for i := range routes {
		r := &routes[i]
		mi := v.pushIndex(i)
		v.splitTargets(name, noteName, def, svc, r)
		// An inherited route was checked with the defaults alone; check it
		// again only if the service's own backoff takes part.
		if setsBackoff(&r.Settings) && (!fromDefaults || setsBackoff(settingsOf(svc))) {
			v.backoff(noteName, settingsOf(def), settingsOf(svc), &r.Settings)
		}
		v.pop(mi)
	}
}

// forService is the note that names the service a problem reported at the
// defaults' path is about: "" when name is "".
func forService(name string) string {
	if name == "" {
		return ""
	}
	return " for service " + name
}

// hasSubset reports whether the merged view defaults ⊕ svc has the subset.
func hasSubset(def, svc *Service, subset string) bool {
	_, ok := subsetOf(def, svc, subset)
	return ok
}

// subsetOf returns the selector of the subset in the merged view defaults ⊕
// svc (the service's winning).
func subsetOf(def, svc *Service, subset string) (map[string]string, bool) {
	if svc != nil {
		if sel, ok := svc.Subsets[subset]; ok {
			return sel, true
		}
	}
	if def != nil {
		sel, ok := def.Subsets[subset]
		return sel, ok
	}
	return nil, false
}

// emptySubsets reports, for a service with static endpoints (at the path
// being checked), every subset that selects none of them: a split to it
// would fail its share of the calls. The service's own subsets are checked
// all; those it inherits from the defaults, which serve many services, only
// when one of its routes splits to them (reported at the defaults' path,
// naming the service).
func (v *validator) emptySubsets(name string, def, svc *Service, routes []Route) {
	eps := pick(def, svc, func(s *Service) []Endpoint { return s.Endpoints })
	if len(eps) == 0 {
		return // discovered endpoints come and go; nothing to check here
	}
	var names []string
	switch {
	case def == nil || len(def.Subsets) == 0:
		if svc == nil {
			return
		}
		names = sortedKeys(svc.Subsets, &v.mergedKeys)
	case svc == nil || len(svc.Subsets) == 0:
		names = sortedKeys(def.Subsets, &v.mergedKeys)
	default:
		names = v.mergedKeys[:0]
		for k := range svc.Subsets {
			names = append(names, k)
		}
		for k := range def.Subsets {
			if _, own := svc.Subsets[k]; !own {
				names = append(names, k)
			}
		}
		slices.Sort(names)
		v.mergedKeys = names
	}
	for _, sub := range names {
		sel, _ := subsetOf(def, svc, sub)
		if slices.ContainsFunc(eps, func(ep Endpoint) bool { return selects(sel, ep.Labels) }) {
			continue
		}
		own := false
		if svc != nil {
			_, own = svc.Subsets[sub]
		}
		if own {
			m := v.push("subsets")
			v.push(sub)
			v.add("selects none of the %s", endpointCount(len(eps)))
			v.pop(m)
		} else if splitsTo(routes, sub) {
			saved := v.rebase("defaults.subsets")
			v.push(sub)
			v.add("selects none of the %s of service %s", endpointCount(len(eps)), name)
			v.restore(saved)
		}
	}
}

// endpointCount writes "1 endpoint" or "<n> endpoints".
func endpointCount(n int) string {
	if n == 1 {
		return "1 endpoint"
	}
	return fmt.Sprintf("%d endpoints", n)
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
		if slices.ContainsFunc(routes[i].Split, func(ws WeightedSubset) bool { return ws.Service == "" && ws.Subset == subset }) {
			return true
		}
	}
	return false
}

// backoff checks that the merged backoff max is not below the merged
// initial delay, at the path being checked (the most specific level).
// noteName, when not "", is the service the problem is about.
func (v *validator) backoff(noteName string, levels ...*Settings) {
	e := effective(levels...)
	if e.BackoffMax < e.BackoffInitial {
		m := v.push("retry")
		v.push("backoff")
		v.push("max")
		v.add("must be >= initial (%s), got %s%s", e.BackoffInitial, e.BackoffMax, forService(noteName))
		v.pop(m)
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
	if !isHostname(host) && !isIPAddr(host) {
		return fmt.Sprintf("invalid address %q: bad host %q", addr, host)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || port[0] < '0' || port[0] > '9' {
		return fmt.Sprintf("invalid address %q: port must be 1..65535", addr)
	}
	return ""
}

// isIPAddr reports whether s is an IP address.
func isIPAddr(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
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
