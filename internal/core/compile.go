package core

import (
	"context"
	"log/slog"
	"maps"
	"regexp"
	"strconv"
	"time"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/resilience"
	"github.com/inmesh/inmesh/telemetry"
)

// Registry keeps the stateful parts of the data plane (breakers, budgets,
// outlier trackers, hosts) across compilations, keyed by their
// configuration, so that a policy or endpoint update keeps the state of
// everything whose configuration did not change, and the destinations
// compiled, so that an update compiles only those whose inputs changed
// (reuse.go). A part is held while a destination uses it (a count of
// uses). It is not safe for concurrent use: one goroutine compiles at a
// time.
type Registry struct {
	breakers map[breakerKey]*held[*resilience.Breaker]
	budgets  map[budgetKey]*held[*resilience.Budget]
	outliers map[outlierKey]*held[*resilience.Outlier]
	hosts    map[hostKey]*held[*discovery.Host]
	// faults holds the routes whose fault block was warned of, with the
	// block: a recompilation that does not change it does not warn again.
	faults   map[faultKey]*held[struct{}]
	latency  map[latencyKey]*held[*resilience.LatencyTracker]
	limiters map[limiterKey]*held[*resilience.Limiter]
	// hashPickers are the ring_hash and maglev pickers.
	hashPickers map[hashPickerKey]*held[*discovery.HashPicker]
	// regexes holds the compiled regexes of the routes' matches, so that
	// a recompilation for new endpoints does not compile them again.
	regexes map[string]*held[*regexp.Regexp]

	// env is the env of the last compilation, and dests the destinations
	// it compiled: the next compilation with the same env reuses those
	// whose inputs did not change.
	env   *Env
	dests map[string]*compiled
}

type limiterKey struct {
	service string
	cfg     resilience.LimiterConfig
}

// latencyKey names the latency tracker of a route: its histogram stays
// across reloads, whatever quantile the route's hedge reads of it.
type latencyKey struct{ service, route string }

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

// faultKey names a route's fault block: block is what it injects
// (Fault.String).
type faultKey struct{ service, route, block string }

type hostKey struct {
	service, address string
	outlier          *resilience.Outlier
}

// NewRegistry returns an empty registry, for the first compilation.
func NewRegistry() *Registry {
	return &Registry{
		breakers:    map[breakerKey]*held[*resilience.Breaker]{},
		budgets:     map[budgetKey]*held[*resilience.Budget]{},
		outliers:    map[outlierKey]*held[*resilience.Outlier]{},
		hosts:       map[hostKey]*held[*discovery.Host]{},
		faults:      map[faultKey]*held[struct{}]{},
		latency:     map[latencyKey]*held[*resilience.LatencyTracker]{},
		limiters:    map[limiterKey]*held[*resilience.Limiter]{},
		hashPickers: map[hashPickerKey]*held[*discovery.HashPicker]{},
		regexes:     map[string]*held[*regexp.Regexp]{},
		dests:       map[string]*compiled{},
	}
}

// compiler turns a policy snapshot and an endpoint snapshot into
// destinations. It takes the stateful parts from reg, where those of the
// destinations it compiles are held (used).
type compiler struct {
	env    *Env
	reg    *Registry
	millis func(ms int64) Millis
	pol    *policy.Snapshot    // the policy compiled
	eps    *discovery.Snapshot // the endpoints of its services
	// used collects the parts of the destination being compiled.
	used *parts
}

// millisOf returns a Millis formatter that shares the text of equal
// counts: the routes of one policy mostly have a few timeouts.
func millisOf() func(ms int64) Millis {
	texts := map[int64]string{}
	return func(ms int64) Millis {
		t, ok := texts[ms]
		if !ok {
			t = strconv.FormatInt(ms, 10)
			texts[ms] = t
		}
		return Millis{N: ms, Text: t}
	}
}

// Compile compiles every service of pol with its endpoints in eps. The
// stateful parts whose configuration reg holds are carried over, and the
// destination of a service whose inputs are those of the last compilation
// (with the same env) is the last one, not compiled again (see reuse.go).
// Compile updates reg, which then holds what is in use, and returns it
// for the next Compile: reg is not to be used for another one.
func Compile(env *Env, reg *Registry, pol *policy.Snapshot, eps *discovery.Snapshot) (map[string]*Destination, *Registry) {
	names := make([]string, 0, len(pol.Services))
	for name := range pol.Services {
		names = append(names, name)
	}
	return compileNames(env, reg, pol, eps, names), reg
}

