package telemetry

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
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
// server.address, http.request.method, and http.route and inmesh.route (the
// route's name, when route is not empty), set at start so that samplers see
// them. Name and options are cached
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
	kvs := make([]attribute.KeyValue, 0, 4)
	kvs = append(kvs,
		attribute.String(AttrServerAddress, k.service),
		attribute.String(AttrHTTPRequestMethod, k.method))
	kvs = appendNonEmpty(kvs, AttrRoute, k.route)
	kvs = appendNonEmpty(kvs, AttrHTTPRoute, k.route)
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
//
// HOT: an attempt that waited no backoff (every first try) reuses the event
// options of its (number, endpoint, outcome), cached (bounded): the SDK then
// copies the attributes once instead of the three copies of building them.
func AttemptEvent(span trace.Span, attempt int, endpoint, outcome string, backoff time.Duration) {
	if span == nil || !span.IsRecording() {
		return
	}
	k := attemptKey{attempt, endpoint, outcome, backoff}
	if backoff != 0 {
		// A jittered backoff is all but unique: not worth a cache entry.
		span.AddEvent(EventAttempt, attemptOptions(k)...)
		return
	}
	span.AddEvent(EventAttempt, attemptEvents.get(k, attemptOptions)...)
}

// attemptKey identifies the attributes of an attempt event.
type attemptKey struct {
	attempt           int
	endpoint, outcome string
	backoff           time.Duration
}

// attemptEvents caches the options of attempt events without backoff,
// shared by every mesh of the process (the options hold no mesh state).
var attemptEvents = cowCache[attemptKey, []trace.EventOption]{max: maxCachedAttributeSets}

func attemptOptions(k attemptKey) []trace.EventOption {
	return []trace.EventOption{trace.WithAttributes(
		attribute.Int(AttrAttemptNumber, k.attempt),
		attribute.String(AttrEndpoint, k.endpoint),
		attribute.String(AttrAttemptOutcome, k.outcome),
		attribute.Float64(AttrAttemptBackoff, k.backoff.Seconds()),
	)}
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

// InjectSlots is Inject, with the W3C values held in s rather than in
// slices of their own: one allocation fewer per value. s serves one header
// only: h keeps referring to its values.
func (t *Tracing) InjectSlots(ctx context.Context, h http.Header, s *HeaderSlots) {
	if t == nil || h == nil {
		return
	}
	s.h = h
	t.prop.Inject(ctx, s)
	s.h = nil
}

// Extract returns ctx with the trace context and baggage read from h, for the
// server side of a call.
func (t *Tracing) Extract(ctx context.Context, h http.Header) context.Context {
	if t == nil || h == nil {
		return ctx
	}
	return t.prop.Extract(ctx, headerCarrier(h))
}

// CallEnd is what a client span says of its call when it ends.
type CallEnd struct {
	StatusCode    int    // the final HTTP status; 0 when no response (and for gRPC)
	ErrorType     string // the failure layer; "" on success
	Err           error  // the error returned to the caller, if any
	Subset        string // the subset the split chose; "" without a split
	Attempts      int    // the attempts made, hedges included; 0 when none was sent
	PolicyVersion string // the version of the policy the call ran under
}

// EndCall records the outcome of a logical call on span and ends it, as
// EndClientCall with only a status, a layer and an error.
func EndCall(span trace.Span, statusCode int, errorType string, err error) {
	EndClientCall(span, CallEnd{StatusCode: statusCode, ErrorType: errorType, Err: err})
}

// EndClientCall records the outcome of a logical HTTP call on span and
// ends it: http.response.status_code (when there was a response), the
// subset, the attempts and the policy version (when set), and on failure
// error.type and status Error. The span fails when e.ErrorType is set
// (the failure layer), when e.Err is not nil ("_OTHER" unless ErrorType
// says more), or when the status is 4xx or 5xx (error.type then is the
// status code, as the semantic conventions ask of client spans); otherwise
// the status is left unset. The attributes are set in one call. A nil span
// is ignored.
func EndClientCall(span trace.Span, e CallEnd) {
	if span == nil {
		return
	}
	if span.IsRecording() {
		et := e.ErrorType
		switch {
		case et != "":
		case e.StatusCode >= 400:
			et = strconv.Itoa(e.StatusCode)
		case e.Err != nil:
			et = errorTypeOther
		}
		buf := getEndAttrs()
		kvs := buf[:0]
		if e.StatusCode > 0 {
			kvs = append(kvs, attribute.Int(AttrHTTPResponseStatusCode, e.StatusCode))
		}
		kvs = appendCallEnd(kvs, e)
		finish(span, kvs, et, e.Err)
		putEndAttrs(buf)
	}
	span.End()
}

// endAttrs holds the end attributes of a span while they are set: a
// buffer passed to the span's SetAttributes escapes to the heap, and a
// pooled one spares that allocation per call. The span copies what it
// keeps (the SDK does), so the buffer is reused once SetAttributes returns.
type endAttrs [6]attribute.KeyValue

var endAttrsPool = sync.Pool{New: func() any { return new(endAttrs) }}

func getEndAttrs() *endAttrs { return endAttrsPool.Get().(*endAttrs) }

// putEndAttrs clears b, so that the pool holds no caller's strings or
// errors, and returns it to the pool.
func putEndAttrs(b *endAttrs) {
	*b = endAttrs{}
	endAttrsPool.Put(b)
}

// appendCallEnd appends the subset, attempts and policy version of e that
// are set.
func appendCallEnd(kvs []attribute.KeyValue, e CallEnd) []attribute.KeyValue {
	kvs = appendNonEmpty(kvs, AttrSubset, e.Subset)
	if e.Attempts > 0 {
		kvs = append(kvs, attribute.Int(AttrAttempts, e.Attempts))
	}
	return appendNonEmpty(kvs, AttrPolicyVersion, e.PolicyVersion)
}

// finish sets kvs on a recording span, with error.type when errorType is
// set, in one call, and then marks the span failed (status Error described
// by err, or by errorType without err) when errorType is set. HTTP and gRPC
// spans share it.
func finish(span trace.Span, kvs []attribute.KeyValue, errorType string, err error) {
	if errorType != "" {
		kvs = append(kvs, attribute.String(AttrErrorType, errorType))
	}
	if len(kvs) > 0 {
		span.SetAttributes(kvs...)
	}
	if errorType == "" {
		return
	}
	desc := errorType
	if err != nil {
		desc = err.Error()
	}
	span.SetStatus(codes.Error, desc)
}

// BudgetEvent adds the span event "inmesh.retry.budget.exhausted" for a
// retry the retry budget refused: attempt is the number the retry would
// have had, outcome the outcome of the attempt it would have retried (as
// in the attempt events). It does nothing when span is nil or not
// recording.
func BudgetEvent(span trace.Span, attempt int, outcome string) {
	if span == nil || !span.IsRecording() {
		return
	}
	span.AddEvent(EventBudgetRefused, trace.WithAttributes(
		attribute.Int(AttrAttemptNumber, attempt),
		attribute.String(AttrAttemptOutcome, outcome)))
}
