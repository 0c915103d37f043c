package policy

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// Values used where neither the service nor the defaults block sets a
// field.
const (
	defaultAttempts            = 1
	defaultBackoffInitial      = 25 * time.Millisecond
	defaultBackoffMax          = 250 * time.Millisecond
	defaultBudgetRatio         = 0.2
	defaultBudgetMinPerSecond  = 10
	defaultBreakerFailures     = 5
	defaultBreakerOpenFor      = 30 * time.Second
	defaultBreakerHalfOpen     = 1
	defaultOutlierFailures     = 5
	defaultOutlierBaseEjection = 30 * time.Second
	defaultOutlierMaxPercent   = 10
	defaultLoadBalancer        = "round_robin"
	defaultMinRingSize         = 1024
	defaultMaxRingSize         = maxRingSize
	maglevTableSize            = 65537
	defaultAuthorization       = "deny"
	defaultBreakerWindow       = 10 * time.Second
	defaultBreakerMinCalls     = 20
	defaultAdaptiveMin         = 1
	defaultAdaptiveInitial     = 20
	defaultAdaptiveMax         = 1000
	defaultHedgeMax            = 1
	defaultFaultHTTPStatus     = 503
	defaultFaultGRPCCode       = "unavailable"
)

// DefaultRetryOn returns the retry conditions used when retries are on
// (attempts > 1) and no level of the document sets retry_on:
// connect-failure, reset, 502, 503, 504, unavailable. It returns a new slice.
func DefaultRetryOn() []string {
	return []string{"connect-failure", "reset", "502", "503", "504", "unavailable"}
}

// resolve builds the resolved view of every service of a valid document.
// The views share memory with doc (endpoints, selectors, splits, rules):
// doc must be a snapshot's own copy, which nothing modifies.
func resolve(doc *Document) map[string]*ResolvedService {
	out := make(map[string]*ResolvedService, len(doc.Services))
	for name, svc := range doc.Services {
		out[name] = resolveService(name, doc.Defaults, svc)
	}
	return out
}

// resolveService merges defaults ⊕ service (⊕ route, for each route).
// def and svc may be nil.
func resolveService(name string, def, svc *Service) *ResolvedService {
	rs := &ResolvedService{
		Name:          name,
		Subsets:       mergedSubsets(def, svc),
		Endpoints:     pick(def, svc, func(s *Service) []Endpoint { return s.Endpoints }),
		Effective:     effective(settingsOf(def), settingsOf(svc)),
		Authorization: resolveAuthorization(def, svc),
		HasAuthorization: (svc != nil && svc.Authorization != nil) ||
			(def != nil && def.Authorization != nil),
		Concurrency: resolveConcurrency(block(def, svc, func(s *Service) *Concurrency { return s.Concurrency })),
		RateLimit:   resolveRateLimit(block(def, svc, func(s *Service) *RateLimit { return s.RateLimit })),
	}
	routes, _ := effectiveRoutes(def, svc)
	if len(routes) == 0 {
		rs.Routes = []ResolvedRoute{{Effective: rs.Effective}}
		return rs
	}
	rs.HasRoutes = true
	rs.Routes = make([]ResolvedRoute, len(routes))
	for i := range routes {
		r := &routes[i]
		rs.Routes[i] = ResolvedRoute{
			Name:           routeName(r, i),
			Match:          normalizeMatch(r.Match),
			Split:          resolveSplit(name, r.Split),
			PrefixRewrite:  r.PrefixRewrite,
			RequestHeaders: normalizeMutation(r.RequestHeaders),
			Effective:      effective(settingsOf(def), settingsOf(svc), &r.Settings),
		}
	}
	return rs
}