// CompileActive is Compile of the services that are in use, not of all:
// those the last compilation compiled (the active ones: called since they
// came into the policy) that pol still has, those of also that pol has,
// and the other services their splits and failover targets call. The
// other services of pol are compiled when something needs them
// (CompileMore). Most workloads call a few services of a policy that
// holds a whole fleet's: an update then costs what it changes of those.
func CompileActive(env *Env, reg *Registry, pol *policy.Snapshot, eps *discovery.Snapshot, also ...string) (map[string]*Destination, *Registry) {
	names := make([]string, 0, len(reg.dests)+len(also))
	for name := range reg.dests {
		names = append(names, name)
	}
	names = append(names, also...)
	return compileNames(env, reg, pol, eps, names), reg
}

// CompileMore compiles service name of pol, and the other services its
// splits and failover targets call, into a copy of in, which it returns
// with name's destination (nil when pol has no such service; then the
// copy is not made and in is returned). pol, eps and in must be those of
// the last compilation with reg, which CompileMore updates: the services
// it adds are active from then on (CompileActive).
func CompileMore(env *Env, reg *Registry, pol *policy.Snapshot, eps *discovery.Snapshot, in map[string]*Destination, name string) (map[string]*Destination, *Destination) {
	if d := in[name]; d != nil {
		return in, d
	}
	if pol.Services[name] == nil {
		return in, nil
	}
	c := &compiler{env: env, reg: reg, millis: millisOf(), pol: pol, eps: eps}
	same := reg.env == env
	reg.env = env
	out := make(map[string]*Destination, len(in)+1)
	for n, d := range in {
		out[n] = d
	}
	var stale []*compiled
	c.want(out, []string{name}, same, &stale)
	for _, cd := range stale {
		reg.release(&cd.used)
	}
	env.Instr.SetConcurrencyLimits(limitsOf(out))
	return out, out[name]
}

// compileNames compiles the services of names that pol has, and those
// their splits call, reusing what it can of reg's last compilation, and
// lets go of what that compiled and this one does not.
func compileNames(env *Env, reg *Registry, pol *policy.Snapshot, eps *discovery.Snapshot, names []string) map[string]*Destination {
	c := &compiler{env: env, reg: reg, millis: millisOf(), pol: pol, eps: eps}
	same := reg.env == env
	reg.env = env
	out := make(map[string]*Destination, len(names))
	// stale are the destinations replaced: their parts are let go once
	// the new ones hold theirs, so that the parts they share stay.
	var stale []*compiled
	c.want(out, names, same, &stale)
	if len(reg.dests) > len(out) {
		for name, cd := range reg.dests {
			if out[name] == nil {
				stale = append(stale, cd)
				delete(reg.dests, name)
			}
		}
	}
	for _, cd := range stale {
		reg.release(&cd.used)
	}
	env.Instr.SetConcurrencyLimits(limitsOf(out))
	return out
}

// want puts into out the destination of every service of names that pol
// has and out has not yet, and of the services their splits call: the
// last one when reusable (same env and inputs), else a new one, whose
// predecessor goes to stale.
func (c *compiler) want(out map[string]*Destination, names []string, same bool, stale *[]*compiled) {
	for i := 0; i < len(names); i++ {
		name := names[i]
		if out[name] != nil {
			continue
		}
		svc := c.pol.Services[name]
		if svc == nil {
			continue
		}
		cd := c.reg.dests[name]
		if cd == nil || !same || !c.reusable(cd) {
			if cd != nil {
				*stale = append(*stale, cd)
			}
			cd = c.compile(name, svc)
			c.reg.dests[name] = cd
		}
		out[name] = cd.d
		// The adapters read the TLS mode of the services a split calls
		// (a gRPC connection's handshake proves their identity).
		names = append(names, cd.d.Needs...)
	}
}

// limitsOf returns the concurrency limiters of dests, by service.
func limitsOf(dests map[string]*Destination) map[string]telemetry.LimitSource {
	limits := map[string]telemetry.LimitSource{}
	for name, d := range dests {
		if d.Limiter != nil {
			limits[name] = d.Limiter
		}
	}
	return limits
}

