package mesh

import (
	"maps"
	"slices"
)

// breakerStates reports every circuit breaker of the policy in force to
// yield, for inmesh.circuit_breaker.state: a service's own breaker (route
// "") and each route's that overrides it, as /breakers lists them, of the
// destinations compiled: a service no call needed yet has its breakers
// closed, and observing them would compile it at every collection. It
// runs at metric collection, off the request path.
func (m *Mesh) breakerStates(yield func(service, route, state string)) {
	st := m.state.Load()
	if st == nil {
		return
	}
	for _, name := range slices.Sorted(maps.Keys(st.services)) {
		d := st.services[name]
		// The service's breaker counts when a route shares it.
		for _, rt := range d.Routes {
			if d.Breaker != nil && rt.Breaker == d.Breaker {
				yield(name, "", d.Breaker.State())
				break
			}
		}
		for _, rt := range d.Routes {
			if rt.Breaker != nil && rt.Breaker != d.Breaker {
				yield(name, rt.Name, rt.Breaker.State())
			}
		}
	}
}
