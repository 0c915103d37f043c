package main

import (
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	inmeshtel "github.com/inmesh/inmesh/telemetry"
)

// sdkFloor is a RoundTripper that records, straight with the OTel SDK and
// no mesh, what inmesh records for one call of the full chain: the client
// span with its name, kind and four start attributes, one attempt event of
// four attributes, the four end attributes, the end, and one histogram
// record of six attributes (a ready option, as inmesh passes it). With
// inject it also writes the W3C trace context and baggage into a copy of
// the request's header, as inmesh does for each attempt. It is the SDK's
// floor: a No-I/O row of inmesh with the SDK less this row is what inmesh
// adds over the SDK's own work.
type sdkFloor struct {
	next   http.RoundTripper
	tracer trace.Tracer
	hist   metric.Float64Histogram
	prop   propagation.TextMapPropagator // nil: no inject
	start  []trace.SpanStartOption
	event  []trace.EventOption
	record []metric.RecordOption
}

func newSDKFloor(next http.RoundTripper, tel telemetry, inject bool) (*sdkFloor, error) {
	h, err := tel.mp.Meter("floor").Float64Histogram(inmeshtel.MetricHTTPClientDuration, metric.WithUnit("s"))
	if err != nil {
		return nil, err
	}
	f := &sdkFloor{next: next, tracer: tel.tp.Tracer("floor"), hist: h,
		start: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
			attribute.String(inmeshtel.AttrServerAddress, "billing"),
			attribute.String(inmeshtel.AttrHTTPRequestMethod, http.MethodGet),
			attribute.String(inmeshtel.AttrRoute, "default"),
			attribute.String(inmeshtel.AttrHTTPRoute, "default"))},
		event: []trace.EventOption{trace.WithAttributes(
			attribute.Int(inmeshtel.AttrAttemptNumber, 1),
			attribute.String(inmeshtel.AttrEndpoint, "127.0.0.1:9"),
			attribute.String(inmeshtel.AttrAttemptOutcome, "ok"),
			attribute.Float64(inmeshtel.AttrAttemptBackoff, 0))},
		record: []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(
			attribute.String(inmeshtel.AttrServerAddress, "billing"),
			attribute.String(inmeshtel.AttrHTTPRequestMethod, http.MethodGet),
			attribute.String(inmeshtel.AttrRoute, "default"),
			attribute.String(inmeshtel.AttrHTTPRoute, "default"),
			attribute.String(inmeshtel.AttrSubset, "v1"),
			attribute.Int(inmeshtel.AttrHTTPResponseStatusCode, http.StatusOK)))},
	}
	if inject {
		f.prop = w3c
	}
	return f, nil
}

func (f *sdkFloor) RoundTrip(req *http.Request) (*http.Response, error) {
	t0 := time.Now()
	ctx, span := f.tracer.Start(req.Context(), "GET billing", f.start...)
	if f.prop != nil {
		h := make(http.Header, len(req.Header)+4)
		for k, v := range req.Header {
			h[k] = v
		}
		f.prop.Inject(ctx, propagation.HeaderCarrier(h))
	}
	resp, err := f.next.RoundTrip(req)
	span.AddEvent(inmeshtel.EventAttempt, f.event...)
	span.SetAttributes(attribute.Int(inmeshtel.AttrHTTPResponseStatusCode, http.StatusOK),
		attribute.String(inmeshtel.AttrSubset, "v1"), attribute.Int(inmeshtel.AttrAttempts, 1),
		attribute.String(inmeshtel.AttrPolicyVersion, "sha256:0123456789ab"))
	span.End()
	f.hist.Record(ctx, time.Since(t0).Seconds(), f.record...)
	return resp, err
}
