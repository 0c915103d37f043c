package mesh

import (
	"io"
	"net/http"
	"testing"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// twoEndpoints is billing on two plain endpoints with settings (YAML lines
// of billing's, indented by four spaces).
func twoEndpoints(settings string) string {
	return "\ndefaults: {tls: disable}\nservices:\n  billing:\n    endpoints: [{address: 127.0.0.1:9}, {address: 127.0.0.1:10}]\n" + settings
}

// TestHedgeUnsentAllocations pins what a hedged route costs a call whose
// answer comes before the hedge delay, telemetry off, against a
// RoundTripper that answers at once, over the same call unhedged: the
// timer (three: time.NewTimer's timer and channel, and the timer), the
// channel, the first attempt's flight (held apart from the call, so that an
// unhedged call is the smaller), the first attempt's goroutine (its closure), its own context
// and the body that ends it with the answer: under a deadline the
// context is a lazy one held in the call, whose Cancel is bound (one);
// without, a context.WithCancel (two, with its Done channel).
func TestHedgeUnsentAllocations(t *testing.T) {
	const answer = 2 // instant's response and header
	for _, tt := range []struct {
		name, timeout string
		extra         float64
	}{
		{"timeout", "    timeout: 2s\n", 8},
		{"no timeout", "", 9},
	} {
		t.Run(tt.name, func(t *testing.T) {
			measure := func(pol string) float64 {
				m := newTestMesh(t, pol, WithMeterProvider(metricnoop.NewMeterProvider()), WithTracerProvider(tracenoop.NewTracerProvider()))
				rt := m.RoundTripper(instant{})
				call := chargeCall(t, rt)
				call() // the first call to a destination starts watching it
				return testing.AllocsPerRun(200, call) - answer
			}
			plain := measure(twoEndpoints(tt.timeout))
			hedged := measure(twoEndpoints(tt.timeout + "    hedge: {delay: 1h}\n"))
			if hedged-plain != tt.extra {
				t.Errorf("a hedged call allocates %v times, %v more than unhedged; want %v more (lower the pin if fewer)", hedged, hedged-plain, tt.extra)
			}
		})
	}
}

func BenchmarkHedgeUnsent(b *testing.B) {
	for _, tc := range []struct{ name, settings string }{
		{"unhedged", "    timeout: 2s\n"},
		{"hedged", "    timeout: 2s\n    hedge: {delay: 1h}\n"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			m := newTestMesh(b, twoEndpoints(tc.settings), WithMeterProvider(metricnoop.NewMeterProvider()), WithTracerProvider(tracenoop.NewTracerProvider()))
			rt := m.RoundTripper(instant{})
			req, err := http.NewRequest(http.MethodGet, "http://billing/charge", nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				resp, err := rt.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		})
	}
}
