package telemetry_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/inmesh/inmesh/telemetry"
)

func TestRecordHedge(t *testing.T) {
	in, reader := newMetrics(t)
	ctx := context.Background()
	for _, r := range []string{telemetry.HedgeSent, telemetry.HedgeSent, telemetry.HedgeWon, telemetry.HedgeRefused} {
		in.RecordHedge(ctx, "billing", "charge", r)
	}
	in.RecordHedge(ctx, "billing", "", telemetry.HedgeSent)
	m := collect(t, reader, telemetry.MetricHedges)
	if m.Unit != telemetry.UnitHedges || m.Description == "" {
		t.Errorf("unit %q description %q", m.Unit, m.Description)
	}
	sum, ok := m.Data.(metricdata.Sum[int64])
	if !ok || !sum.IsMonotonic {
		t.Fatalf("data %+v, want a monotonic int64 sum", m.Data)
	}
	got := map[string]int64{}
	for _, dp := range sum.DataPoints {
		svc, _ := dp.Attributes.Value(telemetry.AttrServerAddress)
		res, _ := dp.Attributes.Value(telemetry.AttrHedgeResult)
		route, _ := dp.Attributes.Value(telemetry.AttrRoute)
		got[svc.AsString()+" "+route.AsString()+" "+res.AsString()] = dp.Value
	}
	want := map[string]int64{"billing charge sent": 2, "billing charge won": 1, "billing charge refused": 1, "billing  sent": 1}
	if len(got) != len(want) {
		t.Fatalf("points %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("points %v, want %v", got, want)
		}
	}
	if a := testing.AllocsPerRun(100, func() { in.RecordHedge(ctx, "billing", "charge", telemetry.HedgeSent) }); a != 0 {
		t.Errorf("RecordHedge allocates %v times once its set is cached", a)
	}
	var none *telemetry.Instruments
	none.RecordHedge(ctx, "billing", "", telemetry.HedgeSent)
}

func TestHedgeEvent(t *testing.T) {
	tr, rec := newTracing(t, nil)
	_, span := tr.StartClientCall(context.Background(), "billing", "", "GET")
	telemetry.HedgeEvent(span, 2, "127.0.0.1:9002", telemetry.HedgeSent)
	telemetry.EndCall(span, 200, "", nil)
	events := rec.Ended()[0].Events()
	if len(events) != 1 || events[0].Name != telemetry.EventHedge {
		t.Fatalf("events %+v, want one %s", events, telemetry.EventHedge)
	}
	a := attrs(events[0].Attributes)
	for k, want := range map[string]attribute.Value{
		telemetry.AttrAttemptNumber: attribute.IntValue(2),
		telemetry.AttrEndpoint:      attribute.StringValue("127.0.0.1:9002"),
		telemetry.AttrHedgeResult:   attribute.StringValue("sent"),
	} {
		if got := a[attribute.Key(k)]; got != want {
			t.Errorf("%s = %v, want %v", k, got.Emit(), want.Emit())
		}
	}
	telemetry.HedgeEvent(nil, 2, "", telemetry.HedgeRefused)
}
