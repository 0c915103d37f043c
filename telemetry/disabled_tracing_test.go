package telemetry_test

import (
	"context"
	"net/http"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/inmesh/inmesh/telemetry"
)

// TestUnsetGlobalStartsNoSpan checks that, while no tracer provider was ever
// installed, a call without a parent span costs nothing: no context, no span.
// It must run before any test of the package installs a global provider
// (globals_test.go does), which the file name ensures.
func TestUnsetGlobalStartsNoSpan(t *testing.T) {
	if _, err := otel.GetTracerProvider().(interface{ Shutdown(context.Context) error }); err {
		t.Skip("a tracer provider is installed already")
	}
	tr := telemetry.NewTracing(nil, nil)
	ctx := context.Background()
	got, span := tr.StartClientCall(ctx, "billing", "charge", "GET")
	if got != ctx || span.IsRecording() {
		t.Fatalf("a span was started while tracing is off")
	}
	if a := testing.AllocsPerRun(100, func() { tr.StartClientCall(ctx, "billing", "charge", "GET") }); a != 0 {
		t.Fatalf("StartClientCall allocates %v times with tracing off", a)
	}
	// A parent span context must still be carried on.
	parent := trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled,
	}))
	child, _ := tr.StartClientCall(parent, "billing", "charge", "GET")
	if trace.SpanContextFromContext(child).TraceID() != (trace.TraceID{1}) {
		t.Fatal("the parent's trace context was dropped")
	}
}

// TestDefaultPropagatorIsW3C checks that, while the application installed no
// global propagator, a mesh given none still propagates W3C trace context.
func TestDefaultPropagatorIsW3C(t *testing.T) {
	if len(otel.GetTextMapPropagator().Fields()) != 0 {
		t.Skip("a global propagator is installed already")
	}
	tr := telemetry.NewTracing(nil, nil)
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled,
	}))
	h := http.Header{}
	tr.Inject(ctx, h)
	if got := h.Get("traceparent"); got != "00-01000000000000000000000000000000-0200000000000000-01" {
		t.Fatalf("traceparent %q", got)
	}
}
