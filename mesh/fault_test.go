package mesh

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/inmesh/inmesh/internal/meshtest"
)

// closeCounter is a request body that counts its closes.
type closeCounter struct {
	io.Reader
	closed int
}

func (c *closeCounter) Close() error { c.closed++; return nil }

// TestFaultAbortClosesTheBody: a request the fault block aborts is never
// sent, and the RoundTripper closes its body, as for any request it fails
// before an attempt.
func TestFaultAbortClosesTheBody(t *testing.T) {
	b := meshtest.NewBackend(t, "billing", nil)
	m := newTestMesh(t, fmt.Sprintf(`
defaults: {tls: disable} # plain test backends
services:
  billing:
    endpoints: [{address: %s}]
    fault: {abort: {percent: 100, http_status: 502}}
`, b.Addr()))
	body := &closeCounter{Reader: strings.NewReader("amount=42")}
	req, err := http.NewRequest(http.MethodPost, "http://billing/charge", body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := m.RoundTripper(nil).RoundTrip(req)
	ce := meshtest.ErrorAs[*CallError](t, err)
	if resp != nil || ce.Layer != LayerFault || ce.Attempts != 0 || ce.Err.Error() != "fault injected: abort with HTTP 502" {
		t.Fatalf("response %v, error %v; want the abort", resp, err)
	}
	if body.closed != 1 || b.Hits.Load() != 0 {
		t.Fatalf("body closed %d times, backend saw %d calls; want 1 and 0", body.closed, b.Hits.Load())
	}
}
