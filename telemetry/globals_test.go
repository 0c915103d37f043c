package telemetry_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/inmesh/inmesh/telemetry"
)

// TestNilProvidersUseGlobals is the only test that touches the OTel globals
// (they delegate only once per process). The mesh is built first and the
// globals installed after, as an application that sets up OTel late would.
func TestNilProvidersUseGlobals(t *testing.T) {
	in, err := telemetry.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := telemetry.NewTracing(nil, nil)

	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	otel.SetMeterProvider(mp)
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})

	ctx, span := tr.StartClientCall(context.Background(), "billing", "", "GET")
	h := http.Header{}
	tr.Inject(ctx, h)
	telemetry.EndCall(span, 200, "", nil)
	in.RecordHTTPClient(ctx, time.Millisecond, telemetry.HTTPCall{Service: "billing", Method: "GET", StatusCode: 200})

	if n := len(rec.Ended()); n != 1 {
		t.Errorf("global tracer provider recorded %d spans, want 1", n)
	}
	if h.Get("traceparent") == "" {
		t.Error("global propagator injected no traceparent")
	}
	m := collect(t, reader, telemetry.MetricHTTPClientDuration)
	if h := m.Data.(metricdata.Histogram[float64]); len(h.DataPoints) != 1 || h.DataPoints[0].Count != 1 {
		t.Errorf("global meter provider collected %+v, want one measurement", m.Data)
	}
}
