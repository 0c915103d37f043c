package core

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/inmesh/inmesh/internal/clock/clocktest"
)

// TestLogFailure: a mesh failure is one record with the CallError's fields,
// at Warn (Info for an injected fault); per destination service and layer
// at most one a second, the next saying how many were left out; another
// service or layer has its own rate.
func TestLogFailure(t *testing.T) {
	clk := clocktest.NewFake(time.Unix(1000, 0))
	var buf bytes.Buffer
	env := &Env{Clock: clk, Log: slog.New(slog.NewJSONHandler(&buf, nil)), Failures: &FailureLog{}}
	ce := func(service string, layer Layer) *CallError {
		return &CallError{Layer: layer, Service: service, Route: "charge", Subset: "v2", Endpoint: "10.0.0.1:80",
			Attempts: 3, PolicyVersion: "v9", Err: errors.New("connection refused")}
	}
	ctx := context.Background()
	for range 5 {
		env.LogFailure(ctx, ce("billing", LayerConnect))
	}
	env.LogFailure(ctx, ce("billing", LayerTimeout))
	env.LogFailure(ctx, ce("catalog", LayerConnect))
	env.LogFailure(ctx, ce("catalog", LayerFault))
	clk.Advance(time.Second)
	env.LogFailure(ctx, ce("billing", LayerConnect))

	var recs []map[string]any
	for line := range strings.Lines(buf.String()) {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	type want struct {
		service, layer, level string
		suppressed            float64
	}
	wants := []want{
		{"billing", "connect", "WARN", 0},
		{"billing", "timeout", "WARN", 0},
		{"catalog", "connect", "WARN", 0},
		{"catalog", "fault", "INFO", 0},
		{"billing", "connect", "WARN", 4},
	}
	if len(recs) != len(wants) {
		t.Fatalf("%d records, want %d:\n%s", len(recs), len(wants), buf.String())
	}
	for i, w := range wants {
		r := recs[i]
		if r["msg"] != "call failed" || r["service"] != w.service || r["layer"] != w.layer || r["level"] != w.level || r["suppressed"] != w.suppressed {
			t.Errorf("record %d: %v, want %+v", i, r, w)
		}
		if r["route"] != "charge" || r["subset"] != "v2" || r["endpoint"] != "10.0.0.1:80" || r["attempts"] != 3.0 ||
			r["policy_version"] != "v9" || r["err"] != "connection refused" {
			t.Errorf("record %d: fields %v", i, r)
		}
	}
}

// TestLogFailureOff: a logger that drops Warn costs the failure path no
// allocation; a nil FailureLog logs every failure.
func TestLogFailureOff(t *testing.T) {
	clk := clocktest.NewFake(time.Unix(1000, 0))
	ce := &CallError{Layer: LayerConnect, Service: "billing", Err: errors.New("refused")}
	quiet := &Env{Clock: clk, Log: slog.New(slog.NewJSONHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelError})), Failures: &FailureLog{}}
	if n := testing.AllocsPerRun(100, func() { quiet.LogFailure(context.Background(), ce) }); n != 0 {
		t.Errorf("LogFailure under a logger that drops Warn allocates %v times", n)
	}
	var buf bytes.Buffer
	every := &Env{Clock: clk, Log: slog.New(slog.NewJSONHandler(&buf, nil))}
	for range 3 {
		every.LogFailure(context.Background(), ce)
	}
	if n := strings.Count(buf.String(), "call failed"); n != 3 {
		t.Errorf("%d records without a FailureLog, want 3", n)
	}
}
