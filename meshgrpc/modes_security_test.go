package meshgrpc

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/internal/meshlink"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/policy"
)

// Identity, authorization and egress, in every protocol.

// authzPolicy is meshtest.FleetPolicy for an HTTP fleet: billing lets
// enrollment POST /charge, admin do anything, and nobody else.
func authzPolicy(addrs ...string) string { return meshtest.FleetPolicy(addrs[0]) }

// TestAuthorization: billing's mesh serves the callers its rules allow;
// a denied caller gets a CallError of layer authz naming it, and never
// reaches the handler.
func TestAuthorization(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		// HTTP: authzPolicy, one backend. gRPC: grpcCanaryPolicy (enrollment
		// may call the health service), v1 and v2.
		var f *fleet
		if md == modeGRPC {
			f = startFleetWith(t, md, fleetConfig{policyFor: grpcCanaryPolicy, names: []string{"v1", "v2"}}, alwaysAnswer(ok), alwaysAnswer(ok))
		} else {
			f = startFleetWith(t, md, fleetConfig{policyFor: authzPolicy, names: []string{"billing"}}, alwaysAnswer(ok))
		}
		hits := func() (n int64) {
			for _, h := range f.Hits {
				n += h()
			}
			return n
		}
		// charge is HTTP's POST /charge, gRPC's Check.
		charge := func(g *fleet) result {
			if md == modeGRPC {
				return g.call(context.Background())
			}
			return g.request(context.Background(), http.MethodPost, "http://billing/charge", "x")
		}
		if r := charge(f); !r.ok() || (md != modeGRPC && r.from != "billing") {
			t.Fatalf("enrollment: %v", r)
		}
		before := hits()

		denied := f.as(t, "progress")
		r := charge(denied)
		ce := r.callError()
		if ce == nil || ce.Layer != mesh.LayerAuthz || ce.Service != "billing" || !slices.Contains(f.addrs, ce.Endpoint) || ce.Attempts != 1 {
			t.Fatalf("CallError %+v (%v)", ce, r)
		}
		if !strings.Contains(ce.Err.Error(), `denied caller "progress"`) {
			t.Fatalf("cause %q does not name the caller", ce.Err)
		}
		if got := hits(); got != before {
			t.Fatalf("a denied call reached the handler (%d -> %d)", before, got)
		}

		if md != modeGRPC {
			// Methods and paths.
			for _, tc := range []struct {
				caller, method, path string
				served               bool
			}{
				{"enrollment", http.MethodGet, "/charge", false},
				{"enrollment", http.MethodPost, "/refund", false},
				{"admin", http.MethodDelete, "/anything", true},
			} {
				before := hits()
				r := f.as(t, tc.caller).request(context.Background(), tc.method, "http://billing"+tc.path, "x")
				if tc.served {
					if !r.ok() || r.from != "billing" {
						t.Fatalf("%s %s %s: %v", tc.caller, tc.method, tc.path, r)
					}
					continue
				}
				if ce := r.callError(); ce == nil || ce.Layer != mesh.LayerAuthz || ce.Service != "billing" || ce.Endpoint != f.addrs[0] {
					t.Fatalf("%s %s %s: CallError %+v (%v)", tc.caller, tc.method, tc.path, ce, r)
				}
				if hits() != before {
					t.Fatalf("%s %s %s: a denied caller reached the handler", tc.caller, tc.method, tc.path)
				}
			}
			return
		}

		if grpcstatus.Code(r.err) != codes.PermissionDenied || ce.Route != "check" {
			t.Fatalf("progress: code %v, route %q (%v), want PermissionDenied on route check", grpcstatus.Code(r.err), ce.Route, r.err)
		}
		// A stream is denied the same way (routed by the metadata route).
		w, serr := denied.grpc.Watch(metadata.AppendToOutgoingContext(context.Background(), "x-canary", "true"), &healthpb.HealthCheckRequest{})
		if serr == nil {
			_, serr = w.Recv()
		}
		if ce := FromStatus(serr); ce == nil || ce.Layer != mesh.LayerAuthz || grpcstatus.Code(serr) != codes.PermissionDenied {
			t.Fatalf("denied stream: %v", serr)
		}
		if got := hits(); got != before {
			t.Fatalf("a denied stream reached the handler (%d -> %d)", before, got)
		}
		var ce2 *mesh.CallError
		if !errors.As(r.err, &ce2) || ce2 != ce {
			t.Fatal("the CallError is not reachable with errors.As")
		}

		// The denial as a caller without a mesh receives it: still marked.
		conn, err := grpc.NewClient("passthrough:///"+f.addrs[0],
			grpc.WithTransportCredentials(credentials.NewTLS(meshlink.Of(denied.client).ClientTLS("billing"))))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
		if ce := FromStatus(err); ce == nil || ce.Layer != mesh.LayerAuthz || ce.Service != "billing" || ce.PolicyVersion != "grpc-canary-1" ||
			!strings.Contains(ce.Err.Error(), `denied caller "progress"`) {
			t.Fatalf("the raw denial: %v (FromStatus %+v)", err, ce)
		}
	})
}

