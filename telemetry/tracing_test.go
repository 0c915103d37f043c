package telemetry_test

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"regexp"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/inmesh/inmesh/telemetry"
)

// newTracing returns tracing backed by the SDK and a recorder of its spans.
func newTracing(t testing.TB, p propagation.TextMapPropagator) (*telemetry.Tracing, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return telemetry.NewTracing(tp, p), rec
}

func attrs(kvs []attribute.KeyValue) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

func TestClientCallSpan(t *testing.T) {
	tr, rec := newTracing(t, nil)
	ctx, span := tr.StartClientCall(context.Background(), "billing", "charge", "POST")
	if !trace.SpanContextFromContext(ctx).Equal(span.SpanContext()) {
		t.Error("the returned context does not carry the span")
	}
	telemetry.AttemptEvent(span, 1, "127.0.0.1:9001", "503", 0)
	telemetry.AttemptEvent(span, 2, "127.0.0.1:9002", "ok", 25*time.Millisecond)
	telemetry.EndCall(span, 200, "", nil)

	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans ended, want 1", len(spans))
	}
	s := spans[0]
	if s.Name() != "POST billing" || s.SpanKind() != trace.SpanKindClient {
		t.Errorf("span %q kind %v, want \"POST billing\" client", s.Name(), s.SpanKind())
	}
	if s.InstrumentationScope().Name != telemetry.ScopeName {
		t.Errorf("scope %q", s.InstrumentationScope().Name)
	}
	a := attrs(s.Attributes())
	for k, want := range map[string]attribute.Value{
		telemetry.AttrServerAddress:          attribute.StringValue("billing"),
		telemetry.AttrHTTPRequestMethod:      attribute.StringValue("POST"),
		telemetry.AttrRoute:                  attribute.StringValue("charge"),
		telemetry.AttrHTTPResponseStatusCode: attribute.IntValue(200),
	} {
		if got := a[attribute.Key(k)]; got != want {
			t.Errorf("attribute %s = %v, want %v", k, got.Emit(), want.Emit())
		}
	}
	if _, ok := a[telemetry.AttrErrorType]; ok || s.Status().Code != codes.Unset {
		t.Errorf("successful call: status %v, error.type %v", s.Status(), a[telemetry.AttrErrorType].Emit())
	}
	events := s.Events()
	if len(events) != 2 {
		t.Fatalf("%d events, want 2", len(events))
	}
	wantEvents := []map[string]attribute.Value{
		{
			telemetry.AttrAttemptNumber:  attribute.IntValue(1),
			telemetry.AttrEndpoint:       attribute.StringValue("127.0.0.1:9001"),
			telemetry.AttrAttemptOutcome: attribute.StringValue("503"),
			telemetry.AttrAttemptBackoff: attribute.Float64Value(0),
		},
		{
			telemetry.AttrAttemptNumber:  attribute.IntValue(2),
			telemetry.AttrEndpoint:       attribute.StringValue("127.0.0.1:9002"),
			telemetry.AttrAttemptOutcome: attribute.StringValue("ok"),
			telemetry.AttrAttemptBackoff: attribute.Float64Value(0.025),
		},
	}
	for i, e := range events {
		if e.Name != telemetry.EventAttempt {
			t.Errorf("event %d named %q", i, e.Name)
		}
		ea := attrs(e.Attributes)
		for k, want := range wantEvents[i] {
			if got := ea[attribute.Key(k)]; got != want {
				t.Errorf("event %d: %s = %v, want %v", i, k, got.Emit(), want.Emit())
			}
		}
	}
}

func TestClientCallSpanName(t *testing.T) {
	tests := []struct{ method, route, want string }{
		{"GET", "", "GET billing"},
		{"", "", "GET billing"},
		{"PURGE", "r", "HTTP billing"},
	}
	for _, tt := range tests {
		tr, rec := newTracing(t, nil)
		_, span := tr.StartClientCall(context.Background(), "billing", tt.route, tt.method)
		telemetry.EndCall(span, 0, "", nil)
		s := rec.Ended()[0]
		if s.Name() != tt.want {
			t.Errorf("method %q: span %q, want %q", tt.method, s.Name(), tt.want)
		}
		if _, ok := attrs(s.Attributes())[telemetry.AttrRoute]; ok != (tt.route != "") {
			t.Errorf("route %q: inmesh.route present = %v", tt.route, ok)
		}
	}
}

