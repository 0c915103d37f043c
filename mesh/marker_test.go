package mesh

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/inmesh/inmesh/internal/core"
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
	if len(s) > core.MaxPeerText {
		t.Fatalf("%d bytes, want at most %d: %q", len(s), core.MaxPeerText, s)
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029' {
			t.Fatalf("control or format character %U in %q", r, s)
		}
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
