package telemetry_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/inmesh/inmesh/telemetry"
)

// newMetrics returns instruments backed by the SDK and a reader of them.
func newMetrics(t testing.TB) (*telemetry.Instruments, *sdkmetric.ManualReader) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	in, err := telemetry.New(mp)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return in, reader
}

// collect returns the metric named name from reader, failing when absent.
func collect(t testing.TB, reader *sdkmetric.ManualReader, name string) metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("Collect: %v", err)
	}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != telemetry.ScopeName {
			t.Errorf("scope %q, want %q", sm.Scope.Name, telemetry.ScopeName)
		}
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m
			}
		}
	}
	t.Fatalf("no metric %q collected", name)
	return metricdata.Metrics{}
}

func set(kvs ...attribute.KeyValue) attribute.Set { return attribute.NewSet(kvs...) }

func TestRecordHTTPClient(t *testing.T) {
	tests := []struct {
		name    string
		call    telemetry.HTTPCall
		elapsed time.Duration
		want    attribute.Set
	}{
		{
			name:    "success",
			call:    telemetry.HTTPCall{Service: "billing", Route: "charge", Subset: "v1", Method: "POST", StatusCode: 200},
			elapsed: 120 * time.Millisecond,
			want: set(
				attribute.String(telemetry.AttrServerAddress, "billing"),
				attribute.String(telemetry.AttrHTTPRequestMethod, "POST"),
				attribute.String(telemetry.AttrRoute, "charge"),
				attribute.String(telemetry.AttrHTTPRoute, "charge"),
				attribute.String(telemetry.AttrSubset, "v1"),
				attribute.Int(telemetry.AttrHTTPResponseStatusCode, 200)),
		},
		{
			name:    "5xx answer",
			call:    telemetry.HTTPCall{Service: "billing", Method: "GET", StatusCode: 503, ErrorType: "503"},
			elapsed: time.Second,
			want: set(
				attribute.String(telemetry.AttrServerAddress, "billing"),
				attribute.String(telemetry.AttrHTTPRequestMethod, "GET"),
				attribute.Int(telemetry.AttrHTTPResponseStatusCode, 503),
				attribute.String(telemetry.AttrErrorType, "503")),
		},
		{
			name:    "mesh failure without response",
			call:    telemetry.HTTPCall{Service: "billing", Route: "default", Method: "PURGE", ErrorType: "timeout"},
			elapsed: 2 * time.Second,
			want: set(
				attribute.String(telemetry.AttrServerAddress, "billing"),
				attribute.String(telemetry.AttrHTTPRequestMethod, "_OTHER"),
				attribute.String(telemetry.AttrRoute, "default"),
				attribute.String(telemetry.AttrHTTPRoute, "default"),
				attribute.String(telemetry.AttrErrorType, "timeout")),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, reader := newMetrics(t)
			in.RecordHTTPClient(context.Background(), tt.elapsed, tt.call)
			in.RecordHTTPClient(context.Background(), tt.elapsed, tt.call) // cached path
			m := collect(t, reader, telemetry.MetricHTTPClientDuration)
			if m.Unit != "s" || m.Description != telemetry.DescHTTPClientDuration {
				t.Errorf("unit %q, description %q", m.Unit, m.Description)
			}
			h, ok := m.Data.(metricdata.Histogram[float64])
			if !ok || len(h.DataPoints) != 1 {
				t.Fatalf("data %T %+v, want one float64 histogram point", m.Data, m.Data)
			}
			dp := h.DataPoints[0]
			if !dp.Attributes.Equals(&tt.want) {
				t.Errorf("attributes %v, want %v", dp.Attributes.ToSlice(), tt.want.ToSlice())
			}
			if dp.Count != 2 || dp.Sum != 2*tt.elapsed.Seconds() {
				t.Errorf("count %d sum %v, want 2 and %v seconds", dp.Count, dp.Sum, 2*tt.elapsed.Seconds())
			}
			if !slices.Contains(dp.Bounds, 0.005) || !slices.Contains(dp.Bounds, 10) || dp.Bounds[0] != 0.001 {
				t.Errorf("bucket bounds %v, want seconds from 1ms to 10s", dp.Bounds)
			}
		})
	}
}