// resolveSplit returns split as the resolved view holds it: when an entry
// or a failover target names a service, a copy with the service of each
// filled in (service's own when it names none); else split itself.
func resolveSplit(service string, split []WeightedSubset) []WeightedSubset {
	if !slices.ContainsFunc(split, namesService) {
		return split
	}
	out := make([]WeightedSubset, len(split))
	for i, ws := range split {
		if ws.Service == "" {
			ws.Service = service
		}
		if len(ws.Failover) > 0 {
			fo := make([]Target, len(ws.Failover))
			for j, t := range ws.Failover {
				if t.Service == "" {
					t.Service = service
				}
				fo[j] = t
			}
			ws.Failover = fo
		}
		out[i] = ws
	}
	return out
}

// routeName is the name of route i in resolved views and telemetry.
func routeName(r *Route, i int) string {
	if r.Name != "" {
		return r.Name
	}
	return fmt.Sprintf("route[%d]", i)
}

func settingsOf(s *Service) *Settings {
	if s == nil {
		return nil
	}
	return &s.Settings
}

// pick returns field(svc) when it is non-empty, else field(def): the
// service's endpoints and routes replace the defaults' whole.
func pick[T any](def, svc *Service, field func(*Service) []T) []T {
	if svc != nil {
		if v := field(svc); len(v) > 0 {
			return v
		}
	}
	if def != nil {
		return field(def)
	}
	return nil
}

// block returns field(svc) when it is set, else field(def): the service's
// block replaces the defaults' whole.
func block[T any](def, svc *Service, field func(*Service) *T) *T {
	if svc != nil {
		if v := field(svc); v != nil {
			return v
		}
	}
	if def != nil {
		return field(def)
	}
	return nil
}

// resolveConcurrency returns a copy of c with the adaptive defaults filled
// in (an initial limit out of min..max is brought into it), nil for nil.
func resolveConcurrency(c *Concurrency) *Concurrency {
	if c == nil {
		return nil
	}
	out := *c
	if a := c.Adaptive; a != nil {
		r := AdaptiveConcurrency{
			Min:     cmp.Or(a.Min, defaultAdaptiveMin),
			Max:     cmp.Or(a.Max, max(defaultAdaptiveMax, a.Min)),
			Initial: cmp.Or(a.Initial, defaultAdaptiveInitial),
		}
		r.Initial = min(max(r.Initial, r.Min), r.Max)
		out.Adaptive = &r
	}
	return &out
}

// resolveRateLimit returns a copy of r with its burst filled in (one
// second's worth of its rate, at least 1), nil for nil.
func resolveRateLimit(r *RateLimit) *RateLimit {
	if r == nil {
		return nil
	}
	out := *r
	if out.Burst == 0 {
		out.Burst = max(1, int(math.Ceil(r.RequestsPerSecond)))
	}
	return &out
}

// effectiveRoutes returns the routes that apply to svc (its own, or the
// defaults' when it has none) and whether they are the defaults'.
func effectiveRoutes(def, svc *Service) (routes []Route, fromDefaults bool) {
	if svc != nil && len(svc.Routes) > 0 {
		return svc.Routes, false
	}
	if def != nil && len(def.Routes) > 0 {
		return def.Routes, true
	}
	return nil, false
}

// mergedSubsets merges the subsets of def and svc key by key, svc winning
// (nil when there are no subsets). The result is the subsets of def or svc
// when only one has some, else a new map of their selectors.
func mergedSubsets(def, svc *Service) map[string]map[string]string {
	var own, inherited map[string]map[string]string
	if svc != nil {
		own = svc.Subsets
	}
	if def != nil {
		inherited = def.Subsets
	}
	switch {
	case len(own) == 0 && len(inherited) == 0:
		return nil
	case len(inherited) == 0:
		return own
	case len(own) == 0:
		return inherited
	}
	out := maps.Clone(inherited)
	maps.Copy(out, own)
	return out
}

// resolveAuthorization takes the service's authorization block, or the
// defaults' when it has none, with Default and Mode resolved ("" is deny,
// enforce) and methods upper case. The rules and the deny list are the
// block's unless a method must be put in upper case.
func resolveAuthorization(def, svc *Service) Authorization {
	var a Authorization
	switch {
	case svc != nil && svc.Authorization != nil:
		a = *svc.Authorization
	case def != nil && def.Authorization != nil:
		a = *def.Authorization
	}
	if a.Default == "" {
		a.Default = defaultAuthorization
	}
	if a.Mode == "" {
		a.Mode = AuthzEnforce
	}
	a.Rules = upperRules(a.Rules)
	a.Deny = upperRules(a.Deny)
	return a
}

