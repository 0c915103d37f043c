package core

import (
	"maps"
	"regexp"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/resilience"
)

// A compilation reuses the destination of every service whose inputs did
// not change since the last one: its resolved service (the same pointer:
// a policy snapshot made from the last keeps the blocks it did not
// change), its endpoints and why it has none, and the same of every other
// service its splits and failover targets call. A write that changes one
// service block then compiles one destination. The destinations know no
// policy version, which changes with every write (Call.PolicyVersion).
//
// A reused destination keeps pointing to its stateful parts (breakers,
// budgets, hosts...), which the registry must keep while it does: each
// destination records the parts it took (parts), and each part counts the
// destinations that use it (held). A compilation takes the parts of the
// destinations it compiles, then lets go of those of the destinations
// they replace and of the services that left: a part none uses any more
// leaves the registry, and a compilation after that makes a new one. The
// work is that of the destinations compiled, not of all.

// compiled is a destination with what it was compiled from and the
// registry's parts it uses.
type compiled struct {
	d *Destination
	// in are the inputs: the destination's own service first, then the
	// other services of its splits (Destination.Needs).
	in   []input
	used parts
}

// input is what a destination read of one service.
type input struct {
	name string
	svc  *policy.ResolvedService // nil: no service of the policy
	eps  []discovery.Endpoint
	why  string
}

// held is a part of the registry with the count of its uses by
// destinations.
type held[V comparable] struct {
	v V
	n int
}

// use is one use of a part, under its key.
type use[K comparable, V comparable] struct {
	k K
	h *held[V]
}

// parts are the uses of the registry's parts by one destination.
type parts struct {
	breakers    []use[breakerKey, *resilience.Breaker]
	budgets     []use[budgetKey, *resilience.Budget]
	outliers    []use[outlierKey, *resilience.Outlier]
	hosts       []use[hostKey, *discovery.Host]
	faults      []use[faultKey, struct{}]
	latency     []use[latencyKey, *resilience.LatencyTracker]
	limiters    []use[limiterKey, *resilience.Limiter]
	hashPickers []use[hashPickerKey, *discovery.HashPicker]
	regexes     []use[string, *regexp.Regexp]
}

// part returns the part under k in m.
func part[K comparable, V comparable](m map[K]*held[V], k K) (V, bool) {
	if h := m[k]; h != nil {
		return h.v, true
	}
	var zero V
	return zero, false
}

// hold records a use of v, under k in m, in uses: v replaces another part
// under k (a host whose labels changed), which the destinations that use
// it still hold until they are let go.
func hold[K comparable, V comparable](m map[K]*held[V], uses *[]use[K, V], k K, v V) {
	h := m[k]
	if h == nil || h.v != v {
		h = &held[V]{v: v}
		m[k] = h
	}
	h.n++
	*uses = append(*uses, use[K, V]{k, h})
}

// letGo undoes the uses: a part used no more leaves m.
func letGo[K comparable, V comparable](m map[K]*held[V], uses []use[K, V]) {
	for _, u := range uses {
		if u.h.n--; u.h.n == 0 && m[u.k] == u.h {
			delete(m, u.k)
		}
	}
}

// release lets go of the parts a destination that is no more used.
func (r *Registry) release(p *parts) {
	letGo(r.breakers, p.breakers)
	letGo(r.budgets, p.budgets)
	letGo(r.outliers, p.outliers)
	letGo(r.hosts, p.hosts)
	letGo(r.faults, p.faults)
	letGo(r.latency, p.latency)
	letGo(r.limiters, p.limiters)
	letGo(r.hashPickers, p.hashPickers)
	letGo(r.regexes, p.regexes)
}

// inputOf is what a compilation reads of service name.
func (c *compiler) inputOf(name string) input {
	return input{name: name, svc: c.pol.Services[name], eps: c.eps.Endpoints(name), why: c.eps.WhyEmpty(name)}
}

// reusable reports whether the destination cd, compiled by the last
// compilation, is the one this compilation would make: every input is
// the same.
func (c *compiler) reusable(cd *compiled) bool {
	for i := range cd.in {
		in := &cd.in[i]
		if c.pol.Services[in.name] != in.svc || c.eps.WhyEmpty(in.name) != in.why || !sameEndpoints(c.eps.Endpoints(in.name), in.eps) {
			return false
		}
	}
	return true
}

// sameEndpoints reports whether a and b are the same endpoints, in the
// same order: the same slice (an endpoint source keeps a service's slice
// while it does not change), or equal ones (a static snapshot is built
// anew with each policy).
func sameEndpoints(a, b []discovery.Endpoint) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	for i := range a {
		if a[i].Address != b[i].Address || !maps.Equal(a[i].Labels, b[i].Labels) {
			return false
		}
	}
	return true
}

// compile compiles the destination of service name, recording its inputs
// and the parts it uses.
func (c *compiler) compile(name string, svc *policy.ResolvedService) *compiled {
	cd := &compiled{in: []input{c.inputOf(name)}}
	c.used = &cd.used
	cd.d = c.destination(svc, cd.in[0].eps)
	c.used = nil // no part is taken outside a destination
	for _, n := range cd.d.Needs {
		cd.in = append(cd.in, c.inputOf(n))
	}
	return cd
}
