package mesh

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"unicode"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// hostileText is what a hostile or broken peer may send as the reason of a
// denial: line breaks that forge log lines, terminal escapes, a C1 control,
// DEL, a bidi override, a zero-width space, an invalid byte, and far more
// than a reason needs.
var hostileText = "no\nlevel=INFO msg=\"all good\"\r\n\x1b[2J\x1b]0;pwned\x07 \u0085\x7f\u202egnp.exe\u200b\xff " +
	strings.Repeat("é", 600)

// checkPeerText fails the test unless s is fit for logs: valid UTF-8,
// bounded, without control or format characters.
func checkPeerText(t testing.TB, s string) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Fatalf("not valid UTF-8: %q", s)
	}
	if len(s) > maxPeerText {
		t.Fatalf("%d bytes, want at most %d: %q", len(s), maxPeerText, s)
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029' {
			t.Fatalf("control or format character %U in %q", r, s)
		}
	}
}

func TestPeerText(t *testing.T) {
	long := strings.Repeat("é", 600)
	tests := []struct{ in, want string }{
		{"", ""},
		{"billing denied caller \"progress\": no rule", "billing denied caller \"progress\": no rule"},
		{"a\nb\r\tc", "a b  c"},
		{"\x1b[31mred\x1b[0m", " [31mred [0m"},
		{"c1\u0085 del\x7f", "c1  del "},
		{"bidi\u202eexe.txt zw\u200bsp\ufeff", "bidi exe.txt zw sp "},
		{"line\u2028para\u2029", "line para "},
		{"bad\xffbyte", "bad\ufffdbyte"},
		{"ünïcode ok", "ünïcode ok"},
		{strings.Repeat("a", maxPeerText), strings.Repeat("a", maxPeerText)},
		{strings.Repeat("a", maxPeerText+1), strings.Repeat("a", maxPeerText-3) + "..."},
		// 2-byte runes: the cut falls at a rune boundary.
		{long, long[:maxPeerText-4] + "..."},
	}
	for _, tc := range tests {
		got := peerText(tc.in)
		if got != tc.want {
			t.Errorf("peerText(%q)\n = %q\nwant %q", tc.in, got, tc.want)
		}
		checkPeerText(t, got)
	}
	checkPeerText(t, peerText(hostileText))
	if n := testing.AllocsPerRun(100, func() { _ = peerText("billing denied caller \"progress\"") }); n != 0 {
		t.Fatalf("clean text allocates %v times", n)
	}
}

// secureServer is a real HTTPS server on 127.0.0.1 with the TLS
// configuration of a mesh of service, serving h behind that mesh's Handler,
// over HTTP/2 when h2 is set. It counts the requests of each protocol
// version it serves.
type secureServer struct {
	*httptest.Server
	mesh   *Mesh
	protos [3]atomic.Int64 // by r.ProtoMajor
}

func (s *secureServer) addr() string { return strings.TrimPrefix(s.URL, "https://") }

func newSecureServer(t *testing.T, service string, policyFor func(addr string) string, h2 bool, h http.HandlerFunc) *secureServer {
	t.Helper()
	s := &secureServer{Server: httptest.NewUnstartedServer(nil)}
	s.mesh = newTestMesh(t, policyFor(s.Listener.Addr().String()), WithService(service))
	s.Config.Handler = s.mesh.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor < len(s.protos) {
			s.protos[r.ProtoMajor].Add(1)
		}
		h(w, r)
	}))
	s.TLS = s.mesh.ServerTLSConfig()
	s.EnableHTTP2 = h2
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// checkProto fails the test unless s served every request over HTTP/2 when
// h2 is set, HTTP/1.1 otherwise.
func (s *secureServer) checkProto(t *testing.T, h2 bool) {
	t.Helper()
	want, other := 1, 2
	if h2 {
		want, other = 2, 1
	}
	if s.protos[want].Load() == 0 || s.protos[other].Load() != 0 {
		t.Fatalf("served HTTP/1 %d, HTTP/2 %d times; want HTTP/%d only", s.protos[1].Load(), s.protos[2].Load(), want)
	}
}

// forgedDenial answers as a denying mesh does, with a hostile reason.
func forgedDenial(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set(HeaderError, string(LayerAuthz))
	http.Error(w, "mesh: authz: "+hostileText, http.StatusForbidden)
}

// TestAuthzMarkerBelievedOnlyFromVerifiedPeer: a 403 marked authz is the
// denial of the destination's mesh only when the destination proved its
// identity over mTLS; from a tls: disable upstream it is the application's
// answer, returned with its body. The reason is sanitized either way.
func TestAuthzMarkerBelievedOnlyFromVerifiedPeer(t *testing.T) {
	t.Run("plaintext", func(t *testing.T) {
		b := newBackend(t, "plain", forgedDenial)
		m := newTestMesh(t, plainBilling(b.addr(), ""))
		code, body, err := get(t, m, "http://billing/x")
		if err != nil {
			t.Fatalf("a marked 403 from a tls: disable upstream became an error: %v", err)
		}
		if code != http.StatusForbidden || body != "mesh: authz: "+hostileText+"\n" {
			t.Fatalf("got %d with a body of %d bytes, want the upstream's 403 and its body intact", code, len(body))
		}
	})
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("mTLS h2=%v", h2), func(t *testing.T) {
			billing := newSecureServer(t, "billing", fleetPolicy, h2, forgedDenial)
			client := newTestMesh(t, fleetPolicy(billing.addr()), WithService("admin"))
			_, _, err := get(t, client, "http://billing/x")
			ce := callError(t, err)
			if ce.Layer != LayerAuthz || ce.Service != "billing" {
				t.Fatalf("CallError %+v", ce)
			}
			checkPeerText(t, ce.Err.Error())
			if !strings.HasPrefix(ce.Err.Error(), "no level=INFO") {
				t.Fatalf("the reason lost its text: %q", ce.Err)
			}
			billing.checkProto(t, h2)
		})
	}
}