// TestMisroutedServerIsRefused: catalog's server sits where the policy
// says billing is; the call fails at layer tls, naming the wrong peer.
func TestMisroutedServerIsRefused(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		f := startFleetWith(t, md, fleetConfig{server: "catalog", policyFor: func(addrs ...string) string {
			return billingPolicy("")(addrs...) + "  catalog: {}\n"
		}}, alwaysAnswer(ok))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r := f.call(ctx)
		if ce := r.callError(); ce == nil || ce.Layer != mesh.LayerTLS || !strings.Contains(r.err.Error(), "catalog") {
			t.Fatalf("want layer tls naming the wrong peer, got %v", r)
		}
		if f.Hits[0]() != 0 {
			t.Fatal("the misrouted call reached the wrong service")
		}
	}, allModes...)
}

// hostSpellings are ways to write billing's host that DNS takes for the
// same name; each must reach billing through the mesh, never through DNS.
var hostSpellings = []string{"billing", "Billing", "BILLING", "billing.", "Billing.", "BILLING.:80", "billing:8080", "billing.:443"}

// TestHostSpellingsStayInTheMesh calls billing under every spelling of its
// host (gRPC: of its target). Every call must reach billing's server over
// mTLS, with the caller's mesh identity: outside the mesh, the host would
// go to DNS in plaintext (and fail, or reach something else).
func TestHostSpellingsStayInTheMesh(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		f := startFleetWith(t, md, fleetConfig{policyFor: billingPolicy(""), names: []string{"billing"}}, alwaysAnswer(ok))
		calls := 0
		for _, host := range hostSpellings {
			targets := []string{"http://" + host + "/x"}
			if md == modeGRPC {
				targets = []string{"mesh:///" + host, "mesh://authority/" + host}
			}
			for _, target := range targets {
				calls++
				before := f.Hits[0]()
				if r := f.callTarget(context.Background(), target); !r.ok() || r.from != "billing" {
					t.Errorf("%s: %v", target, r)
				}
				if f.Hits[0]() != before+1 {
					t.Errorf("%s: the backend saw %d calls, want 1", target, f.Hits[0]()-before)
				}
			}
		}
		if callers := f.seen[0].callersSeen(); callers["enrollment <nil>"] != calls || len(callers) != 1 {
			t.Errorf("billing saw callers %v, want enrollment (verified over mTLS) %d times", callers, calls)
		}
		f.checkProto(t, 0)
	}, allModes...)
}

// outside is a plain server outside the mesh (HTTP, or gRPC's health
// service) that counts the connections it accepts and the calls it serves.
type outside struct {
	addr        string
	conns, Hits func() int64
}