func TestAttemptCounter(t *testing.T) {
	in, reader := newMetrics(t)
	charge := in.AttemptCounter("billing", "charge")
	if in.AttemptCounter("billing", "charge") != charge {
		t.Fatal("AttemptCounter returned a second counter for the same route")
	}
	charge.Add(1)
	charge.Add(3)
	in.AttemptCounter("billing", "").Add(2)
	m := collect(t, reader, telemetry.MetricClientAttempts)
	if m.Unit != telemetry.UnitClientAttempts {
		t.Errorf("unit %q", m.Unit)
	}
	sum := m.Data.(metricdata.Sum[int64])
	if !sum.IsMonotonic || sum.Temporality != metricdata.CumulativeTemporality {
		t.Errorf("want a cumulative monotonic sum, got %+v", sum)
	}
	got := map[string]int64{}
	for _, dp := range sum.DataPoints {
		if v, _ := dp.Attributes.Value(telemetry.AttrServerAddress); v.AsString() != "billing" {
			t.Errorf("server.address %v", v)
		}
		route, _ := dp.Attributes.Value(telemetry.AttrRoute)
		got[route.AsString()] = dp.Value
	}
	if len(got) != 2 || got["charge"] != 4 || got[""] != 2 {
		t.Errorf("points %v, want charge=4 and \"\"=2", got)
	}
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestRecordCounters(t *testing.T) {
	tests := []struct {
		metric, unit string
		record       func(*telemetry.Instruments, context.Context)
		want         attribute.Set
	}{
		{
			metric: telemetry.MetricBudgetExhausted, unit: telemetry.UnitBudgetExhausted,
			record: func(in *telemetry.Instruments, ctx context.Context) { in.RecordBudgetExhausted(ctx, "billing") },
			want:   set(attribute.String(telemetry.AttrServerAddress, "billing")),
		},
		{
			metric: telemetry.MetricBreakerTransitions, unit: telemetry.UnitBreakerTransitions,
			record: func(in *telemetry.Instruments, ctx context.Context) {
				in.RecordBreakerTransition(ctx, "billing", "closed", "open")
			},
			want: set(attribute.String(telemetry.AttrServerAddress, "billing"),
				attribute.String(telemetry.AttrBreakerFrom, "closed"),
				attribute.String(telemetry.AttrBreakerTo, "open")),
		},
		{
			metric: telemetry.MetricOutlierEjections, unit: telemetry.UnitOutlierEjections,
			record: func(in *telemetry.Instruments, ctx context.Context) {
				in.RecordEjection(ctx, "billing", "127.0.0.1:9001")
			},
			want: set(attribute.String(telemetry.AttrServerAddress, "billing"),
				attribute.String(telemetry.AttrEndpoint, "127.0.0.1:9001")),
		},
		{
			metric: telemetry.MetricPolicyUpdates, unit: telemetry.UnitPolicyUpdates,
			record: func(in *telemetry.Instruments, ctx context.Context) {
				in.RecordPolicyUpdate(ctx, telemetry.ResultRejected, "file:/etc/mesh.yaml")
			},
			want: set(attribute.String(telemetry.AttrPolicyResult, "rejected"),
				attribute.String(telemetry.AttrPolicySource, "file:/etc/mesh.yaml")),
		},
	}
	for _, tt := range tests {
		t.Run(tt.metric, func(t *testing.T) {
			in, reader := newMetrics(t)
			tt.record(in, context.Background())
			tt.record(in, context.Background())
			m := collect(t, reader, tt.metric)
			if m.Unit != tt.unit || m.Description == "" {
				t.Errorf("unit %q description %q, want unit %q and a description", m.Unit, m.Description, tt.unit)
			}
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok || !sum.IsMonotonic || len(sum.DataPoints) != 1 {
				t.Fatalf("data %+v, want one monotonic int64 sum point", m.Data)
			}
			dp := sum.DataPoints[0]
			if dp.Value != 2 || !dp.Attributes.Equals(&tt.want) {
				t.Errorf("value %d attributes %v, want 2 and %v", dp.Value, dp.Attributes.ToSlice(), tt.want.ToSlice())
			}
		})
	}
}

func TestNilInstrumentsRecordNothing(t *testing.T) {
	var in *telemetry.Instruments
	ctx := context.Background()
	in.RecordHTTPClient(ctx, time.Second, telemetry.HTTPCall{Service: "billing"})
	in.AttemptCounter("billing", "").Add(1)
	in.RecordBudgetExhausted(ctx, "billing")
	in.RecordBreakerTransition(ctx, "billing", "closed", "open")
	in.RecordEjection(ctx, "billing", "a:1")
	in.RecordPolicyUpdate(ctx, telemetry.ResultApplied, "inline")
}

func TestHotRecordingDoesNotAllocate(t *testing.T) {
	sdkIn, _ := newMetrics(t)
	noopIn, err := telemetry.New(noop.NewMeterProvider())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	call := telemetry.HTTPCall{Service: "billing", Route: "charge", Subset: "v1", Method: "POST", StatusCode: 200}
	for name, in := range map[string]*telemetry.Instruments{"sdk": sdkIn, "noop": noopIn} {
		in.RecordHTTPClient(ctx, time.Millisecond, call) // fill the caches
		counter := in.AttemptCounter("billing", "charge")
		if a := testing.AllocsPerRun(1000, func() { in.RecordHTTPClient(ctx, time.Millisecond, call) }); a != 0 {
			t.Errorf("%s: RecordHTTPClient allocates %v times per call", name, a)
		}
		if a := testing.AllocsPerRun(1000, func() { counter.Add(2) }); a != 0 {
			t.Errorf("%s: Counter.Add allocates %v times per call", name, a)
		}
	}
}

func BenchmarkRecordHTTPClient(b *testing.B) {
	ctx := context.Background()
	call := telemetry.HTTPCall{Service: "billing", Route: "charge", Subset: "v1", Method: "POST", StatusCode: 200}
	b.Run("cached", func(b *testing.B) {
		in, _ := newMetrics(b)
		b.ReportAllocs()
		for b.Loop() {
			in.RecordHTTPClient(ctx, 12*time.Millisecond, call)
		}
	})
	b.Run("cached-parallel", func(b *testing.B) {
		in, _ := newMetrics(b)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				in.RecordHTTPClient(ctx, 12*time.Millisecond, call)
			}
		})
	})
	// The cache lookup alone: a no-op provider records nothing.
	b.Run("cached-noop-provider", func(b *testing.B) {
		in, err := telemetry.New(noop.NewMeterProvider())
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			in.RecordHTTPClient(ctx, 12*time.Millisecond, call)
		}
	})
	// Baseline: the same measurement with the attribute set built per call.
	b.Run("uncached-baseline", func(b *testing.B) {
		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		defer mp.Shutdown(ctx)
		h, _ := mp.Meter("bench").Float64Histogram(telemetry.MetricHTTPClientDuration)
		b.ReportAllocs()
		for b.Loop() {
			h.Record(ctx, 0.012, metric.WithAttributes(
				attribute.String(telemetry.AttrServerAddress, call.Service),
				attribute.String(telemetry.AttrHTTPRequestMethod, call.Method),
				attribute.String(telemetry.AttrRoute, call.Route),
				attribute.String(telemetry.AttrSubset, call.Subset),
				attribute.Int(telemetry.AttrHTTPResponseStatusCode, call.StatusCode)))
		}
	})
}

func BenchmarkAttemptCounter(b *testing.B) {
	in, _ := newMetrics(b)
	c := in.AttemptCounter("billing", "charge")
	b.ReportAllocs()
	for b.Loop() {
		c.Add(2)
	}
}

// TestConcurrentRecording records from many goroutines while the caches
// fill; run with -race.
func TestConcurrentRecording(t *testing.T) {
	in, reader := newMetrics(t)
	ctx := context.Background()
	routes := []string{"a", "b", "c", "d", "e"}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				r := routes[(g+i)%len(routes)]
				in.RecordHTTPClient(ctx, time.Millisecond, telemetry.HTTPCall{Service: "billing", Route: r, Method: "GET", StatusCode: 200})
				in.AttemptCounter("billing", r).Add(1)
			}
		})
	}
	wg.Wait()
	var total uint64
	for _, dp := range collect(t, reader, telemetry.MetricHTTPClientDuration).Data.(metricdata.Histogram[float64]).DataPoints {
		total += dp.Count
	}
	if total != 8*500 {
		t.Errorf("recorded %d calls, want %d", total, 8*500)
	}
}