// upperRules returns rules with their methods in upper case: rules itself
// when they are, else a copy.
func upperRules(rules []Rule) []Rule {
	for i := range rules {
		if m := upper(rules[i].Methods); !sameSlice(m, rules[i].Methods) {
			rules = slices.Clone(rules)
			for j := i; j < len(rules); j++ {
				rules[j].Methods = upper(rules[j].Methods)
			}
			break
		}
	}
	return rules
}

// normalizeMatch returns m with its methods in upper case and the names
// of its header conditions in lower case (a copy of the conditions when
// one is not).
func normalizeMatch(m Match) Match {
	m.Methods = upper(m.Methods)
	for i := range m.Header {
		if l := strings.ToLower(m.Header[i].Name); l != m.Header[i].Name {
			m.Header = slices.Clone(m.Header)
			for j := i; j < len(m.Header); j++ {
				m.Header[j].Name = strings.ToLower(m.Header[j].Name)
			}
			break
		}
	}
	return m
}

// normalizeMutation returns a copy of hm with its header names in lower
// case, nil when hm changes no header.
func normalizeMutation(hm *HeaderMutation) *HeaderMutation {
	if hm == nil || len(hm.Add) == 0 && len(hm.Set) == 0 && len(hm.Remove) == 0 {
		return nil
	}
	lowerKeys := func(m map[string]string) map[string]string {
		if len(m) == 0 {
			return nil
		}
		out := make(map[string]string, len(m))
		for k, v := range m {
			out[strings.ToLower(k)] = v
		}
		return out
	}
	out := &HeaderMutation{Add: lowerKeys(hm.Add), Set: lowerKeys(hm.Set)}
	for _, name := range hm.Remove {
		out.Remove = append(out.Remove, strings.ToLower(name))
	}
	return out
}

// upper returns s in upper case: s itself when it is, else a new slice.
func upper(s []string) []string {
	for i := range s {
		if u := strings.ToUpper(s[i]); u != s[i] {
			out := slices.Clone(s)
			for j := i; j < len(out); j++ {
				out[j] = strings.ToUpper(out[j])
			}
			return out
		}
	}
	return s
}