func newOutside(t *testing.T, md mode) outside {
	t.Helper()
	if md == modeGRPC {
		ln, b := plainHealth(t)
		return outside{addr: b.Addr(), conns: ln.Accepted.Load, Hits: b.Hits.Load}
	}
	var conns, hits atomic.Int64
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, "outside")
	}))
	s.Config.ConnState = func(_ net.Conn, cs http.ConnState) {
		if cs == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return outside{addr: s.Listener.Addr().String(), conns: conns.Load, Hits: hits.Load}
}

// TestEgressDeny: under egress: deny, a destination that is no service of
// the policy fails at layer egress and is never dialed, whichever way it
// is called; a service of the policy is still called. Under the default
// (allow) the same destination is reached.
func TestEgressDeny(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		out := newOutside(t, md)
		f := startFleetWith(t, md, fleetConfig{names: []string{"billing"}, policyFor: func(addrs ...string) string {
			return "egress: deny\n" + policyFor(md, "")(addrs...)
		}}, alwaysAnswer(ok))
		type way struct {
			name string
			call func(target string) result
		}
		var ways []way
		var targets []string
		billing := "http://billing/x"
		if md == modeGRPC {
			// A mesh target that names no service, targets of other schemes
			// dialed with the mesh's options.
			ways = []way{{"DialOptions", func(target string) result { return f.callTarget(context.Background(), target) }}}
			targets = []string{"mesh:///unknown", out.addr, "passthrough:///" + out.addr, "dns:///" + out.addr}
			billing = "mesh:///billing"
		} else {
			own := &http.Transport{}
			defer own.CloseIdleConnections()
			rt := &http.Client{Transport: f.client.RoundTripper(own)}
			ways = []way{
				{"HTTPClient", func(target string) result { return f.callTarget(context.Background(), target) }},
				{"RoundTripper(own)", func(target string) result {
					return httpResult(md, rt, meshtest.MustRequest(t, http.MethodGet, target))
				}},
			}
			port := out.addr[strings.LastIndexByte(out.addr, ':')+1:]
			targets = []string{"http://" + out.addr + "/x", "http://localhost:" + port + "/x", "http://Billing.example/x"}
		}
		for _, w := range ways {
			for _, target := range targets {
				r := w.call(target)
				if r.err == nil {
					t.Fatalf("%s %s: served (%v) under egress: deny", w.name, target, r)
				}
				ce := r.callError()
				// HTTP names the host as the service; a gRPC target of another
				// scheme names none.
				if ce == nil || ce.Layer != mesh.LayerEgress || (md != modeGRPC && ce.Service == "") || !strings.Contains(ce.Err.Error(), "egress is deny") {
					t.Errorf("%s %s: CallError %+v (%v)", w.name, target, ce, r)
				}
				if md == modeGRPC && grpcstatus.Code(r.err) != codes.PermissionDenied {
					t.Errorf("%s %s: code %v", w.name, target, grpcstatus.Code(r.err))
				}
			}
			if r := w.call(billing); !r.ok() || r.from != "billing" {
				t.Errorf("%s: billing under egress: deny: %v", w.name, r)
			}
		}
		if out.conns() != 0 || out.Hits() != 0 {
			t.Fatalf("the outside server saw %d connections and %d calls under egress: deny", out.conns(), out.Hits())
		}

		// Under allow, the outside destination is the application's business.
		allow := newTestMesh(t, "egress: allow\n"+policyFor(md, "")(f.addrs...), mesh.WithService("enrollment"))
		if md == modeGRPC {
			conn, err := grpc.NewClient(out.addr, append(DialOptions(allow), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := check(context.Background(), healthpb.NewHealthClient(conn)); err != nil {
				t.Fatalf("egress: allow: %v", err)
			}
		} else {
			defer http.DefaultTransport.(*http.Transport).CloseIdleConnections()
			if r := f.withClient(t, allow).callTarget(context.Background(), "http://"+out.addr+"/x"); r.err != nil || r.body != "outside" {
				t.Fatalf("egress: allow: %v", r)
			}
		}
		if out.Hits() != 1 {
			t.Fatalf("outside hits %d under egress: allow, want 1", out.Hits())
		}

		// Explain says it.
		req := meshtest.MustRequest(t, http.MethodGet, "http://"+out.addr+"/x")
		if ex, err := f.client.Explain(req); err == nil || ex.Layer != mesh.LayerEgress || ex.Egress != policy.EgressDeny || ex.Passthrough {
			t.Errorf("Explain under deny: %+v %v", ex, err)
		}
		if ex, err := allow.Explain(req); err != nil || ex.Egress != policy.EgressAllow || !ex.Passthrough {
			t.Errorf("Explain under allow: %+v %v", ex, err)
		}
	})
}

