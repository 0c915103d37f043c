package mesh

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/telemetry"
)

func benchMesh(b *testing.B, addr1, addr2, timeout string) *Mesh {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return newTestMesh(b, meshtest.BenchPolicy(addr1, addr2, timeout), WithMeterProvider(mp))
}

// BenchmarkLoopback compares a bare http.Transport with the same transport
// wrapped by the mesh, against one real server on 127.0.0.1, in one run.
func BenchmarkLoopback(b *testing.B) {
	srv := meshtest.NewBackend(b, "billing", nil)
	srv2 := meshtest.NewBackend(b, "billing", nil)
	run := roundTrips
	b.Run("bare", func(b *testing.B) {
		tr := newTransport()
		defer tr.CloseIdleConnections()
		run(b, tr, srv.URL+"/charge")
	})
	for _, v := range []struct{ name, timeout string }{{"mesh", ""}, {"mesh+timeout", "timeout: 2s"}} {
		b.Run(v.name, func(b *testing.B) {
			m := benchMesh(b, srv.Addr(), srv2.Addr(), v.timeout)
			tr := newTransport()
			defer tr.CloseIdleConnections()
			run(b, m.RoundTripper(tr), "http://billing/charge")
		})
	}
	notel := func(b *testing.B) http.RoundTripper {
		m := newTestMesh(b, meshtest.BenchPolicy(srv.Addr(), srv2.Addr(), "timeout: 2s"),
			WithMeterProvider(metricnoop.NewMeterProvider()), WithTracerProvider(tracenoop.NewTracerProvider()))
		tr := newTransport()
		b.Cleanup(tr.CloseIdleConnections)
		return m.RoundTripper(tr)
	}
	b.Run("mesh+timeout+notel", func(b *testing.B) { run(b, notel(b), "http://billing/charge") })
	// Bare and mesh (timeout, telemetry off) in turn, call by call, so
	// that the load of the machine weighs on both alike: ns/op is a pair
	// of calls, and mesh/bare the ratio of their times.
	b.Run("interleaved", func(b *testing.B) {
		bare := newTransport()
		defer bare.CloseIdleConnections()
		meshed := notel(b)
		breq, _ := http.NewRequest(http.MethodGet, srv.URL+"/charge", nil)
		mreq, _ := http.NewRequest(http.MethodGet, "http://billing/charge", nil)
		call := func(rt http.RoundTripper, req *http.Request) {
			resp, err := rt.RoundTrip(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		call(bare, breq)
		call(meshed, mreq)
		var tb, tm time.Duration
		b.ResetTimer()
		for b.Loop() {
			t0 := time.Now()
			call(bare, breq)
			t1 := time.Now()
			call(meshed, mreq)
			tb += t1.Sub(t0)
			tm += time.Since(t1)
		}
		b.ReportMetric(float64(tb.Nanoseconds())/float64(b.N), "bare-ns/call")
		b.ReportMetric(float64(tm.Nanoseconds())/float64(b.N), "mesh-ns/call")
		b.ReportMetric(float64(tm)/float64(tb), "mesh/bare")
	})
}

// instant answers every request at once, without I/O, so the benchmark
// measures the mesh's own cost per call.
type instant struct{}

func (instant) RoundTrip(*http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Body: http.NoBody, Header: http.Header{}}, nil
}

func BenchmarkNoIO(b *testing.B) {
	run := func(b *testing.B, rt http.RoundTripper) { roundTrips(b, rt, "http://billing/charge") }
	b.Run("bare", func(b *testing.B) { run(b, instant{}) })
	for _, v := range []struct{ name, timeout string }{{"mesh", ""}, {"mesh+timeout", "timeout: 2s"}} {
		b.Run(v.name, func(b *testing.B) {
			m := benchMesh(b, "127.0.0.1:9", "127.0.0.1:10", v.timeout)
			run(b, m.RoundTripper(instant{}))
		})
	}
	// The real SDK for both: metrics to a manual reader, every span
	// sampled and recorded (no exporter), so that the cost of what the
	// client span says is measured.
	b.Run("mesh+timeout+sdk", func(b *testing.B) {
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
		b.Cleanup(func() { _ = mp.Shutdown(context.Background()); _ = tp.Shutdown(context.Background()) })
		m := newTestMesh(b, meshtest.BenchPolicy("127.0.0.1:9", "127.0.0.1:10", "timeout: 2s"),
			WithMeterProvider(mp), WithTracerProvider(tp))
		run(b, m.RoundTripper(instant{}))
	})
	// Telemetry off (the noop providers): the mesh's own cost, as the
	// bench module's no-I/O row measures it.
	b.Run("mesh+timeout+notel", func(b *testing.B) {
		m := newTestMesh(b, meshtest.BenchPolicy("127.0.0.1:9", "127.0.0.1:10", "timeout: 2s"),
			WithMeterProvider(metricnoop.NewMeterProvider()), WithTracerProvider(tracenoop.NewTracerProvider()))
		run(b, m.RoundTripper(instant{}))
	})
}

// roundTrips sends GET url through rt b.N times, reading every answer.
func roundTrips(b *testing.B, rt http.RoundTripper, url string) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		resp, err := rt.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// BenchmarkHandlerAuthorize measures the authorization check of Handler for
// a service with 50 rules: the state load and the decision.
func BenchmarkHandlerAuthorize(b *testing.B) {
	var rules strings.Builder
	for i := range 50 {
		fmt.Fprintf(&rules, "        - {from: [caller-%d], paths: [/p%d, /charge], methods: [POST]}\n", i, i)
	}
	m := newTestMesh(b, `
services:
  billing:
    authorization:
      default: deny
      rules:
`+rules.String(), WithService("billing"))
	req, _ := http.NewRequest(http.MethodPost, "http://billing/charge", nil)
	if ok, reason := m.authorize(context.Background(), "caller-49", nil, req); !ok {
		b.Fatalf("denied: %s", reason)
	}
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := m.authorize(context.Background(), "caller-49", nil, req); !ok {
			b.Fatal("denied")
		}
	}
}

