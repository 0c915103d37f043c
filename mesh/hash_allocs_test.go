package mesh

import (
	"io"
	"net/http"
	"testing"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// A call of a ring_hash or maglev route, hashed by header and cookie,
// allocates what a round-robin call does (TestNoIOAllocations, no
// timeout): the call alone.
func TestHashedCallAllocations(t *testing.T) {
	const answer, want = 2, 1
	for _, lb := range []string{"ring_hash", "maglev"} {
		t.Run(lb, func(t *testing.T) {
			m := newTestMesh(t, `
defaults: {tls: disable}
services:
  billing:
    endpoints: [{address: "127.0.0.1:9"}, {address: "127.0.0.1:10"}, {address: "127.0.0.1:11"}]
    load_balancer: {policy: `+lb+`, hash: [{cookie: session}, {header: x-user}, {query_parameter: u}]}
`, WithMeterProvider(metricnoop.NewMeterProvider()), WithTracerProvider(tracenoop.NewTracerProvider()))
			rt := m.RoundTripper(instant{})
			req, err := http.NewRequest(http.MethodGet, "http://billing/charge?a=1&u=7", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-User", "alice")
			req.Header.Set("Cookie", "theme=dark; session=abc")
			call := func() {
				resp, err := rt.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
			call()
			if got := testing.AllocsPerRun(200, call) - answer; got != want {
				t.Errorf("a hashed call allocates %v times over its answer, want %d", got, want)
			}
		})
	}
}