// Preview compiles service name of pol as a call would find it if it was
// compiled now, for a view of a service that is not (an admin page): with
// parts of its own, new (a service not called has none of its registry's
// that a call would have changed), no log and no instruments, and nothing
// kept. It returns nil when pol has no such service.
func Preview(env *Env, pol *policy.Snapshot, eps *discovery.Snapshot, name string) *Destination {
	svc := pol.Services[name]
	if svc == nil {
		return nil
	}
	quiet := *env
	quiet.Log, quiet.Instr = slog.New(slog.DiscardHandler), nil
	c := &compiler{env: &quiet, reg: NewRegistry(), millis: millisOf(), pol: pol, eps: eps}
	return c.compile(name, svc).d
}

func (c *compiler) destination(svc *policy.ResolvedService, eps []discovery.Endpoint) *Destination {
	d := &Destination{Name: svc.Name, HasRoutes: svc.HasRoutes, TLS: TLSMode(&svc.Effective)}
	d.ConnectTimeout = svc.Effective.ConnectTimeout
	if od := svc.Effective.OutlierDetection; od != nil {
		d.Outlier = c.outlier(svc.Name, od)
		addrs := make([]string, len(eps))
		for i, ep := range eps {
			addrs[i] = ep.Address
		}
		d.Outlier.SetPool(addrs)
	}
	d.Breaker = c.breaker(svc.Name, "", svc.Effective.CircuitBreaker)
	if cc := svc.Concurrency; cc != nil {
		d.Limiter = c.limiter(svc.Name, cc)
		d.Shed = c.env.Instr.ShedCounter(svc.Name)
	}

	for i := range svc.Routes {
		rr := &svc.Routes[i]
		rt := &Route{
			Dest:           d,
			Name:           rr.Name,
			Eff:            &rr.Effective,
			Counter:        c.env.Instr.AttemptCounter(svc.Name, rr.Name),
			IdempotentOnly: !rr.Effective.NonIdempotent,
			MTLS:           TLSMode(&rr.Effective) == TLSStrict,
			Backoff: resilience.BackoffConfig{
				Initial: rr.Effective.BackoffInitial,
				Max:     rr.Effective.BackoffMax,
			},
		}
		c.routeMatch(svc.Name, rr, rt)
		if t := rr.Effective.Timeout; t > 0 {
			rt.TimeoutMs = c.millis(int64(t / time.Millisecond))
		}
		rt.Fault = c.fault(svc.Name, rr.Name, rr.Effective.Fault)
		if rr.Effective.Attempts > 1 {
			ro, err := resilience.ParseRetryOn(rr.Effective.RetryOn)
			if err != nil {
				// The policy validated retry_on already; keep the call path
				// safe anyway and retry on nothing.
				c.env.Log.Error("retry_on did not parse after validation", "service", svc.Name, "route", rr.Name, "err", err)
			}
			rt.RetryOn = ro
		}
		rt.Hedge = c.hedge(svc.Name, rr.Name, rr.Effective.Hedge)
		rt.Hash = NewHasher(rr.Effective.Hash)
		if rr.Effective.Attempts > 1 || rt.Hedge != nil {
			// Hedges draw on the retry budget too.
			rt.Budget = c.budget(svc.Name, rr.Effective.BudgetRatio, rr.Effective.BudgetMinPerSecond)
		}
		// A route shares the service's breaker unless it overrides it.
		if sameBreaker(rr.Effective.CircuitBreaker, svc.Effective.CircuitBreaker) {
			rt.Breaker = d.Breaker
		} else {
			rt.Breaker = c.breaker(svc.Name, rr.Name, rr.Effective.CircuitBreaker)
		}
		if len(rr.Split) == 0 {
			rt.All = c.pool(svc.Name, "", eps, lbOf(&rr.Effective), d.Outlier)
			rt.All.Service, rt.All.MTLS, rt.All.ConnectTimeout = svc.Name, rt.MTLS, rr.Effective.ConnectTimeout
		} else {
			c.splitEntries(d, svc, rr, rt, eps)
		}
		d.Routes = append(d.Routes, rt)
	}
	return d
}

