package meshtest

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Int64Sums collects reader and returns the data points of the int64
// counter called name, summed by key(their attributes).
func Int64Sums(t testing.TB, reader *sdkmetric.ManualReader, name string, key func(attrs attribute.Set) string) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				t.Fatalf("%s is a %T, not an int64 sum", name, m.Data)
			}
			for _, dp := range sum.DataPoints {
				got[key(dp.Attributes)] += dp.Value
			}
		}
	}
	return got
}

// Attr returns the value of attribute k of attrs as a string ("" when
// absent).
func Attr(attrs attribute.Set, k string) string {
	v, _ := attrs.Value(attribute.Key(k))
	return v.AsString()
}
