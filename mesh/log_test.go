package mesh

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/inmesh/inmesh/internal/meshtest"
)

// TestLogAttributes: every record of the mesh says once where it comes from
// (component, and this workload) and carries no repeated key: service, in
// a message about a destination, is that destination alone. No message
// repeats the component as a prefix.
func TestLogAttributes(t *testing.T) {
	var buf meshtest.LockedBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := newTestMesh(t, plainBilling("127.0.0.1:1", "    circuit_breaker: {consecutive_failures: 1}\n"), WithLogger(logger))
	if _, _, err := get(t, m, "http://billing/x"); err == nil {
		t.Fatal("a call to a closed port succeeded")
	}
	var sawBreaker bool
	for line := range strings.Lines(buf.String()) {
		keys := map[string]int{}
		dec := json.NewDecoder(strings.NewReader(line))
		if _, err := dec.Token(); err != nil { // {
			t.Fatalf("record %q: %v", line, err)
		}
		var rec struct{ msg, component, workload, service string }
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				t.Fatalf("record %q: %v", line, err)
			}
			key := tok.(string)
			keys[key]++
			var v any
			if err := dec.Decode(&v); err != nil {
				t.Fatalf("record %q: %v", line, err)
			}
			s, _ := v.(string)
			switch key {
			case "msg":
				rec.msg = s
			case "component":
				rec.component = s
			case "workload":
				rec.workload = s
			case "service":
				rec.service = s
			}
		}
		for k, n := range keys {
			if n > 1 {
				t.Errorf("record %q has key %s %d times", line, k, n)
			}
		}
		if rec.component != "inmesh" || rec.workload != "tester" {
			t.Errorf("record %q: component %q, workload %q; want inmesh, tester", line, rec.component, rec.workload)
		}
		if strings.HasPrefix(rec.msg, "inmesh:") || strings.HasPrefix(rec.msg, "mesh:") {
			t.Errorf("message %q repeats the component", rec.msg)
		}
		if rec.msg == "circuit breaker changed state" {
			sawBreaker = true
			if rec.service != "billing" {
				t.Errorf("breaker record %q: service %q, want the destination", line, rec.service)
			}
		}
	}
	if !sawBreaker {
		t.Errorf("no breaker record in %s", buf.String())
	}
}
