package mesh

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/inmesh/inmesh/internal/meshtest"
)

// TestAdminInBrowser: a real browser loads the admin page of a mesh that
// exports its metrics with the OTel Prometheus exporter, and finds the
// policy version and the breakers; /metrics answers in Prometheus text
// with the mesh's instruments.
func TestAdminInBrowser(t *testing.T) {
	bin := meshtest.Chromium(t)
	backend := meshtest.NewBackend(t, "billing", meshtest.Status(200))

	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })

	m := newTestMesh(t, fmt.Sprintf(`
version: browser-v3
defaults: {tls: disable}
services:
  billing:
    endpoints: [{address: %s}]
    circuit_breaker: {failure_rate: 0.5, window: 10s, min_calls: 20}
    concurrency: {max: 4}
    routes:
      - {name: charge, match: {path_prefix: /charge}, circuit_breaker: {consecutive_failures: 3}}
      - {name: rest}
`, backend.Addr()), WithMeterProvider(mp), WithMetricsHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	for _, path := range []string{"/charge", "/x"} {
		if code, _, err := get(t, m, "http://billing"+path); err != nil || code != 200 {
			t.Fatalf("GET %s: %d %v", path, code, err)
		}
	}
	srv := httptest.NewServer(http.StripPrefix("/debug/inmesh", m.AdminHandler()))
	t.Cleanup(srv.Close)

	dom := meshtest.DumpDOM(t, bin, srv.URL+"/debug/inmesh/")
	for _, want := range []string{
		`<dd id="policy-version" class="mono">browser-v3</dd>`,
		`<table id="breakers">`,
		`<td>billing</td><td>(the service's)</td><td class="state-closed">closed</td><td>failure_rate</td>`,
		`<td>billing</td><td>charge</td><td class="state-closed">closed</td><td>consecutive_failures</td>`,
		`<table id="concurrency">`,
		`<form method="get" action="explain">`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the DOM lacks %s", want)
		}
	}
	if t.Failed() {
		t.Fatalf("DOM:\n%s", dom)
	}

	// The browser submits the explain form as a person would: its GET.
	dom = meshtest.DumpDOM(t, bin, srv.URL+"/debug/inmesh/explain?format=html&url=http%3A%2F%2Fbilling%2Fcharge&method=GET&header=&header=&caller=")
	if !strings.Contains(dom, `"route": "charge"`) {
		t.Fatalf("explain page:\n%s", dom)
	}

	resp, err := http.Get(srv.URL + "/debug/inmesh/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %q\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if !strings.Contains(string(body), "\ninmesh_") || !strings.Contains(string(body), "# TYPE inmesh_") {
		t.Fatalf("/metrics has no inmesh_ metric:\n%s", body)
	}
}
