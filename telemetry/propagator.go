package telemetry

import (
	"context"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
)

// w3c is W3C trace context and baggage.
var w3c = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// globalOrW3C is the propagator of a mesh given none: the global one
// (otel.GetTextMapPropagator) once the application has installed one, and
// W3C trace context and baggage until then, so that trace context crosses
// the mesh whether or not the application configured propagation. Safe for
// concurrent use.
type globalOrW3C struct {
	last atomic.Pointer[chosenPropagator]
}

type chosenPropagator struct {
	global propagation.TextMapPropagator // what otel.GetTextMapPropagator returned
	use    propagation.TextMapPropagator // global, or w3c when global carries nothing
}

var _ propagation.TextMapPropagator = (*globalOrW3C)(nil)

// current returns the propagator to use now. The global is re-read on every
// call (an atomic load); its Fields, which allocate, only when it changed.
func (p *globalOrW3C) current() propagation.TextMapPropagator {
	g := otel.GetTextMapPropagator()
	if c := p.last.Load(); c != nil && c.global == g {
		return c.use
	}
	c := &chosenPropagator{global: g, use: g}
	if len(g.Fields()) == 0 {
		c.use = w3c
	}
	p.last.Store(c)
	return c.use
}

func (p *globalOrW3C) Inject(ctx context.Context, carrier propagation.TextMapCarrier) {
	p.current().Inject(ctx, carrier)
}

func (p *globalOrW3C) Extract(ctx context.Context, carrier propagation.TextMapCarrier) context.Context {
	return p.current().Extract(ctx, carrier)
}

func (p *globalOrW3C) Fields() []string { return p.current().Fields() }
