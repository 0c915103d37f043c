package mesh

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// conditionsPolicy is billing with a table of 10 routes with path_regex,
// header and query conditions, the call matching the last; with actions
// (prefix_rewrite, request_headers) on it when actions is set.
func conditionsPolicy(actions bool) string {
	var b strings.Builder
	b.WriteString("defaults: {tls: disable}\nservices:\n  billing:\n    endpoints: [{address: 127.0.0.1:9}]\n    routes:\n")
	for i := range 9 {
		fmt.Fprintf(&b, "      - {name: r%d, match: {path_regex: \"/api/v[0-9]+/.*\", header: [{name: x-env, prefix: st}, {name: x-tenant, regex: \"t[0-9]+\"}, {name: x-beta, invert: true}], query_param: [{name: debug, exact: \"%d\"}]}}\n", i, i+2)
	}
	b.WriteString("      - name: last\n        match: {path_prefix: /api/, header: [{name: x-env, prefix: st}], query_param: [{name: debug, exact: \"1\"}]}\n")
	if actions {
		b.WriteString("        prefix_rewrite: /internal/\n        request_headers: {add: {x-tag: a}, set: {x-env: prod}, remove: [x-debug]}\n")
	}
	return b.String()
}

// BenchmarkRouteConditions is a call through a table of 10 routes with
// regex, header and query conditions, the last matching, without and
// with route actions, against a RoundTripper that answers at once.
func BenchmarkRouteConditions(b *testing.B) {
	for _, actions := range []bool{false, true} {
		b.Run(fmt.Sprint("actions=", actions), func(b *testing.B) {
			m := newTestMesh(b, conditionsPolicy(actions), WithMeterProvider(metricnoop.NewMeterProvider()), WithTracerProvider(tracenoop.NewTracerProvider()))
			rt := m.RoundTripper(instant{})
			roundTripsWith(b, rt, "http://billing/api/v2/charge?debug=1", "X-Env", "staging", "X-Tenant", "t42")
		})
	}
}

// TestRouteConditionsAllocations pins what a call costs through the table
// of BenchmarkRouteConditions: the matching allocates nothing (the call
// alone, as TestNoIOAllocations), and the actions add the header copy
// (its map, two) and the rewritten path (one).
func TestRouteConditionsAllocations(t *testing.T) {
	if raceEnabled {
		// The race detector drops what sync.Pool holds at random, and
		// regexp keeps its matchers there.
		t.Skip("allocation counts vary under the race detector")
	}
	const answer = 2 // instant's response and header
	for _, tc := range []struct {
		actions bool
		want    float64
	}{{false, 1}, {true, 4}} {
		m := newTestMesh(t, conditionsPolicy(tc.actions), WithMeterProvider(metricnoop.NewMeterProvider()), WithTracerProvider(tracenoop.NewTracerProvider()))
		rt := m.RoundTripper(instant{})
		call := roundTrip(t, rt, "http://billing/api/v2/charge?debug=1", "X-Env", "staging", "X-Tenant", "t42")
		call()
		if got := testing.AllocsPerRun(200, call) - answer; got != tc.want {
			t.Errorf("actions %v: a call allocates %v times over its answer, want %v", tc.actions, got, tc.want)
		}
	}
}

// roundTrip returns a function that sends a GET of url with the headers
// hdr (name, value pairs) through rt and drains the answer.
func roundTrip(t testing.TB, rt http.RoundTripper, url string, hdr ...string) func() {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	return func() {
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
}

func roundTripsWith(b *testing.B, rt http.RoundTripper, url string, hdr ...string) {
	call := roundTrip(b, rt, url, hdr...)
	b.ReportAllocs()
	for b.Loop() {
		call()
	}
}