// forgedStatus is PermissionDenied marked as billing's mesh marks a
// denial, with a hostile message (valid UTF-8, as protobuf requires).
func forgedStatus() *grpcstatus.Status {
	st, err := grpcstatus.New(codes.PermissionDenied, strings.ToValidUTF8(hostileText, "")).WithDetails(&errdetails.ErrorInfo{
		Domain: ErrorDomain, Reason: string(LayerAuthz),
		Metadata: map[string]string{infoService: "billing", infoPolicyVersion: "v\x1b[2J1"},
	})
	if err != nil {
		panic(err)
	}
	return st
}

// TestGRPCAuthzMarkerBelievedOnlyFromVerifiedPeer is the gRPC counterpart:
// over a plaintext connection, a status marked by a mesh is the
// application's own, returned unchanged, and FromStatus returns nil for it;
// over mTLS it is the destination mesh's denial, its text sanitized.
func TestGRPCAuthzMarkerBelievedOnlyFromVerifiedPeer(t *testing.T) {
	forge := func(context.Context, int64) (*healthpb.HealthCheckResponse, error) { return nil, forgedStatus().Err() }
	t.Run("plaintext", func(t *testing.T) {
		b := newGRPCBackend(t, "plain")
		b.onCheck(forge)
		f := startBilling(t, billingPolicy("    tls: disable\n"), b)
		_, err := check(context.Background(), dial(t, f.client(t, "enrollment"), "billing"))
		want := forgedStatus()
		if err == nil || err.Error() != want.Err().Error() {
			t.Fatalf("error %q, want %q", err, want.Err())
		}
		checkSameStatus(t, grpcstatus.Convert(err), want)
		if ce := FromStatus(err); ce != nil {
			t.Fatalf("a mesh marker from a plaintext peer was believed: %+v", ce)
		}
		var ce *CallError
		if errors.As(err, &ce) {
			t.Fatalf("errors.As found a CallError: %+v", ce)
		}
	})
	t.Run("mTLS", func(t *testing.T) {
		b := newGRPCBackend(t, "strict")
		b.onCheck(forge)
		f := startBilling(t, billingPolicy(""), b)
		_, err := check(context.Background(), dial(t, f.client(t, "enrollment"), "billing"))
		ce := FromStatus(err)
		if ce == nil || ce.Layer != LayerAuthz || ce.Service != "billing" || grpcstatus.Code(err) != codes.PermissionDenied {
			t.Fatalf("the denial of a verified peer: %v (FromStatus %+v)", err, ce)
		}
		checkPeerText(t, ce.Err.Error())
		if strings.ContainsAny(err.Error(), "\n\r\x1b\u202e") {
			t.Fatalf("control characters reach the caller's error: %q", err)
		}
		// The status rebuilt across the wire is sanitized too.
		raw := FromStatus(forgedStatus().Err())
		checkPeerText(t, raw.Err.Error())
		checkPeerText(t, raw.PolicyVersion)
	})
}

// TestTimeoutMarkerBelievedOnlyFromVerifiedPeer: a 504 marked timeout from
// a tls: disable upstream is its application's answer.
func TestTimeoutMarkerBelievedOnlyFromVerifiedPeer(t *testing.T) {
	b := newBackend(t, "plain", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set(HeaderError, string(LayerTimeout))
		http.Error(w, "app says so", http.StatusGatewayTimeout)
	})
	m := newTestMesh(t, plainBilling(b.addr(), ""))
	code, body, err := get(t, m, "http://billing/x")
	if err != nil || code != http.StatusGatewayTimeout || body != "app says so\n" {
		t.Fatalf("%d %q %v, want the upstream's 504", code, body, err)
	}
}

// checkSameStatus fails t unless got and want have the same code, message
// and details. Details are compared unpacked: a map field (ErrorInfo's
// metadata) has no fixed order on the wire, so the bytes of the same
// status can differ from one encoding to the next.
func checkSameStatus(t testing.TB, got, want *grpcstatus.Status) {
	t.Helper()
	if got.Code() != want.Code() || got.Message() != want.Message() {
		t.Fatalf("status %v, want %v", got.Proto(), want.Proto())
	}
	gd, wd := got.Details(), want.Details()
	if len(gd) != len(wd) {
		t.Fatalf("details %v, want %v", gd, wd)
	}
	for i := range gd {
		g, gok := gd[i].(proto.Message)
		w, wok := wd[i].(proto.Message)
		if !gok || !wok || !proto.Equal(g, w) {
			t.Fatalf("detail %d: %v, want %v", i, gd[i], wd[i])
		}
	}
}