// TestAuthzMarkerBelievedOnlyFromVerifiedPeer: an answer marked as the
// denial of a mesh is the destination mesh's denial only when the
// destination proved its identity over mTLS, its text sanitized; from a
// tls: disable destination it is the application's own answer, returned
// unchanged.
func TestAuthzMarkerBelievedOnlyFromVerifiedPeer(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		t.Run("plaintext", func(t *testing.T) {
			if md == modeHTTP2 {
				t.Skip("HTTP/2 is over mTLS only")
			}
			f := startFleetWith(t, md, fleetConfig{policyFor: byMode(md, map[mode]func(...string) string{
				modeHTTP1: httpPolicy(""), modeGRPC: billingPolicy("    tls: disable\n"),
			})}, alwaysAnswer(forge))
			r := f.call(context.Background())
			if ce := r.callError(); ce != nil {
				t.Fatalf("a mesh marker from a plaintext peer was believed: %+v", ce)
			}
			if md != modeGRPC {
				if r.err != nil {
					t.Fatalf("a marked 403 from a tls: disable upstream became an error: %v", r.err)
				}
				if r.status != http.StatusForbidden || r.body != "mesh: authz: "+meshtest.HostileText+"\n" {
					t.Fatalf("got %d with a body of %d bytes, want the upstream's 403 and its body intact", r.status, len(r.body))
				}
				return
			}
			want := forgedStatus()
			if r.err == nil || r.err.Error() != want.Err().Error() {
				t.Fatalf("error %q, want %q", r.err, want.Err())
			}
			checkSameStatus(t, grpcstatus.Convert(r.err), want)
			var ce *mesh.CallError
			if errors.As(r.err, &ce) {
				t.Fatalf("errors.As found a CallError: %+v", ce)
			}
		})
		t.Run("mTLS", func(t *testing.T) {
			f := startFleetWith(t, md, fleetConfig{policyFor: billingPolicy("")}, alwaysAnswer(forge))
			r := f.call(context.Background())
			ce := r.callError()
			if ce == nil || ce.Layer != mesh.LayerAuthz || ce.Service != "billing" {
				t.Fatalf("the denial of a verified peer: %v (CallError %+v)", r, ce)
			}
			meshtest.CheckPeerText(t, ce.Err.Error(), core.MaxPeerText)
			if !strings.HasPrefix(ce.Err.Error(), "no level=INFO") {
				t.Fatalf("the reason lost its text: %q", ce.Err)
			}
			if strings.ContainsAny(r.err.Error(), "\n\r\x1b\u202e") {
				t.Fatalf("control characters reach the caller's error: %q", r.err)
			}
			f.checkProto(t, 0)
			if md == modeGRPC {
				if grpcstatus.Code(r.err) != codes.PermissionDenied {
					t.Fatalf("code %v", grpcstatus.Code(r.err))
				}
				// The status rebuilt across the wire is sanitized too.
				raw := FromStatus(forgedStatus().Err())
				meshtest.CheckPeerText(t, raw.Err.Error(), core.MaxPeerText)
				meshtest.CheckPeerText(t, raw.PolicyVersion, core.MaxPeerText)
			}
		})
	}, allModes...)
}