// routeMatch compiles the match of route rr into rt, and its actions on
// the request (prefix_rewrite, request_headers). The regexes are compiled
// once: those of the last compilation are kept.
func (c *compiler) routeMatch(service string, rr *policy.ResolvedRoute, rt *Route) {
	res := Regexes{}
	for _, expr := range matchRegexes(&rr.Match) {
		if re, ok := part(c.reg.regexes, expr); ok {
			res[expr] = re
		}
	}
	m, err := compileMatch(rr.Match, res)
	if err != nil {
		// The policy validated the regexes already; the condition never
		// holds.
		c.env.Log.Error("route match did not compile after validation", "service", service, "route", rr.Name, "err", err)
	}
	for expr, re := range res {
		hold(c.reg.regexes, &c.used.regexes, expr, re)
	}
	rt.Match = m
	rt.Rewrite, rt.Headers = compileActions(rr)
}

func sameBreaker(a, b *policy.CircuitBreaker) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// balancer is a route's load balancer: its name and ring sizes.
type balancer struct {
	name string
	opts discovery.HashOptions
}

func lbOf(eff *policy.Effective) balancer {
	b := balancer{name: eff.LoadBalancer}
	if h := eff.Hash; h != nil {
		b.opts = discovery.HashOptions{MinRingSize: h.MinimumRingSize, MaxRingSize: h.MaximumRingSize}
	}
	return b
}

func (c *compiler) pool(service, subset string, eps []discovery.Endpoint, lb balancer, o *resilience.Outlier) *Pool {
	p := &Pool{Subset: subset, Hosts: make([]*discovery.Host, 0, len(eps))}
	for _, ep := range eps {
		p.Hosts = append(p.Hosts, c.host(service, ep, o))
	}
	if len(eps) == 0 && len(c.eps.Endpoints(service)) == 0 {
		p.Why = c.eps.WhyEmpty(service)
	}
	if hp := c.hashPicker(lb, p.Hosts); hp != nil {
		p.Picker, p.Hash = hp, hp
		return p
	}
	picker, err := discovery.NewPickerOptions(lb.name, p.Hosts, lb.opts)
	if err != nil {
		// Validated by the policy; fall back to round robin rather than
		// leaving the route without a picker.
		c.env.Log.Error("load balancer rejected after validation", "service", service, "lb", lb.name, "err", err)
		picker, _ = discovery.NewPicker("", p.Hosts)
	}
	p.Picker = picker
	return p
}

func (c *compiler) host(service string, ep discovery.Endpoint, o *resilience.Outlier) *discovery.Host {
	k := hostKey{service: service, address: ep.Address, outlier: o}
	h, ok := part(c.reg.hosts, k)
	if !ok || !maps.Equal(h.Labels, ep.Labels) {
		var avail discovery.Availability
		if o != nil {
			avail = o.Host(ep.Address)
		}
		h = discovery.NewHost(ep, avail)
	}
	hold(c.reg.hosts, &c.used.hosts, k, h)
	return h
}

func (c *compiler) breaker(service, scope string, cb *policy.CircuitBreaker) *resilience.Breaker {
	if cb == nil {
		return nil
	}
	// Every field of the form is in the key (the clock is not: it is the
	// env's, the same for every compilation): a reload that changes the
	// form or a threshold gets a fresh breaker, one that does not keeps
	// its state.
	k := breakerKey{service: service, scope: scope, cfg: resilience.BreakerConfig{
		ConsecutiveFailures: cb.ConsecutiveFailures,
		FailureRate:         cb.FailureRate,
		Window:              cb.Window.Std(),
		MinCalls:            cb.MinCalls,
		OpenFor:             cb.OpenFor.Std(),
		HalfOpenRequests:    cb.HalfOpenRequests,
	}}
	b, ok := part(c.reg.breakers, k)
	if !ok {
		name := service
		if scope != "" {
			name = service + "/" + scope
		}
		cfg := k.cfg
		cfg.Clock = c.env.Clock
		b = resilience.NewBreaker(name, cfg, c.onBreakerChange(service))
	}
	hold(c.reg.breakers, &c.used.breakers, k, b)
	return b
}

// limiter returns the concurrency limiter of service for cc, the one of
// the last compilation when its configuration is the same: a reload keeps
// the limit an adaptive one learned.
func (c *compiler) limiter(service string, cc *policy.Concurrency) *resilience.Limiter {
	cfg := resilience.LimiterConfig{Max: cc.Max, MaxWait: cc.MaxWait.Std()}
	if a := cc.Adaptive; a != nil {
		cfg = resilience.LimiterConfig{Adaptive: true, Min: a.Min, Initial: a.Initial, Max: a.Max, MaxWait: cfg.MaxWait}
	}
	k := limiterKey{service: service, cfg: cfg}
	l, ok := part(c.reg.limiters, k)
	if !ok {
		l = resilience.NewLimiter(service, cfg, c.env.Clock)
	}
	hold(c.reg.limiters, &c.used.limiters, k, l)
	return l
}

