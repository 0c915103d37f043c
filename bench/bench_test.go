package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestRun runs every scenario once, briefly: the program builds, every row
// measures without error (HAProxy's may be skipped, with the reason), and
// everything it started is stopped.
func TestRun(t *testing.T) {
	cfg := config{rounds: 1, slice: 20 * time.Millisecond, warm: 5 * time.Millisecond,
		outage: 100 * time.Millisecond, recovery: 100 * time.Millisecond, load: 200 * time.Millisecond, destinations: 20}
	var out bytes.Buffer
	if err := run(cfg, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	t.Log("\n" + table)
	for _, line := range strings.Split(table, "\n") {
		if strings.Contains(line, "| error: ") {
			t.Errorf("row failed: %s", line)
		}
	}
	for _, want := range []string{
		"| bare http.Transport |", "| inmesh full chain, OTel SDK |",
		"| inmesh mTLS, meshed server, telemetry off (vs bare mutual TLS 1.3) |",
		"| HAProxy, two hops |", "| inmesh, mTLS, OTel SDK (vs bare grpc-go, mutual TLS 1.3) |", "| otelhttp, OTel SDK |",
		"| naive retries (3 tries at once) |", "| inmesh, retry with budget, breaker |", "| inmesh, retry with budget, rate breaker |", "| inmesh, the full chain each |",
		"| inmesh, abort 50% |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("no row %q", want)
		}
	}
}
