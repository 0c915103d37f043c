package mesh

import (
	"context"
	"time"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/resilience"
)

// registry keeps the stateful parts of the data plane (breakers, budgets,
// outlier trackers, hosts) across recompilations, keyed by their
// configuration, so that a policy or endpoint update keeps the state of
// everything whose configuration did not change. Only the compiling
// goroutine touches it, under Mesh.mu.
type registry struct {
	breakers map[breakerKey]*resilience.Breaker
	budgets  map[budgetKey]*resilience.Budget
	outliers map[outlierKey]*resilience.Outlier
	hosts    map[hostKey]*discovery.Host
}

type breakerKey struct {
	service, scope string
	cfg            resilience.BreakerConfig
}

type budgetKey struct {
	service string
	ratio   float64
	min     int
}

type outlierKey struct {
	service  string
	failures int
	base     time.Duration
	maxPct   int
}

type hostKey struct {
	service, address string
	outlier          *resilience.Outlier
}

func newRegistry() *registry {
	return &registry{
		breakers: map[breakerKey]*resilience.Breaker{},
		budgets:  map[budgetKey]*resilience.Budget{},
		outliers: map[outlierKey]*resilience.Outlier{},
		hosts:    map[hostKey]*discovery.Host{},
	}
}

// compiler turns a policy snapshot and an endpoint snapshot into a state.
// It carries over stateful parts from old and collects the ones in use into
// next, which replaces the mesh's registry afterwards.
type compiler struct {
	m    *Mesh
	old  *registry
	next *registry
}

func (m *Mesh) compile(pol *policy.Snapshot, eps *discovery.Snapshot) *state {
	c := &compiler{m: m, old: m.reg, next: newRegistry()}
	self := pol.Service(m.cfg.service)
	st := &state{policy: pol, endpoints: eps, services: make(map[string]*destination, len(pol.Services)),
		self: compileSelfAuthz(self), replaced: make(chan struct{})}
	st.selfPlaintext = self != nil && m.tlsMode(&self.Effective) == tlsDisable
	st.egressDeny = pol.Doc.Egress == policy.EgressDeny
	for name, svc := range pol.Services {
		st.services[name] = c.destination(pol, svc, eps.Endpoints(name))
	}
	m.reg = c.next
	return st
}

func (c *compiler) destination(pol *policy.Snapshot, svc *policy.ResolvedService, eps []discovery.Endpoint) *destination {
	d := &destination{name: svc.Name, version: pol.Version, hasRoutes: svc.HasRoutes, tls: c.m.tlsMode(&svc.Effective)}
	if od := svc.Effective.OutlierDetection; od != nil {
		d.outlier = c.outlier(svc.Name, od)
		addrs := make([]string, len(eps))
		for i, ep := range eps {
			addrs[i] = ep.Address
		}
		d.outlier.SetPool(addrs)
	}
	d.breaker = c.breaker(svc.Name, "", svc.Effective.CircuitBreaker)

	for i := range svc.Routes {
		rr := &svc.Routes[i]
		rt := &route{
			dest:           d,
			name:           rr.Name,
			match:          compileMatch(rr.Match),
			eff:            &rr.Effective,
			counter:        c.m.instr.AttemptCounter(svc.Name, rr.Name),
			idempotentOnly: !rr.Effective.NonIdempotent,
			mtls:           c.m.tlsMode(&rr.Effective) == tlsStrict,
			backoff: resilience.BackoffConfig{
				Initial: rr.Effective.BackoffInitial,
				Max:     rr.Effective.BackoffMax,
			},
		}
		if rr.Effective.Attempts > 1 {
			ro, err := resilience.ParseRetryOn(rr.Effective.RetryOn)
			if err != nil {
				// The policy validated retry_on already; keep the call path
				// safe anyway and retry on nothing.
				c.m.log.Error("retry_on did not parse after validation", "service", svc.Name, "route", rr.Name, "err", err)
			}
			rt.retryOn = ro
			rt.budget = c.budget(svc.Name, rr.Effective.BudgetRatio, rr.Effective.BudgetMinPerSecond)
		}
		// A route shares the service's breaker unless it overrides it.
		if sameBreaker(rr.Effective.CircuitBreaker, svc.Effective.CircuitBreaker) {
			rt.breaker = d.breaker
		} else {
			rt.breaker = c.breaker(svc.Name, rr.Name, rr.Effective.CircuitBreaker)
		}
		if len(rr.Split) == 0 {
			rt.all = c.pool(svc.Name, "", eps, rr.Effective.LoadBalancer, d.outlier)
		} else {
			cum := 0
			for _, ws := range rr.Split {
				cum += ws.Weight
				sel := discovery.Select(eps, svc.Subsets[ws.Subset])
				rt.split = append(rt.split, splitEntry{
					subset: ws.Subset,
					weight: ws.Weight,
					cum:    cum,
					pool:   c.pool(svc.Name, ws.Subset, sel, rr.Effective.LoadBalancer, d.outlier),
				})
			}
			rt.total = cum
		}
		d.routes = append(d.routes, rt)
	}
	return d
}

