package telemetry_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/inmesh/inmesh/telemetry"
)

func TestRecordFault(t *testing.T) {
	in, reader := newMetrics(t)
	ctx := context.Background()
	in.RecordFault(ctx, "billing", telemetry.FaultAbort)
	in.RecordFault(ctx, "billing", telemetry.FaultAbort)
	in.RecordFault(ctx, "billing", telemetry.FaultDelay)
	m := collect(t, reader, telemetry.MetricFaultsInjected)
	if m.Unit != telemetry.UnitFaultsInjected || m.Description == "" {
		t.Errorf("unit %q description %q", m.Unit, m.Description)
	}
	sum, ok := m.Data.(metricdata.Sum[int64])
	if !ok || !sum.IsMonotonic {
		t.Fatalf("data %+v, want a monotonic int64 sum", m.Data)
	}
	got := map[string]int64{}
	for _, dp := range sum.DataPoints {
		if v, _ := dp.Attributes.Value(telemetry.AttrServerAddress); v.AsString() != "billing" || dp.Attributes.Len() != 2 {
			t.Errorf("attributes %v", dp.Attributes.ToSlice())
		}
		v, _ := dp.Attributes.Value(telemetry.AttrFaultKind)
		got[v.AsString()] += dp.Value
	}
	if got[telemetry.FaultAbort] != 2 || got[telemetry.FaultDelay] != 1 || len(got) != 2 {
		t.Errorf("counted %v, want abort 2 and delay 1", got)
	}

	var none *telemetry.Instruments
	none.RecordFault(ctx, "billing", telemetry.FaultAbort)
}

func TestFaultEvents(t *testing.T) {
	tr, rec := newTracing(t, nil)
	_, span := tr.StartClientCall(context.Background(), "billing", "", "GET")
	telemetry.FaultDelayEvent(span, 200*time.Millisecond)
	telemetry.FaultAbortEvent(span, "HTTP 503")
	telemetry.EndCall(span, 0, "fault", nil)
	telemetry.FaultDelayEvent(nil, time.Second)
	telemetry.FaultAbortEvent(nil, "HTTP 503")

	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans", len(spans))
	}
	ev := spans[0].Events()
	if len(ev) != 2 || ev[0].Name != telemetry.EventFault || ev[1].Name != telemetry.EventFault {
		t.Fatalf("events %+v, want two %s", ev, telemetry.EventFault)
	}
	for i, want := range []map[attribute.Key]attribute.Value{
		{telemetry.AttrFaultEventKind: attribute.StringValue("delay"), telemetry.AttrFaultDelay: attribute.Float64Value(0.2)},
		{telemetry.AttrFaultEventKind: attribute.StringValue("abort"), telemetry.AttrFaultStatus: attribute.StringValue("HTTP 503")},
	} {
		a := attrs(ev[i].Attributes)
		if len(a) != len(want) {
			t.Errorf("event %d attributes %v, want %v", i, a, want)
		}
		for k, v := range want {
			if a[k] != v {
				t.Errorf("event %d %s = %v, want %v", i, k, a[k].Emit(), v.Emit())
			}
		}
	}
}
