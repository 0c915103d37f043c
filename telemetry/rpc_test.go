package telemetry_test

import (
	"context"
	"testing"
	"time"

	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"

	"github.com/inmesh/inmesh/resilience"
	"github.com/inmesh/inmesh/telemetry"
)

func TestRecordRPCClient(t *testing.T) {
	in, reader := newMetrics(t)
	ctx := context.Background()
	ok := telemetry.RPCCall{Service: "billing", Route: "check", Subset: "v1", FullMethod: "/grpc.health.v1.Health/Check"}
	in.RecordRPCClient(ctx, 12*time.Millisecond, ok)
	in.RecordRPCClient(ctx, 200*time.Millisecond, telemetry.RPCCall{Service: "billing", FullMethod: "/grpc.health.v1.Health/Check",
		Code: resilience.CodeDeadlineExceeded, ErrorType: "timeout"})
	m := collect(t, reader, telemetry.MetricRPCClientDuration)
	if m.Unit != "s" {
		t.Fatalf("unit %q, want s (seconds, as HTTP)", m.Unit)
	}
	h := m.Data.(metricdata.Histogram[float64])
	if len(h.DataPoints) != 2 {
		t.Fatalf("%d points", len(h.DataPoints))
	}
	for _, dp := range h.DataPoints {
		a := attrs(dp.Attributes.ToSlice())
		if a[telemetry.AttrRPCSystem].AsString() != "grpc" || a[telemetry.AttrRPCService].AsString() != "grpc.health.v1.Health" ||
			a[telemetry.AttrRPCMethod].AsString() != "Check" || a[telemetry.AttrServerAddress].AsString() != "billing" {
			t.Errorf("attributes %v", a)
		}
		switch a[telemetry.AttrRPCGRPCStatusCode].AsInt64() {
		case 0:
			if dp.Sum != 0.012 || a[telemetry.AttrRoute].AsString() != "check" || a[telemetry.AttrSubset].AsString() != "v1" {
				t.Errorf("OK point: sum %v, attributes %v", dp.Sum, a)
			}
		case int64(resilience.CodeDeadlineExceeded):
			if dp.Sum != 0.2 || a[telemetry.AttrErrorType].AsString() != "timeout" {
				t.Errorf("timeout point: sum %v, attributes %v", dp.Sum, a)
			}
		default:
			t.Errorf("unexpected point %v", a)
		}
	}
	if allocs := testing.AllocsPerRun(100, func() { in.RecordRPCClient(ctx, time.Millisecond, ok) }); allocs != 0 {
		t.Errorf("RecordRPCClient allocates %v times", allocs)
	}
}

func TestRecordRPCServer(t *testing.T) {
	in, reader := newMetrics(t)
	ctx := context.Background()
	call := telemetry.RPCServerCall{Service: "billing", Caller: "enrollment", FullMethod: "/grpc.health.v1.Health/Check"}
	in.RecordRPCServer(ctx, time.Millisecond, call)
	in.RecordRPCServer(ctx, time.Millisecond, telemetry.RPCServerCall{Service: "billing", Caller: "progress",
		FullMethod: "/grpc.health.v1.Health/Check", Code: resilience.CodePermissionDenied, ErrorType: "authz"})
	h := collect(t, reader, telemetry.MetricRPCServerDuration).Data.(metricdata.Histogram[float64])
	if len(h.DataPoints) != 2 {
		t.Fatalf("%d points", len(h.DataPoints))
	}
	if allocs := testing.AllocsPerRun(100, func() { in.RecordRPCServer(ctx, time.Millisecond, call) }); allocs != 0 {
		t.Errorf("RecordRPCServer allocates %v times", allocs)
	}
}

func TestSplitMethod(t *testing.T) {
	for in, want := range map[string][2]string{
		"/grpc.health.v1.Health/Check": {"grpc.health.v1.Health", "Check"},
		"billing.Billing/Charge":       {"billing.Billing", "Charge"},
		"/nomethod":                    {"nomethod", ""},
	} {
		if s, m := telemetry.SplitMethod(in); s != want[0] || m != want[1] {
			t.Errorf("SplitMethod(%q) = %q, %q", in, s, m)
		}
	}
}

// TestRPCSpansAcrossTheWire starts a client span, takes its outgoing
// metadata, carries them to the server's carrier as gRPC would, and checks
// the server span is its child.
func TestRPCSpansAcrossTheWire(t *testing.T) {
	tr, rec := newTracing(t, propagation.TraceContext{})
	ctx, span := tr.StartRPCClientCall(context.Background(), "billing", "check", "/grpc.health.v1.Health/Check")
	kv := tr.OutgoingMetadata(ctx)
	md := propagation.MapCarrier{}
	for i := 0; i+1 < len(kv); i += 2 {
		md[kv[i]] = kv[i+1]
	}
	if md["traceparent"] == "" {
		t.Fatalf("outgoing metadata %v has no traceparent", kv)
	}
	sctx, sspan := tr.StartRPCServerCall(context.Background(), md, "billing", "/grpc.health.v1.Health/Check")
	if got := trace.SpanContextFromContext(sctx); got.TraceID() != span.SpanContext().TraceID() {
		t.Fatal("the server span is not in the caller's trace")
	}
	telemetry.EndRPCServerCall(sspan, resilience.CodePermissionDenied, "progress", "authz")
	telemetry.EndRPCCall(span, resilience.CodePermissionDenied, "authz", nil)

	ended := rec.Ended()
	if len(ended) != 2 {
		t.Fatalf("%d spans", len(ended))
	}
	server, client := ended[0], ended[1]
	if client.Name() != "grpc.health.v1.Health/Check" || client.SpanKind() != trace.SpanKindClient ||
		client.Status().Code != otelcodes.Error {
		t.Errorf("client span %q kind %v status %v", client.Name(), client.SpanKind(), client.Status())
	}
	if server.Parent().SpanID() != client.SpanContext().SpanID() || server.SpanKind() != trace.SpanKindServer {
		t.Errorf("server span parent %v, want %v", server.Parent().SpanID(), client.SpanContext().SpanID())
	}
	a := attrs(server.Attributes())
	if a[telemetry.AttrCaller].AsString() != "progress" || a[telemetry.AttrErrorType].AsString() != "authz" {
		t.Errorf("server span attributes %v", a)
	}

	// Nothing to carry: no metadata, and no allocation.
	bg := context.Background()
	if kv := tr.OutgoingMetadata(bg); kv != nil {
		t.Errorf("OutgoingMetadata of a context without trace context = %v", kv)
	}
	if n := testing.AllocsPerRun(100, func() { _ = tr.OutgoingMetadata(bg) }); n != 0 {
		t.Errorf("OutgoingMetadata without trace context allocates %v times", n)
	}
}

func TestEndRPCServerCallErrors(t *testing.T) {
	tr, rec := newTracing(t, nil)
	for _, c := range []resilience.GRPCCode{resilience.CodeNotFound, resilience.CodeInternal} {
		_, span := tr.StartRPCServerCall(context.Background(), nil, "billing", "/b.B/M")
		telemetry.EndRPCServerCall(span, c, "", "")
	}
	ended := rec.Ended()
	if ended[0].Status().Code == otelcodes.Error || ended[1].Status().Code != otelcodes.Error {
		t.Errorf("NotFound is the caller's error, Internal the server's: statuses %v %v", ended[0].Status(), ended[1].Status())
	}
}