// sameSlice reports whether a and b are the same slice (not just equal).
func sameSlice(a, b []string) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// effective merges settings levels, least specific first (nil levels are
// skipped), field by field, and fills in every default.
func effective(levels ...*Settings) Effective {
	e := Effective{
		Attempts:           defaultAttempts,
		BudgetRatio:        defaultBudgetRatio,
		BudgetMinPerSecond: defaultBudgetMinPerSecond,
		LoadBalancer:       defaultLoadBalancer,
	}
	var (
		retryOn    []string
		backoffMax time.Duration
		ring       *RingHash
		hash       []HashPolicy
	)
	for _, s := range levels {
		if s == nil {
			continue
		}
		setDuration(&e.Timeout, s.Timeout)
		setDuration(&e.ConnectTimeout, s.ConnectTimeout)
		if r := s.Retry; r != nil {
			setInt(&e.Attempts, r.Attempts)
			setDuration(&e.PerTryTimeout, r.PerTryTimeout)
			if b := r.Backoff; b != nil {
				setDuration(&e.BackoffInitial, b.Initial)
				setDuration(&backoffMax, b.Max)
			}
			if r.RetryOn != nil {
				retryOn = r.RetryOn
			}
			if b := r.Budget; b != nil {
				if b.Ratio != nil {
					e.BudgetRatio = *b.Ratio
				}
				if b.MinPerSecond != nil {
					e.BudgetMinPerSecond = *b.MinPerSecond
				}
			}
			if r.NonIdempotent != nil {
				e.NonIdempotent = *r.NonIdempotent
			}
		}
		if c := s.CircuitBreaker; c != nil {
			if e.CircuitBreaker == nil {
				e.CircuitBreaker = new(CircuitBreaker)
			}
			cb := e.CircuitBreaker
			// A level that names a form (consecutive failures or a
			// failure rate) drops the other form of the levels below it.
			if c.FailureRate != 0 {
				cb.ConsecutiveFailures = 0
				cb.FailureRate = c.FailureRate
			}
			if c.ConsecutiveFailures != 0 {
				cb.FailureRate, cb.Window, cb.MinCalls = 0, 0, 0
				cb.ConsecutiveFailures = c.ConsecutiveFailures
			}
			if c.Window != 0 {
				cb.Window = c.Window
			}
			setInt(&cb.MinCalls, c.MinCalls)
			setInt(&cb.HalfOpenRequests, c.HalfOpenRequests)
			if c.OpenFor != 0 {
				cb.OpenFor = c.OpenFor
			}
		}
		if o := s.OutlierDetection; o != nil {
			if e.OutlierDetection == nil {
				e.OutlierDetection = new(OutlierDetection)
			}
			setInt(&e.OutlierDetection.ConsecutiveFailures, o.ConsecutiveFailures)
			setInt(&e.OutlierDetection.MaxEjectionPercent, o.MaxEjectionPercent)
			if o.BaseEjection != 0 {
				e.OutlierDetection.BaseEjection = o.BaseEjection
			}
		}
		if s.LoadBalancer != "" {
			e.LoadBalancer = s.LoadBalancer
		} else if len(s.Hash) > 0 && !isHashLB(e.LoadBalancer) {
			e.LoadBalancer = "ring_hash"
		}
		if s.Hash != nil {
			hash = s.Hash
		}
		if s.RingHash != nil {
			ring = s.RingHash
		}
		if s.TLS != "" {
			e.TLS = s.TLS
		}
		if s.Hedge != nil {
			e.Hedge = s.Hedge
		}
		if s.Fault != nil {
			e.Fault = s.Fault
		}
	}

	if e.BackoffInitial == 0 {
		e.BackoffInitial = defaultBackoffInitial
	}
	// An unset max never undercuts the initial delay: backoff {initial: 1s}
	// alone means a constant 1s.
	e.BackoffMax = cmp.Or(backoffMax, max(defaultBackoffMax, e.BackoffInitial))
	switch {
	case retryOn != nil:
		e.RetryOn = retryOn
	case e.Attempts > 1:
		e.RetryOn = DefaultRetryOn()
	}
	if c := e.CircuitBreaker; c != nil {
		if c.FailureRate > 0 {
			c.Window = cmp.Or(c.Window, Duration(defaultBreakerWindow))
			c.MinCalls = cmp.Or(c.MinCalls, defaultBreakerMinCalls)
		} else {
			c.ConsecutiveFailures = cmp.Or(c.ConsecutiveFailures, defaultBreakerFailures)
			c.Window, c.MinCalls = 0, 0
		}
		c.OpenFor = cmp.Or(c.OpenFor, Duration(defaultBreakerOpenFor))
		c.HalfOpenRequests = cmp.Or(c.HalfOpenRequests, defaultBreakerHalfOpen)
	}
	if h := e.Hedge; h != nil {
		r := *h
		r.Max = cmp.Or(r.Max, defaultHedgeMax)
		nonIdempotent := r.NonIdempotent != nil && *r.NonIdempotent
		r.NonIdempotent = &nonIdempotent
		e.Hedge = &r
	}
	if f := e.Fault; f != nil && f.Abort != nil && (f.Abort.HTTPStatus == 0 || f.Abort.GRPCCode == "") {
		r, a := *f, *f.Abort
		a.HTTPStatus = cmp.Or(a.HTTPStatus, defaultFaultHTTPStatus)
		a.GRPCCode = cmp.Or(a.GRPCCode, defaultFaultGRPCCode)
		r.Abort = &a
		e.Fault = &r
	}
	switch e.LoadBalancer {
	case "ring_hash":
		h := &HashLB{Policies: hash, MaximumRingSize: defaultMaxRingSize}
		if ring != nil {
			h.MinimumRingSize = ring.MinimumRingSize
			h.MaximumRingSize = cmp.Or(ring.MaximumRingSize, defaultMaxRingSize)
		}
		h.MinimumRingSize = cmp.Or(h.MinimumRingSize, min(defaultMinRingSize, h.MaximumRingSize))
		e.Hash = h
	case "maglev":
		e.Hash = &HashLB{Policies: hash, TableSize: maglevTableSize}
	}
	if o := e.OutlierDetection; o != nil {
		o.ConsecutiveFailures = cmp.Or(o.ConsecutiveFailures, defaultOutlierFailures)
		o.BaseEjection = cmp.Or(o.BaseEjection, Duration(defaultOutlierBaseEjection))
		o.MaxEjectionPercent = cmp.Or(o.MaxEjectionPercent, defaultOutlierMaxPercent)
	}
	return e
}

