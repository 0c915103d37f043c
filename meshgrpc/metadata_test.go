package meshgrpc

import (
	"context"
	"slices"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/metadata"

	"github.com/inmesh/inmesh/telemetry"
)

// TestTraceContextThroughGRPCMetadata: the trace context a client context
// holds reaches the outgoing metadata, and the server's carrier reads it
// back from the incoming metadata.
func TestTraceContextThroughGRPCMetadata(t *testing.T) {
	tr := telemetry.NewTracing(noop.NewTracerProvider(), propagation.TraceContext{})
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3},
		SpanID:     trace.SpanID{4, 5, 6},
		TraceFlags: trace.FlagsSampled,
	})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	md, _ := metadata.FromOutgoingContext(injectOutgoing(tr, ctx))
	if len(md.Get("traceparent")) != 1 {
		t.Fatalf("outgoing metadata %v has no traceparent", md)
	}
	in := incomingMetadata{metadata.NewIncomingContext(context.Background(), md)}
	if got := in.Get("Traceparent"); got != md.Get("traceparent")[0] {
		t.Errorf("Get(Traceparent) = %q, want %q", got, md.Get("traceparent")[0])
	}
	if keys := in.Keys(); !slices.Contains(keys, "traceparent") {
		t.Errorf("Keys() = %v", keys)
	}
	got := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), &in))
	if got.TraceID() != sc.TraceID() || got.SpanID() != sc.SpanID() {
		t.Errorf("extracted %v, want %v", got, sc)
	}

	// Nothing to carry: the context comes back as it was.
	bg := context.Background()
	if injectOutgoing(tr, bg) != bg {
		t.Error("injectOutgoing changed a context without trace context")
	}
}