func (c *compiler) budget(service string, ratio float64, min int) *resilience.Budget {
	k := budgetKey{service: service, ratio: ratio, min: min}
	b, ok := part(c.reg.budgets, k)
	if !ok {
		b = resilience.NewBudget(resilience.BudgetConfig{Ratio: ratio, MinPerSecond: min}, c.env.Clock)
	}
	hold(c.reg.budgets, &c.used.budgets, k, b)
	return b
}

// maxHedges bounds a hedge's max, which the policy validates (1..5).
const maxHedges = 5

// hedge compiles the hedge block of route (nil: none).
func (c *compiler) hedge(service, route string, h *policy.Hedge) *Hedge {
	if h == nil {
		return nil
	}
	out := &Hedge{Delay: h.Delay.Std(), Max: min(max(h.Max, 1), maxHedges), NonIdempotent: h.NonIdempotent != nil && *h.NonIdempotent}
	if out.Delay > 0 {
		return out
	}
	q, err := resilience.ParseQuantile(h.Quantile)
	if err != nil {
		// The policy validated the hedge already; keep the call path safe
		// anyway: no hedging.
		c.env.Log.Error("hedge without a delay or a valid quantile after validation", "service", service, "route", route, "err", err)
		return nil
	}
	out.Quantile = q
	k := latencyKey{service: service, route: route}
	lt, ok := part(c.reg.latency, k)
	if !ok {
		lt = resilience.NewLatencyTracker(resilience.LatencyConfig{})
	}
	hold(c.reg.latency, &c.used.latency, k, lt)
	out.Latency = lt
	return out
}

func (c *compiler) outlier(service string, od *policy.OutlierDetection) *resilience.Outlier {
	k := outlierKey{service: service, failures: od.ConsecutiveFailures, base: od.BaseEjection.Std(), maxPct: od.MaxEjectionPercent}
	o, ok := part(c.reg.outliers, k)
	if !ok {
		o = resilience.NewOutlier(resilience.OutlierConfig{
			ConsecutiveFailures: k.failures,
			BaseEjection:        k.base,
			MaxEjectionPercent:  k.maxPct,
			OnEject:             c.onEject(service),
		}, c.env.Clock)
	}
	hold(c.reg.outliers, &c.used.outliers, k, o)
	return o
}

// fault compiles the fault block of service's route and warns, once while
// the block stays the same, that the route injects faults: a block left on
// by mistake is not shipped unnoticed.
func (c *compiler) fault(service, route string, pf *policy.Fault) *Fault {
	f, err := CompileFault(pf)
	if err != nil {
		// The policy validated the block already.
		c.env.Log.Error("fault block did not compile after validation", "service", service, "route", route, "err", err)
	}
	if f == nil {
		return nil
	}
	k := faultKey{service: service, route: route, block: f.String()}
	if _, warned := part(c.reg.faults, k); !warned {
		c.env.Log.Warn("fault injection is on: calls to this route are delayed or failed on purpose",
			"service", service, "route", route, "policy_version", c.pol.Version, "fault", k.block)
	}
	hold(c.reg.faults, &c.used.faults, k, struct{}{})
	return f
}

// onBreakerChange logs and counts the transitions of a service's breaker.
func (c *compiler) onBreakerChange(service string) func(name, from, to string) {
	env := c.env
	// The breaker's callback carries no context: the counter is recorded
	// without one.
	return func(name, from, to string) {
		env.Log.Warn("circuit breaker changed state", "service", service, "breaker", name, "from", from, "to", to)
		env.Instr.RecordBreakerTransition(context.Background(), service, from, to)
	}
}

// onEject logs and counts outlier ejections of a service's endpoints.
func (c *compiler) onEject(service string) func(addr string, until time.Time) {
	env := c.env
	return func(addr string, until time.Time) {
		env.Log.Warn("endpoint ejected", "service", service, "endpoint", addr, "until", until.Format(time.RFC3339Nano))
		env.Instr.RecordEjection(context.Background(), service, addr)
	}
}