// setInt and setDuration store v when it is set (non-zero).
func setInt(dst *int, v int) {
	if v != 0 {
		*dst = v
	}
}

func setDuration(dst *time.Duration, v Duration) {
	if v != 0 {
		*dst = v.Std()
	}
}

// effectiveJSON is the JSON form of Effective: snake_case names as in the
// document, durations as Go duration strings.
type effectiveJSON struct {
	Timeout            Duration          `json:"timeout,omitempty"`
	Attempts           int               `json:"attempts"`
	PerTryTimeout      Duration          `json:"per_try_timeout,omitempty"`
	BackoffInitial     Duration          `json:"backoff_initial"`
	BackoffMax         Duration          `json:"backoff_max"`
	RetryOn            []string          `json:"retry_on"`
	BudgetRatio        float64           `json:"budget_ratio"`
	BudgetMinPerSecond int               `json:"budget_min_per_second"`
	NonIdempotent      bool              `json:"non_idempotent"`
	CircuitBreaker     *CircuitBreaker   `json:"circuit_breaker,omitempty"`
	OutlierDetection   *OutlierDetection `json:"outlier_detection,omitempty"`
	LoadBalancer       string            `json:"load_balancer"`
	Hash               *HashLB           `json:"hash,omitempty"`
	TLS                string            `json:"tls,omitempty"`
	Hedge              *Hedge            `json:"hedge,omitempty"`
	Fault              *Fault            `json:"fault,omitempty"`
	ConnectTimeout     Duration          `json:"connect_timeout,omitempty"`
}

// MarshalJSON renders e for the admin page: snake_case names as in the
// document and durations as strings ("250ms"). A zero timeout or
// per_try_timeout (none), connect_timeout (the transport's default) and an
// empty tls are left out.
func (e Effective) MarshalJSON() ([]byte, error) {
	retryOn := e.RetryOn
	if retryOn == nil {
		retryOn = []string{}
	}
	return json.Marshal(effectiveJSON{
		Hash:               e.Hash,
		Timeout:            Duration(e.Timeout),
		Attempts:           e.Attempts,
		PerTryTimeout:      Duration(e.PerTryTimeout),
		BackoffInitial:     Duration(e.BackoffInitial),
		BackoffMax:         Duration(e.BackoffMax),
		RetryOn:            retryOn,
		BudgetRatio:        e.BudgetRatio,
		BudgetMinPerSecond: e.BudgetMinPerSecond,
		NonIdempotent:      e.NonIdempotent,
		CircuitBreaker:     e.CircuitBreaker,
		OutlierDetection:   e.OutlierDetection,
		LoadBalancer:       e.LoadBalancer,
		TLS:                e.TLS,
		Hedge:              e.Hedge,
		Fault:              e.Fault,
		ConnectTimeout:     Duration(e.ConnectTimeout),
	})
}

// namesService reports whether ws or one of its failover targets names a
// service.
func namesService(ws WeightedSubset) bool {
	return ws.Service != "" || slices.ContainsFunc(ws.Failover, func(t Target) bool { return t.Service != "" })
}