func TestEndCall(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		errorType string
		err       error
		wantCode  codes.Code
		wantType  string // "" means absent
		wantDesc  string
	}{
		{name: "2xx", status: 200, wantCode: codes.Unset},
		{name: "3xx", status: 304, wantCode: codes.Unset},
		{name: "5xx answer", status: 503, wantCode: codes.Error, wantType: "503", wantDesc: "503"},
		{name: "5xx with error type", status: 502, errorType: "502", wantCode: codes.Error, wantType: "502", wantDesc: "502"},
		{name: "4xx answer", status: 404, wantCode: codes.Error, wantType: "404", wantDesc: "404"},
		{
			name: "mesh failure", errorType: "timeout", err: errors.New("mesh: timeout: context deadline exceeded"),
			wantCode: codes.Error, wantType: "timeout", wantDesc: "mesh: timeout: context deadline exceeded",
		},
		{name: "error without type", err: errors.New("boom"), wantCode: codes.Error, wantType: "_OTHER", wantDesc: "boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, rec := newTracing(t, nil)
			_, span := tr.StartClientCall(context.Background(), "billing", "", "GET")
			telemetry.EndCall(span, tt.status, tt.errorType, tt.err)
			s := rec.Ended()[0]
			if s.Status().Code != tt.wantCode || s.Status().Description != tt.wantDesc {
				t.Errorf("status %+v, want %v %q", s.Status(), tt.wantCode, tt.wantDesc)
			}
			got, ok := attrs(s.Attributes())[telemetry.AttrErrorType]
			if tt.wantType == "" && ok || tt.wantType != "" && got.AsString() != tt.wantType {
				t.Errorf("error.type %q (present %v), want %q", got.AsString(), ok, tt.wantType)
			}
		})
	}
}

