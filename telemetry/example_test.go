package telemetry_test

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/inmesh/inmesh/telemetry"
)

func ExampleInstruments_RecordHTTPClient() {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())

	in, err := telemetry.New(mp)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	in.RecordHTTPClient(ctx, 250*time.Millisecond, telemetry.HTTPCall{
		Service: "billing", Route: "charge", Subset: "v1", Method: "POST",
		StatusCode: 503, ErrorType: "503",
	})

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		fmt.Println(err)
		return
	}
	m := rm.ScopeMetrics[0].Metrics[0]
	dp := m.Data.(metricdata.Histogram[float64]).DataPoints[0]
	fmt.Printf("%s [%s] count=%d sum=%.2f\n", m.Name, m.Unit, dp.Count, dp.Sum)
	for _, kv := range dp.Attributes.ToSlice() {
		fmt.Printf("  %s=%s\n", kv.Key, kv.Value.Emit())
	}
	// Output:
	// http.client.request.duration [s] count=1 sum=0.25
	//   error.type=503
	//   http.request.method=POST
	//   http.response.status_code=503
	//   http.route=charge
	//   inmesh.route=charge
	//   inmesh.subset=v1
	//   server.address=billing
}

func ExampleTracing_Inject() {
	// A call that continues a trace received from upstream.
	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
		Remote:     true,
	})
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), parent)

	// A no-op tracer keeps the example's IDs fixed; with the SDK the span
	// gets its own span ID and the header names it.
	tr := telemetry.NewTracing(noop.NewTracerProvider(), propagation.TraceContext{})
	ctx, span := tr.StartClientCall(ctx, "billing", "charge", "POST")
	h := http.Header{}
	tr.Inject(ctx, h)
	telemetry.EndCall(span, http.StatusOK, "", nil)

	fmt.Println("traceparent:", h.Get("traceparent"))
	// Output:
	// traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
}