func sameBreaker(a, b *policy.CircuitBreaker) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func (c *compiler) pool(service, subset string, eps []discovery.Endpoint, lb string, o *resilience.Outlier) *pool {
	p := &pool{subset: subset, hosts: make([]*discovery.Host, 0, len(eps))}
	for _, ep := range eps {
		p.hosts = append(p.hosts, c.host(service, ep, o))
	}
	picker, err := discovery.NewPicker(lb, p.hosts)
	if err != nil {
		// Validated by the policy; fall back to round robin rather than
		// leaving the route without a picker.
		c.m.log.Error("load balancer rejected after validation", "service", service, "lb", lb, "err", err)
		picker, _ = discovery.NewPicker("", p.hosts)
	}
	p.picker = picker
	return p
}

func (c *compiler) host(service string, ep discovery.Endpoint, o *resilience.Outlier) *discovery.Host {
	k := hostKey{service: service, address: ep.Address, outlier: o}
	h, ok := c.next.hosts[k]
	if ok && sameLabels(h.Labels, ep.Labels) {
		return h
	}
	if h, ok = c.old.hosts[k]; !ok || !sameLabels(h.Labels, ep.Labels) {
		var avail discovery.Availability
		if o != nil {
			avail = o.Host(ep.Address)
		}
		h = discovery.NewHost(ep, avail)
	}
	c.next.hosts[k] = h
	return h
}

func sameLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func (c *compiler) breaker(service, scope string, cb *policy.CircuitBreaker) *resilience.Breaker {
	if cb == nil {
		return nil
	}
	k := breakerKey{service: service, scope: scope, cfg: resilience.BreakerConfig{
		ConsecutiveFailures: cb.ConsecutiveFailures,
		OpenFor:             cb.OpenFor.Std(),
		HalfOpenRequests:    cb.HalfOpenRequests,
	}}
	b, ok := c.next.breakers[k]
	if !ok {
		if b, ok = c.old.breakers[k]; !ok {
			name := service
			if scope != "" {
				name = service + "/" + scope
			}
			b = resilience.NewBreaker(name, k.cfg, c.m.onBreakerChange(service))
		}
		c.next.breakers[k] = b
	}
	return b
}

func (c *compiler) budget(service string, ratio float64, min int) *resilience.Budget {
	k := budgetKey{service: service, ratio: ratio, min: min}
	b, ok := c.next.budgets[k]
	if !ok {
		if b, ok = c.old.budgets[k]; !ok {
			b = resilience.NewBudget(resilience.BudgetConfig{Ratio: ratio, MinPerSecond: min}, c.m.clock)
		}
		c.next.budgets[k] = b
	}
	return b
}

func (c *compiler) outlier(service string, od *policy.OutlierDetection) *resilience.Outlier {
	k := outlierKey{service: service, failures: od.ConsecutiveFailures, base: od.BaseEjection.Std(), maxPct: od.MaxEjectionPercent}
	o, ok := c.next.outliers[k]
	if !ok {
		if o, ok = c.old.outliers[k]; !ok {
			o = resilience.NewOutlier(resilience.OutlierConfig{
				ConsecutiveFailures: k.failures,
				BaseEjection:        k.base,
				MaxEjectionPercent:  k.maxPct,
				OnEject:             c.m.onEject(service),
			}, c.m.clock)
		}
		c.next.outliers[k] = o
	}
	return o
}

// onBreakerChange logs and counts the transitions of a service's breaker.
func (m *Mesh) onBreakerChange(service string) func(name, from, to string) {
	// gobreaker's callback carries no context: the counter is recorded
	// without one.
	return func(name, from, to string) {
		m.log.Warn("circuit breaker changed state", "service", service, "breaker", name, "from", from, "to", to)
		m.instr.RecordBreakerTransition(context.Background(), service, from, to)
	}
}

// onEject logs and counts outlier ejections of a service's endpoints.
func (m *Mesh) onEject(service string) func(addr string, until time.Time) {
	return func(addr string, until time.Time) {
		m.log.Warn("endpoint ejected", "service", service, "endpoint", addr, "until", until.Format(time.RFC3339Nano))
		m.instr.RecordEjection(context.Background(), service, addr)
	}
}
