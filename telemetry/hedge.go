package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// hedgeInstruments are the instruments of hedging, in Instruments.
type hedgeInstruments struct {
	hedges    metric.Int64Counter
	hedgeOpts cowCache[hedgeKey, []metric.AddOption]
}

type hedgeKey struct{ service, route, result string }

// init creates the hedge counter of m.
func (h *hedgeInstruments) init(m metric.Meter) error {
	h.hedgeOpts.max = maxCachedAttributeSets
	var err error
	h.hedges, err = m.Int64Counter(MetricHedges, metric.WithUnit(UnitHedges), metric.WithDescription(DescHedges))
	return err
}

// RecordHedge counts one hedge of a call to service on route, result being
// HedgeSent, HedgeWon or HedgeRefused. Its attribute sets are cached: it
// does not allocate once a set was seen.
func (in *Instruments) RecordHedge(ctx context.Context, service, route, result string) {
	if in == nil || in.hedges == nil {
		return
	}
	in.hedges.Add(ctx, 1, in.hedgeOpts.get(hedgeKey{service, route, result}, hedgeOptions)...)
}

func hedgeOptions(k hedgeKey) []metric.AddOption {
	kvs := make([]attribute.KeyValue, 0, 3)
	kvs = append(kvs, attribute.String(AttrServerAddress, k.service), attribute.String(AttrHedgeResult, k.result))
	kvs = appendNonEmpty(kvs, AttrRoute, k.route)
	return []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(kvs...))}
}

// HedgeEvent records the span event of a hedge: attempt is its attempt
// number, endpoint the endpoint picked for it ("" when the balancer picks
// or none was sent), result HedgeSent or HedgeRefused.
func HedgeEvent(span trace.Span, attempt int, endpoint, result string) {
	if span == nil || !span.IsRecording() {
		return
	}
	span.AddEvent(EventHedge, trace.WithAttributes(
		attribute.Int(AttrAttemptNumber, attempt),
		attribute.String(AttrEndpoint, endpoint),
		attribute.String(AttrHedgeResult, result),
	))
}
