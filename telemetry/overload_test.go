package telemetry_test

import (
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/inmesh/inmesh/telemetry"
)

type fixedLimit int

func (l fixedLimit) Limit() int { return int(l) }

func TestOverloadInstruments(t *testing.T) {
	in, reader := newMetrics(t)
	in.SetConcurrencyLimits(map[string]telemetry.LimitSource{"billing": fixedLimit(4), "progress": fixedLimit(20)})
	shed := in.ShedCounter("billing")
	if in.ShedCounter("billing") != shed {
		t.Fatal("ShedCounter returned another counter for the same service")
	}
	shed.Add(3)
	// A reload drops progress's limit; billing's shed count goes on.
	in.SetConcurrencyLimits(map[string]telemetry.LimitSource{"billing": fixedLimit(5)})
	in.ShedCounter("billing").Add(1)

	gauge := collect(t, reader, telemetry.MetricConcurrencyLimit).Data.(metricdata.Gauge[int64])
	limits := map[string]int64{}
	for _, p := range gauge.DataPoints {
		v, _ := p.Attributes.Value(attribute.Key(telemetry.AttrServerAddress))
		limits[v.AsString()] = p.Value
	}
	if len(limits) != 1 || limits["billing"] != 5 {
		t.Errorf("limits %v, want billing's 5 alone", limits)
	}
	sum := collect(t, reader, telemetry.MetricOverloadShed).Data.(metricdata.Sum[int64])
	if !sum.IsMonotonic || len(sum.DataPoints) != 1 || sum.DataPoints[0].Value != 4 ||
		sum.DataPoints[0].Attributes != set(attribute.String(telemetry.AttrServerAddress, "billing")) {
		t.Errorf("shed %+v, want 4 for billing, monotonic", sum)
	}
	var nilIn *telemetry.Instruments
	nilIn.SetConcurrencyLimits(nil)
	nilIn.ShedCounter("billing").Add(1)
}
