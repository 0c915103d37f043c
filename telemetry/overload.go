package telemetry

import (
	"context"
	"maps"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// The instruments of the client-side concurrency limits.
const (
	// MetricConcurrencyLimit is a gauge of the concurrency limit toward
	// each destination that has one: fixed, or learned so far.
	MetricConcurrencyLimit = "inmesh.concurrency.limit"
	UnitConcurrencyLimit   = "{attempt}"
	DescConcurrencyLimit   = "Concurrency limit toward a destination: the attempts this process may have in flight to it."

	// MetricOverloadShed counts the attempts the concurrency limit
	// refused (shed locally, never sent).
	MetricOverloadShed = "inmesh.overload.shed"
	UnitOverloadShed   = "{attempt}"
	DescOverloadShed   = "Attempts refused by the concurrency limit toward a destination, never sent."
)

// LimitSource is what the limit gauge reads of a destination's limiter.
type LimitSource interface{ Limit() int }

// overloadInstruments are the concurrency limit's: both observed when
// metrics are collected, so the request path only adds to a Counter and
// the limiter keeps its limit itself.
type overloadInstruments struct {
	limit metric.Int64ObservableGauge
	shed  metric.Int64ObservableCounter
	// Under Instruments.mu: the limiters in force, by service, and the
	// shed counters handed out (kept across reloads: a counter never
	// restarts).
	limits  map[string]LimitSource
	sheds   map[string]*Counter
	setOpts map[string][]metric.ObserveOption
}

// initOverload creates the concurrency limit's instruments on m.
func (in *Instruments) initOverload(m metric.Meter) []error {
	var errs []error
	o := &overloadInstruments{limits: map[string]LimitSource{}, sheds: map[string]*Counter{}, setOpts: map[string][]metric.ObserveOption{}}
	in.overload = o
	var err error
	if o.limit, err = m.Int64ObservableGauge(MetricConcurrencyLimit,
		metric.WithUnit(UnitConcurrencyLimit), metric.WithDescription(DescConcurrencyLimit)); err != nil {
		errs = append(errs, err)
	}
	if o.shed, err = m.Int64ObservableCounter(MetricOverloadShed,
		metric.WithUnit(UnitOverloadShed), metric.WithDescription(DescOverloadShed)); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		reg, err := m.RegisterCallback(in.observeOverload, o.limit, o.shed)
		if err != nil {
			errs = append(errs, err)
		}
		in.registrations = append(in.registrations, reg)
	}
	return errs
}

// ShedCounter returns the counter of attempts toward service the
// concurrency limit refused, the same one for the same service across
// reloads, observed as inmesh.overload.shed (attribute server.address).
// Call it when destinations are compiled; the request path only adds to
// it.
func (in *Instruments) ShedCounter(service string) *Counter {
	if in == nil || in.overload == nil {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	c, ok := in.overload.sheds[service]
	if !ok {
		c = &Counter{key: routeKey{service: service}}
		in.overload.sheds[service] = c
	}
	return c
}

// SetConcurrencyLimits replaces the limiters whose limits are observed as
// inmesh.concurrency.limit, by service: the ones of the policy in force.
func (in *Instruments) SetConcurrencyLimits(limits map[string]LimitSource) {
	if in == nil || in.overload == nil {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.overload.limits = maps.Clone(limits)
}

// observeOverload reports each limit in force and every shed counter.
func (in *Instruments) observeOverload(_ context.Context, o metric.Observer) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	ov := in.overload
	opts := func(service string) []metric.ObserveOption {
		set, ok := ov.setOpts[service]
		if !ok {
			set = []metric.ObserveOption{metric.WithAttributeSet(attribute.NewSet(attribute.String(AttrServerAddress, service)))}
			ov.setOpts[service] = set
		}
		return set
	}
	for service, l := range ov.limits {
		o.ObserveInt64(ov.limit, int64(l.Limit()), opts(service)...)
	}
	for service, c := range ov.sheds {
		o.ObserveInt64(ov.shed, c.n.Load(), opts(service)...)
	}
	return nil
}
