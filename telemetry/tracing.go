package telemetry

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Tracing wraps the tracer and the propagator of one mesh. It is safe for
// concurrent use. A nil *Tracing starts no spans and injects nothing.
type Tracing struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	starts cowCache[spanKey, spanStart]
	// rpcStarts caches the gRPC client spans' starts (rpc.go), keyed with
	// the full method in spanKey.method.
	rpcStarts cowCache[spanKey, spanStart]
	// unset is the global tracer provider as OTel starts it, before any
	// SDK is installed, when NewTracing got no provider; nil otherwise.
	unset trace.TracerProvider
	// noop is set when the tracer is OTel's no-op tracer (trace/noop).
	noop bool
}

// spanKey identifies the start options of a client span.
type spanKey struct{ service, route, method string }

// spanStart is the cached name and start options of a client span. The
// options are shared: the OTel API copies what it keeps from them.
type spanStart struct {
	name string
	opts []trace.SpanStartOption
}

// NewTracing returns the tracing of one mesh. A nil tp means
// otel.GetTracerProvider() and a nil p means otel.GetTextMapPropagator(); both
// globals are delegates, so a provider or propagator installed later with
// otel.SetTracerProvider or otel.SetTextMapPropagator takes effect. Note that
// until an application installs a global propagator, W3C trace context and
// baggage are used.
func NewTracing(tp trace.TracerProvider, p propagation.TextMapPropagator) *Tracing {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if p == nil {
		p = &globalOrW3C{}
	}
	t := &Tracing{
		tracer:    tp.Tracer(ScopeName),
		prop:      p,
		starts:    cowCache[spanKey, spanStart]{max: maxCachedAttributeSets},
		rpcStarts: cowCache[spanKey, spanStart]{max: maxCachedAttributeSets},
	}
	if isUnsetGlobal(tp) {
		t.unset = tp
	}
	_, t.noop = t.tracer.(noop.Tracer)
	return t
}

// isUnsetGlobal reports whether tp is OTel's global tracer provider before
// any SDK was installed: the delegating placeholder of the otel module's
// internal/global package. The check is by type name, made once; should the
// name ever change, the only effect is that calls take the slower path of
// starting non-recording spans.
func isUnsetGlobal(tp trace.TracerProvider) bool {
	return fmt.Sprintf("%T", tp) == "*global.tracerProvider"
}

// off reports whether a span started now for ctx would be pure overhead:
// the tracer is the no-op one, or no tracer provider was ever installed,
// and ctx carries no span context that a non-recording span would have to
// carry on.
func (t *Tracing) off(ctx context.Context) bool {
	return (t.noop || t.unset != nil && otel.GetTracerProvider() == t.unset) && !trace.SpanContextFromContext(ctx).IsValid()
}

// StartClientCall starts the one client span of a logical call, to be ended by
// EndCall. Its name is "{method} {service}" ("POST billing"; "HTTP billing"
// for a method outside the known set), its kind client, and its attributes
// server.address, http.request.method and inmesh.route (when route is not
// empty), set at start so that samplers see them. Name and options are cached
// per (service, route, method).
func (t *Tracing) StartClientCall(ctx context.Context, service, route, method string) (context.Context, trace.Span) {
	if t == nil || t.off(ctx) {
		return ctx, trace.SpanFromContext(context.Background()) // a no-op span
	}
	s := t.starts.get(spanKey{service, route, normalizeMethod(method)}, clientSpanStart)
	return t.tracer.Start(ctx, s.name, s.opts...)
}

func clientSpanStart(k spanKey) spanStart {
	prefix := k.method
	if prefix == methodOther {
		prefix = "HTTP"
	}
	kvs := make([]attribute.KeyValue, 0, 3)
	kvs = append(kvs,
		attribute.String(AttrServerAddress, k.service),
		attribute.String(AttrHTTPRequestMethod, k.method))
	kvs = appendNonEmpty(kvs, AttrRoute, k.route)
	return spanStart{
		name: prefix + " " + k.service,
		opts: []trace.SpanStartOption{
			trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(kvs...),
		},
	}
}

// AttemptEvent adds the span event "inmesh.attempt" for one attempt: its
// number (1 for the first try), the endpoint tried (host:port), the outcome
// ("ok", the status code, or the failure layer) and the backoff waited before
// it, in seconds. It does nothing, and allocates nothing, when span is nil or
// not recording.
func AttemptEvent(span trace.Span, attempt int, endpoint, outcome string, backoff time.Duration) {
	if span == nil || !span.IsRecording() {
		return
	}
	span.AddEvent(EventAttempt, trace.WithAttributes(
		attribute.Int(AttrAttemptNumber, attempt),
		attribute.String(AttrEndpoint, endpoint),
		attribute.String(AttrAttemptOutcome, outcome),
		attribute.Float64(AttrAttemptBackoff, backoff.Seconds()),
	))
}

// Inject writes the trace context of ctx into h with the propagator: W3C
// traceparent and tracestate with propagation.TraceContext, and baggage when
// the propagator includes propagation.Baggage.
func (t *Tracing) Inject(ctx context.Context, h http.Header) {
	if t == nil || h == nil {
		return
	}
	t.prop.Inject(ctx, headerCarrier(h))
}

// Extract returns ctx with the trace context and baggage read from h, for the
// server side of a call.
func (t *Tracing) Extract(ctx context.Context, h http.Header) context.Context {
	if t == nil || h == nil {
		return ctx
	}
	return t.prop.Extract(ctx, headerCarrier(h))
}

// EndCall records the outcome of a logical call on span and ends it.
// statusCode is the final HTTP status (0 when no response), errorType the
// failure layer ("" on success) and err the error returned to the caller, if
// any. The span status is Error, with attribute error.type, when errorType is
// set, when err is not nil ("_OTHER" unless errorType says more), or when the
// status is 4xx or 5xx (error.type then is the status code, as the semantic
// conventions ask of client spans); otherwise the status is left unset.
// A nil span is ignored.
func EndCall(span trace.Span, statusCode int, errorType string, err error) {
	if span == nil {
		return
	}
	if span.IsRecording() {
		if statusCode > 0 {
			span.SetAttributes(attribute.Int(AttrHTTPResponseStatusCode, statusCode))
		}
		et := errorType
		switch {
		case et != "":
		case statusCode >= 400:
			et = strconv.Itoa(statusCode)
		case err != nil:
			et = errorTypeOther
		}
		setError(span, et, err)
	}
	span.End()
}

// setError marks a recording span failed when errorType is not empty: the
// attribute error.type, and status Error described by err, or by errorType
// without err. HTTP and gRPC spans share it.
func setError(span trace.Span, errorType string, err error) {
	if errorType == "" {
		return
	}
	desc := errorType
	if err != nil {
		desc = err.Error()
	}
	span.SetAttributes(attribute.String(AttrErrorType, errorType))
	span.SetStatus(codes.Error, desc)
}
