package meshgrpc

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/internal/meshlink"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/telemetry"
)

// The authorization's deny list and mode audit, in every protocol.

// denyPolicy lets enrollment call billing anything, but denies every
// caller /admin (HTTP) and the health service's Check (gRPC), under mode
// (enforce or audit; "" leaves it out).
func denyPolicy(mode string) func(addrs ...string) string {
	settings := `    authorization:
      default: deny
      rules:
        - {from: [enrollment]}
      deny:
        - {from: ["*"], paths: [/admin, /grpc.health.v1.Health/Check]}
`
	if mode != "" {
		settings += "      mode: " + mode + "\n"
	}
	return versioned("deny-1", billingPolicy(settings))
}

// adminCall is the call deny[0] denies: HTTP GET /admin, gRPC Check.
func (f *fleet) adminCall(ctx context.Context) result {
	if f.md == modeGRPC {
		return f.call(ctx)
	}
	return f.request(ctx, http.MethodGet, "http://billing/admin", "")
}

// otherCall is a call rules[0] allows and no deny rule matches: HTTP GET
// /x, gRPC Watch (its first answer).
func (f *fleet) otherCall(ctx context.Context) result {
	if f.md == modeGRPC {
		w, err := f.grpc.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			_, err = w.Recv()
		}
		return result{md: f.md, err: err}
	}
	return f.request(ctx, http.MethodGet, "http://billing/x", "")
}

// authzCounts reads inmesh.authz.decisions from reader, by
// "<caller>/<decision>/<mode>/<rule>".
func authzCounts(t *testing.T, reader *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	return meshtest.Int64Sums(t, reader, telemetry.MetricAuthzDecisions, func(a attribute.Set) string {
		var key []string
		for _, k := range []string{telemetry.AttrCaller, telemetry.AttrAuthzDecision, telemetry.AttrAuthzMode, telemetry.AttrAuthzRule} {
			key = append(key, meshtest.Attr(a, k))
		}
		return strings.Join(key, "/")
	})
}

// logRecords keeps the records a mesh logs at Warn and above.
type logRecords struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecords) Enabled(_ context.Context, level slog.Level) bool {
	return level >= slog.LevelWarn
}

func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Clone())
	return nil
}

func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecords) WithGroup(string) slog.Handler      { return l }

// audits returns the attributes of the audit lines logged, one map each.
func (l *logRecords) audits() []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]string
	for _, r := range l.recs {
		if !strings.HasPrefix(r.Message, "authz audit") {
			continue
		}
		attrs := map[string]string{"level": r.Level.String()}
		r.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.String()
			return true
		})
		out = append(out, attrs)
	}
	return out
}

// TestAuthorizationDenyList: a deny rule denies a caller the rules allow,
// as a marked denial (HTTP 403 with Inmesh-Error: authz, gRPC
// PermissionDenied), a CallError of layer authz at the caller, without
// reaching the application; the calls no deny rule matches are served.
func TestAuthorizationDenyList(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		reader := sdkmetric.NewManualReader()
		f := startFleetWith(t, md, fleetConfig{policyFor: denyPolicy(""), names: []string{"billing"},
			serverOpts: []mesh.Option{mesh.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))}},
			alwaysAnswer(ok))
		if r := f.otherCall(context.Background()); !r.ok() {
			t.Fatalf("a call the rules allow: %v", r)
		}
		before := f.Hits[0]()
		r := f.adminCall(context.Background())
		ce := r.callError()
		if ce == nil || ce.Layer != mesh.LayerAuthz || ce.Service != "billing" || ce.Endpoint != f.addrs[0] || ce.PolicyVersion != "deny-1" {
			t.Fatalf("CallError %+v (%v), want a denial at layer authz", ce, r)
		}
		if !strings.Contains(ce.Err.Error(), `denied caller "enrollment": deny 0`) {
			t.Fatalf("cause %q does not name the caller and the deny rule", ce.Err)
		}
		if md == modeGRPC && grpcstatus.Code(r.err) != codes.PermissionDenied {
			t.Fatalf("code %v, want PermissionDenied", grpcstatus.Code(r.err))
		}
		if f.Hits[0]() != before {
			t.Fatal("a denied call reached the application")
		}
		// Any caller: progress, whom no rule names, is denied by deny[0] too.
		if ce := f.as(t, "progress").adminCall(context.Background()).callError(); ce == nil || ce.Layer != mesh.LayerAuthz ||
			!strings.Contains(ce.Err.Error(), "deny 0") {
			t.Fatalf("progress: CallError %+v, want denied by deny 0", ce)
		}
		got := authzCounts(t, reader)
		if got["enrollment/allow/enforce/rules[0]"] != 1 || got["enrollment/deny/enforce/deny[0]"] != 1 || got["progress/deny/enforce/deny[0]"] != 1 {
			t.Fatalf("inmesh.authz.decisions %v", got)
		}
		f.checkProto(t, 0)
	}, allModes...)
}