func TestInject(t *testing.T) {
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	tr, _ := newTracing(t, prop)
	member, _ := baggage.NewMember("tenant", "acme")
	bag, _ := baggage.New(member)
	ctx := baggage.ContextWithBaggage(context.Background(), bag)
	ctx, span := tr.StartClientCall(ctx, "billing", "", "GET")
	defer telemetry.EndCall(span, 200, "", nil)

	h := http.Header{}
	tr.Inject(ctx, h)
	sc := span.SpanContext()
	want := "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"
	if got := h.Get("traceparent"); got != want {
		t.Errorf("traceparent %q, want %q", got, want)
	}
	if !regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$`).MatchString(h.Get("traceparent")) {
		t.Errorf("traceparent %q is not W3C", h.Get("traceparent"))
	}
	if got := h.Get("baggage"); got != "tenant=acme" {
		t.Errorf("baggage %q, want tenant=acme", got)
	}

	// The server side reads it back.
	sctx := tr.Extract(context.Background(), h)
	if got := trace.SpanContextFromContext(sctx); got.TraceID() != sc.TraceID() || !got.IsRemote() {
		t.Errorf("extracted %+v, want remote trace %s", got, sc.TraceID())
	}
	if baggage.FromContext(sctx).Member("tenant").Value() != "acme" {
		t.Error("baggage not extracted")
	}
}

func TestNilTracing(t *testing.T) {
	var tr *telemetry.Tracing
	ctx, span := tr.StartClientCall(context.Background(), "billing", "", "GET")
	if span == nil || span.IsRecording() {
		t.Fatal("nil Tracing: want a non-recording span")
	}
	h := http.Header{}
	tr.Inject(ctx, h)
	if len(h) != 0 {
		t.Errorf("nil Tracing injected %v", h)
	}
	telemetry.AttemptEvent(span, 1, "a:1", "ok", 0)
	telemetry.EndCall(span, 200, "", nil)
	telemetry.AttemptEvent(nil, 1, "a:1", "ok", 0)
	telemetry.EndCall(nil, 200, "", nil)
}

// TestNoopTracingAddsNoAllocation checks that a call traced by a no-op
// tracer allocates no more than the tracer's own Start (which stores the
// span in a new context), and, since such a span carries nothing a
// context without a span context needs, nothing at all.
func TestNoopTracingAddsNoAllocation(t *testing.T) {
	tp := noop.NewTracerProvider()
	tr := telemetry.NewTracing(tp, propagation.TraceContext{})
	ctx := context.Background()
	bare := tp.Tracer("bare")
	base := testing.AllocsPerRun(1000, func() {
		_, span := bare.Start(ctx, "POST billing")
		span.End()
	})
	tr.StartClientCall(ctx, "billing", "charge", "POST") // fill the cache
	a := testing.AllocsPerRun(1000, func() {
		_, span := tr.StartClientCall(ctx, "billing", "charge", "POST")
		telemetry.AttemptEvent(span, 1, "127.0.0.1:9001", "ok", 0)
		telemetry.EndCall(span, 200, "", nil)
	})
	if a > base || a != 0 {
		t.Errorf("a call with a no-op tracer allocates %v times, the tracer alone %v; want 0", a, base)
	}
}

func BenchmarkClientCall(b *testing.B) {
	ctx := context.Background()
	run := func(b *testing.B, tr *telemetry.Tracing) {
		h := http.Header{}
		b.ReportAllocs()
		for b.Loop() {
			cctx, span := tr.StartClientCall(ctx, "billing", "charge", "POST")
			tr.Inject(cctx, h)
			telemetry.AttemptEvent(span, 1, "127.0.0.1:9001", "ok", 0)
			telemetry.EndCall(span, 200, "", nil)
		}
	}
	b.Run("noop", func(b *testing.B) {
		run(b, telemetry.NewTracing(noop.NewTracerProvider(), propagation.TraceContext{}))
	})
	b.Run("sdk", func(b *testing.B) {
		tr, _ := newTracing(b, propagation.TraceContext{})
		run(b, tr)
	})
}

// TestHeaderCarrierAsOTels: the carrier Tracing uses reads and writes what
// OTel's HeaderCarrier does, whatever the case of the names.
func TestHeaderCarrierAsOTels(t *testing.T) {
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	tr := telemetry.NewTracing(noop.NewTracerProvider(), prop)
	h := http.Header{}
	h.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	h.Set("Tracestate", "k=v")
	h.Add("Baggage", "a=1")
	h.Add("baggage", "b=2")
	ctx := tr.Extract(context.Background(), h)
	sc := trace.SpanContextFromContext(ctx)
	if sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || sc.TraceState().Get("k") != "v" {
		t.Fatalf("extracted %v", sc)
	}
	if b := baggage.FromContext(ctx); b.Member("a").Value() != "1" || b.Member("b").Value() != "2" {
		t.Fatalf("baggage %v", b)
	}
	out := http.Header{}
	tr.Inject(ctx, out)
	want := http.Header{}
	prop.Inject(ctx, propagation.HeaderCarrier(want))
	// Baggage members come in no set order: compare them parsed.
	gotBag, _ := baggage.Parse(out.Get("Baggage"))
	wantBag, _ := baggage.Parse(want.Get("Baggage"))
	out.Del("Baggage")
	want.Del("Baggage")
	if !reflect.DeepEqual(out, want) || gotBag.Len() != 2 || gotBag.Member("a").Value() != wantBag.Member("a").Value() || gotBag.Member("b").Value() != wantBag.Member("b").Value() {
		t.Fatalf("injected %v (baggage %v), OTel's carrier %v (baggage %v)", out, gotBag, want, wantBag)
	}
}

// TestInjectSlots checks that InjectSlots writes what OTel's carrier
// writes (traceparent, tracestate and baggage), the W3C values held in
// the slots, with one allocation fewer per value than Inject.
func TestInjectSlots(t *testing.T) {
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	tr := telemetry.NewTracing(noop.NewTracerProvider(), prop)
	in := http.Header{}
	in.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	in.Set("Tracestate", "k=v")
	in.Set("Baggage", "a=1")
	ctx := tr.Extract(context.Background(), in)

	out := http.Header{"X-App": {"1"}}
	var slots telemetry.HeaderSlots
	tr.InjectSlots(ctx, out, &slots)
	want := http.Header{"X-App": {"1"}}
	prop.Inject(ctx, propagation.HeaderCarrier(want))
	if !reflect.DeepEqual(out, want) {
		t.Fatalf("injected %v, OTel's carrier %v", out, want)
	}
	for _, k := range []string{"Traceparent", "Tracestate"} {
		if v := out[k]; len(v) != 1 || cap(v) != 1 {
			t.Errorf("%s is %q (cap %d), want one value, capped", k, v, cap(v))
		}
	}

	// Without tracestate and baggage: only the traceparent, with one
	// allocation (OTel's string) where Inject has two.
	sc := trace.SpanContextFromContext(ctx)
	plain := trace.ContextWithSpanContext(context.Background(), sc.WithTraceState(trace.TraceState{}))
	h := make(http.Header, 4)
	inject := testing.AllocsPerRun(100, func() { tr.Inject(plain, h) })
	slotted := testing.AllocsPerRun(100, func() { slots = telemetry.HeaderSlots{}; tr.InjectSlots(plain, h, &slots) })
	if slotted != inject-1 {
		t.Errorf("InjectSlots allocates %v times, Inject %v: want one fewer", slotted, inject)
	}
	if got := h.Get("traceparent"); got != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
		t.Errorf("traceparent %q", got)
	}
}