// authzPlane is a fixed policy whose callers a control plane authorizes:
// web, with X-Tenant: acme.
type authzPlane struct{ localPlane }

func (*authzPlane) Authorizer(Workload) (*Authorization, error) {
	return &Authorization{Authorize: func(caller, _, _ string, h RequestHeader) identity.Decision {
		for _, v := range h.Values("X-Tenant") {
			if caller == "web" && v == "acme" {
				return identity.Decision{Allow: true}
			}
		}
		return identity.Decision{Reason: "not web of acme"}
	}}, nil
}

// BenchmarkHandlerAuthorizeControlPlane measures the authorization check of
// Handler when the control plane decides (as Consul's intentions do): the
// request's headers reach it without an allocation.
func BenchmarkHandlerAuthorizeControlPlane(b *testing.B) {
	doc, err := policy.Parse([]byte("services: {billing: {}}\n"))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := New(ctx, WithService("billing"), WithControlPlane(&authzPlane{localPlane{doc: doc}}), WithLogger(meshtest.QuietLogger()))
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	req, _ := http.NewRequest(http.MethodPost, "http://billing/charge", nil)
	req.Header.Set("X-Tenant", "acme")
	if ok, reason := m.authorize(context.Background(), "web", nil, req); !ok {
		b.Fatalf("denied: %s", reason)
	}
	if ok, _ := m.authorize(context.Background(), "progress", nil, req); ok {
		b.Fatal("progress allowed")
	}
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := m.authorize(context.Background(), "web", nil, req); !ok {
			b.Fatal("denied")
		}
	}
}

// BenchmarkTelemetryFloor is what the OTel SDK itself costs for what one
// call through the mesh records, with no mesh: the client span started
// with the same name, kind and four attributes, one attempt event of four
// attributes, the four end attributes, the end, and one histogram record
// of seven attributes (a cached option, as the mesh passes it). "+inject"
// also writes the W3C trace context into a copy of the request's header,
// as the mesh does per attempt. BenchmarkNoIO/mesh+timeout+sdk less this
// is what inmesh adds over the SDK.
func BenchmarkTelemetryFloor(b *testing.B) {
	for _, inject := range []bool{false, true} {
		name := "span+metric"
		if inject {
			name += "+inject"
		}
		b.Run(name, func(b *testing.B) {
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
			b.Cleanup(func() { _ = mp.Shutdown(context.Background()); _ = tp.Shutdown(context.Background()) })
			roundTrips(b, floorRT(b, mp, tp, inject), "http://billing/charge")
		})
	}
}

// floorRT is a RoundTripper over instant that records what the mesh
// records for one call, straight with the SDK.
func floorRT(b *testing.B, mp *sdkmetric.MeterProvider, tp *sdktrace.TracerProvider, inject bool) http.RoundTripper {
	h, err := mp.Meter("floor").Float64Histogram(telemetry.MetricHTTPClientDuration, metric.WithUnit("s"))
	if err != nil {
		b.Fatal(err)
	}
	return &floor{tracer: tp.Tracer("floor"), hist: h, inject: inject,
		start: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
			attribute.String(telemetry.AttrServerAddress, "billing"),
			attribute.String(telemetry.AttrHTTPRequestMethod, "GET"),
			attribute.String(telemetry.AttrRoute, "default"),
			attribute.String(telemetry.AttrHTTPRoute, "default"))},
		event: []trace.EventOption{trace.WithAttributes(
			attribute.Int(telemetry.AttrAttemptNumber, 1),
			attribute.String(telemetry.AttrEndpoint, "127.0.0.1:9"),
			attribute.String(telemetry.AttrAttemptOutcome, "ok"),
			attribute.Float64(telemetry.AttrAttemptBackoff, 0))},
		record: []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(
			attribute.String(telemetry.AttrServerAddress, "billing"),
			attribute.String(telemetry.AttrHTTPRequestMethod, "GET"),
			attribute.String(telemetry.AttrRoute, "default"),
			attribute.String(telemetry.AttrHTTPRoute, "default"),
			attribute.String(telemetry.AttrSubset, "v1"),
			attribute.Int(telemetry.AttrHTTPResponseStatusCode, 200)))},
	}
}

type floor struct {
	tracer trace.Tracer
	hist   metric.Float64Histogram
	inject bool
	start  []trace.SpanStartOption
	event  []trace.EventOption
	record []metric.RecordOption
}

func (f *floor) RoundTrip(req *http.Request) (*http.Response, error) {
	t0 := time.Now()
	ctx, span := f.tracer.Start(req.Context(), "GET billing", f.start...)
	if f.inject {
		h := make(http.Header, len(req.Header)+4)
		for k, v := range req.Header {
			h[k] = v
		}
		propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(h))
	}
	resp, err := instant{}.RoundTrip(req)
	span.AddEvent(telemetry.EventAttempt, f.event...)
	span.SetAttributes(attribute.Int(telemetry.AttrHTTPResponseStatusCode, 200),
		attribute.String(telemetry.AttrSubset, "v1"), attribute.Int(telemetry.AttrAttempts, 1),
		attribute.String(telemetry.AttrPolicyVersion, "sha256:0123456789ab"))
	span.End()
	f.hist.Record(ctx, time.Since(t0).Seconds(), f.record...)
	return resp, err
}
