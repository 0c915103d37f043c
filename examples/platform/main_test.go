package main

import (
	"bytes"
	"context"
	"errors"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/meshgrpc"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

// TestDemo runs the demo on the embedded policy and checks the story it
// tells: the canary split, retries absorbing the flaky catalog, and the
// breaker failing progress fast.
func TestDemo(t *testing.T) {
	defer http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	res, err := simulate(context.Background(), embeddedPolicy, 1500*time.Millisecond, 4)
	if err != nil {
		t.Fatal(err)
	}
	s := res.stats
	var out bytes.Buffer
	report(&out, s, res.hits)
	t.Logf("\n%s", out.String())

	billing := s.calls["billing"]
	if billing < 200 {
		t.Fatalf("only %d billing calls", billing)
	}
	if share := float64(s.versions["v2"]) / float64(billing); math.Abs(share-0.10) > 0.05 {
		t.Errorf("canary share %.3f, want about 0.10", share)
	}
	// Four attempts against a 25% failure rate leave 0.4% of calls failed.
	if ok := float64(s.ok["catalog"]) / float64(s.calls["catalog"]); ok < 0.98 {
		t.Errorf("catalog: %d of %d calls succeeded; retries should absorb the 503s", s.ok["catalog"], s.calls["catalog"])
	}
	if res.hits["catalog"] <= int64(s.calls["catalog"]) {
		t.Errorf("catalog saw %d requests for %d calls: no retry happened", res.hits["catalog"], s.calls["catalog"])
	}
	if s.layers["progress"]["breaker"] == 0 || res.hits["progress"] > 10 {
		t.Errorf("progress: %d breaker failures, %d requests reached it; the breaker should open after 5",
			s.layers["progress"]["breaker"], res.hits["progress"])
	}
	var ce *mesh.CallError
	if !errors.As(res.denied.err, &ce) || ce.Layer != mesh.LayerAuthz {
		t.Errorf("progress -> billing: %v, want a CallError of layer authz", res.denied.err)
	}
	// gRPC, from the same policy: every health check served through the
	// mesh, the intruder denied by grades' mesh, and grades' own NotFound
	// passed on untouched.
	if g := s.calls["grades"]; g < 50 || s.ok["grades"] != g || res.hits["grades"] != int64(g) {
		t.Errorf("grades: %d of %d gRPC calls SERVING, %d reached the server", s.ok["grades"], g, res.hits["grades"])
	}
	if ce := meshgrpc.FromStatus(res.rpcDenied); ce == nil || ce.Layer != mesh.LayerAuthz || grpcstatus.Code(res.rpcDenied) != codes.PermissionDenied {
		t.Errorf("progress -> grades: %v, want PermissionDenied of layer authz", res.rpcDenied)
	}
	if grpcstatus.Code(res.rpcUnknown) != codes.NotFound || meshgrpc.FromStatus(res.rpcUnknown) != nil {
		t.Errorf("unknown service: %v, want the application's NotFound", res.rpcUnknown)
	}
	if res.identity != "spiffe://mesh.local/svc/enrollment" {
		t.Errorf("enrollment's identity %q", res.identity)
	}
	// The overload phase: the adaptive limit keeps the saturated
	// recommendations at its capacity, shedding the excess in the caller
	// rather than sending it to be refused. Counts, not rates: how much
	// gets through depends on the machine.
	o := res.overload
	var phase bytes.Buffer
	o.report(&phase)
	t.Logf("%s", phase.String())
	if o.shed == 0 || o.ok == 0 || o.rejected*5 > o.ok || o.other != 0 {
		t.Errorf("overload: %d answered, %d shed, %d answered 503, %d other; want sheds, and 503s under a fifth of the answers", o.ok, o.shed, o.rejected, o.other)
	}
	if o.limit < 1 || o.limit > 2*recommendationCapacity {
		t.Errorf("overload: the limit learned is %d, want 1..%d for a backend of %d slots", o.limit, 2*recommendationCapacity, recommendationCapacity)
	}
	if !strings.Contains(out.String(), "failures by layer") {
		t.Errorf("report lacks the layer table:\n%s", out.String())
	}
}