// TestAuthorizationAudit: under mode audit, the call deny[0] would deny
// reaches the application; the decision is counted as a deny in mode
// audit, and logged at Warn once per caller and rule until the interval
// passes, whatever the number of calls.
func TestAuthorizationAudit(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		reader := sdkmetric.NewManualReader()
		logs := &logRecords{}
		clk := clocktest.NewFake(time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC))
		f := startFleetWith(t, md, fleetConfig{policyFor: denyPolicy("audit"), names: []string{"billing"},
			serverOpts: []mesh.Option{
				mesh.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))),
				mesh.WithLogger(slog.New(logs)),
				withClock(clk),
			}},
			alwaysAnswer(ok))
		const calls = 20
		for i := range calls {
			before := f.Hits[0]()
			if r := f.adminCall(context.Background()); !r.ok() || (md != modeGRPC && r.from != "billing") {
				t.Fatalf("call %d: %v, want it served under mode audit", i, r)
			}
			if f.Hits[0]() != before+1 {
				t.Fatalf("call %d did not reach the application", i)
			}
		}
		if r := f.otherCall(context.Background()); !r.ok() {
			t.Fatalf("a call the rules allow: %v", r)
		}
		got := authzCounts(t, reader)
		if got["enrollment/deny/audit/deny[0]"] != calls || got["enrollment/allow/audit/rules[0]"] != 1 || got["enrollment/deny/enforce/deny[0]"] != 0 {
			t.Fatalf("inmesh.authz.decisions %v, want %d denials in mode audit and 1 allow", got, calls)
		}
		path := map[mode]string{modeHTTP1: "/admin", modeGRPC: checkMethod}
		want := map[string]string{"level": "WARN", "service": "billing", "caller": "enrollment", "method": "POST",
			"path": byMode(md, path), "rule": "deny[0]", "reason": "deny 0", "policy_version": "deny-1", "suppressed": "0"}
		if md != modeGRPC {
			want["method"] = "GET"
		}
		lines := logs.audits()
		if len(lines) != 1 || fmt.Sprint(lines[0]) != fmt.Sprint(want) {
			t.Fatalf("audit lines %v, want one: %v", lines, want)
		}
		// Once the interval has passed, the next would-be denial is logged
		// again, saying how many lines were left out.
		clk.Advance(10 * time.Second)
		if r := f.adminCall(context.Background()); !r.ok() {
			t.Fatalf("after the interval: %v", r)
		}
		lines = logs.audits()
		if len(lines) != 2 || lines[1]["suppressed"] != fmt.Sprint(calls-1) {
			t.Fatalf("audit lines %v, want a second one with suppressed %d", lines, calls-1)
		}
		// Another caller has its own line.
		if r := f.as(t, "progress").adminCall(context.Background()); !r.ok() {
			t.Fatalf("progress: %v", r)
		}
		if lines = logs.audits(); len(lines) != 3 || lines[2]["caller"] != "progress" {
			t.Fatalf("audit lines %v, want a third one for progress", lines)
		}
	}, allModes...)
}

// TestAuthorizationDenyRespellingsOverGRPC sends full methods that name
// the denied Check in other spellings to a gRPC server that serves every
// method (an unknown-service handler, as a gRPC proxy has) behind
// billing's mesh: none gets through; methods are case-sensitive, so
// "/grpc.health.v1.Health/CHECK" is another method, which deny[0] does
// not cover.
func TestAuthorizationDenyRespellingsOverGRPC(t *testing.T) {
	pol := denyPolicy("")("127.0.0.1:1")
	billing := newTestMesh(t, pol, mesh.WithService("billing"))
	enrollment := newTestMesh(t, pol, mesh.WithService("enrollment"))
	var served atomic.Int64
	srv := grpc.NewServer(append(ServerOptions(billing), grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		var req healthpb.HealthCheckRequest
		if err := ss.RecvMsg(&req); err != nil {
			return err
		}
		served.Add(1)
		return ss.SendMsg(&healthpb.HealthCheckResponse{})
	}))...)
	ln := listenLoopback(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	conn, err := grpc.NewClient("passthrough:///"+ln.Addr().String(),
		grpc.WithTransportCredentials(credentials.NewTLS(meshlink.Of(enrollment).ClientTLS("billing"))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, tc := range []struct {
		name, method string
		served       bool
		malformed    bool // grpc-go refuses it before any interceptor
	}{
		{"another method", "/grpc.health.v1.Health/Watch", true, false},
		{"another service", "/pkg.Admin/Check", true, false},
		{"the denied method", checkMethod, false, false},
		{"escaped letter", "/grpc.health.v1.Health/%43heck", false, false},
		{"double slash", "//grpc.health.v1.Health/Check", false, false},
		{"dot-dot", "/x/../grpc.health.v1.Health/Check", false, false},
		{"escaped dot-dot", "/x/%2e%2e/grpc.health.v1.Health/Check", false, false},
		{"dot segment", "/./grpc.health.v1.Health/Check", false, false},
		{"escaped slash", "/grpc.health.v1.Health%2FCheck", false, true},
		{"escaped slash in the service", "/grpc.health%2Fv1.Health/Check", false, false},
		{"case is another method", "/grpc.health.v1.Health/CHECK", true, false},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		before := served.Load()
		err := conn.Invoke(ctx, tc.method, &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
		cancel()
		got := served.Load() != before
		switch {
		case tc.malformed && (got || grpcstatus.Code(err) != codes.Unimplemented):
			t.Errorf("%s: %s: %v (served %v), want grpc-go's refusal", tc.name, tc.method, err, got)
		case tc.malformed:
		case tc.served && (err != nil || !got):
			t.Errorf("%s: %s: %v, want it served", tc.name, tc.method, err)
		case !tc.served && (got || grpcstatus.Code(err) != codes.PermissionDenied || FromStatus(err) == nil || FromStatus(err).Layer != mesh.LayerAuthz):
			t.Errorf("%s: %s: %v (served %v), want an authz denial", tc.name, tc.method, err, got)
		}
	}
}
