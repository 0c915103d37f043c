package telemetry

import (
	"context"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Breaker states, the values of AttrBreakerFrom, AttrBreakerTo and
// AttrBreakerState.
const (
	BreakerClosed   = "closed"
	BreakerOpen     = "open"
	BreakerHalfOpen = "half-open"
)

var breakerStates = [...]string{BreakerClosed, BreakerOpen, BreakerHalfOpen}

// BreakerStates reports every circuit breaker of the mesh to yield: the
// destination service, the route for a route's own breaker ("" for the
// service's) and the state it is in now. It is called at collection time.
type BreakerStates func(yield func(service, route, state string))

// breakerStateGauge is inmesh.circuit_breaker.state, observed from the
// BreakerStates the mesh sets.
type breakerStateGauge struct {
	gauge metric.Int64ObservableGauge
	src   atomic.Pointer[BreakerStates]
}

// initBreakerState creates inmesh.circuit_breaker.state and registers its
// callback.
func (in *Instruments) initBreakerState(m metric.Meter) []error {
	var err error
	in.breakerState.gauge, err = m.Int64ObservableGauge(MetricBreakerState,
		metric.WithUnit(UnitBreakerState), metric.WithDescription(DescBreakerState))
	if err != nil {
		return []error{err}
	}
	reg, err := m.RegisterCallback(in.observeBreakers, in.breakerState.gauge)
	if err != nil {
		return []error{err}
	}
	in.mu.Lock()
	in.registrations = append(in.registrations, reg)
	in.mu.Unlock()
	return nil
}

// SetBreakerStates makes inmesh.circuit_breaker.state observe fn (nil
// stops observing).
func (in *Instruments) SetBreakerStates(fn BreakerStates) {
	if in == nil {
		return
	}
	if fn == nil {
		in.breakerState.src.Store(nil)
		return
	}
	in.breakerState.src.Store(&fn)
}

// observeBreakers reports each breaker as a state set: 1 for its state, 0
// for the others. Attribute sets are built per collection, off the request
// path.
func (in *Instruments) observeBreakers(_ context.Context, o metric.Observer) error {
	src := in.breakerState.src.Load()
	if src == nil {
		return nil
	}
	(*src)(func(service, route, state string) {
		for _, s := range breakerStates {
			var v int64
			if s == state {
				v = 1
			}
			kvs := make([]attribute.KeyValue, 0, 3)
			kvs = append(kvs, attribute.String(AttrServerAddress, service))
			kvs = appendNonEmpty(kvs, AttrRoute, route)
			kvs = append(kvs, attribute.String(AttrBreakerState, s))
			o.ObserveInt64(in.breakerState.gauge, v, metric.WithAttributeSet(attribute.NewSet(kvs...)))
		}
	})
	return nil
}
