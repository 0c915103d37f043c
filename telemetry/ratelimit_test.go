package telemetry_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/inmesh/inmesh/telemetry"
)

func TestRecordRateLimit(t *testing.T) {
	in, reader := newMetrics(t)
	ctx := context.Background()
	in.RecordRateLimit(ctx, "billing", "enrollment", true, true)
	in.RecordRateLimit(ctx, "billing", "enrollment", true, false)
	in.RecordRateLimit(ctx, "billing", "enrollment", true, false)
	in.RecordRateLimit(ctx, "billing", "", true, false)         // no verified identity
	in.RecordRateLimit(ctx, "billing", "progress", false, true) // shared: no caller attribute
	sum := collect(t, reader, telemetry.MetricRateLimitDecisions).Data.(metricdata.Sum[int64])
	got := map[string]int64{}
	for _, dp := range sum.DataPoints {
		r, _ := dp.Attributes.Value(telemetry.AttrRateLimitResult)
		key := r.AsString()
		if c, ok := dp.Attributes.Value(telemetry.AttrCaller); ok {
			key = c.AsString() + "/" + key
		}
		got[key] = dp.Value
	}
	want := map[string]int64{"enrollment/allowed": 1, "enrollment/limited": 2, "/limited": 1, "allowed": 1}
	if len(got) != len(want) {
		t.Fatalf("decisions %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("decisions %v, want %v", got, want)
		}
	}
	if a := testing.AllocsPerRun(100, func() { in.RecordRateLimit(ctx, "billing", "enrollment", true, true) }); a != 0 {
		t.Errorf("RecordRateLimit allocates %v times", a)
	}
}
