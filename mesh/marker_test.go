package mesh

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/inmesh/inmesh/internal/meshtest"
)

// secureServer is a real HTTPS server on 127.0.0.1 with the TLS
// configuration of a mesh of service, serving h behind that mesh's Handler,
// over HTTP/2 when h2 is set. It counts the requests of each protocol
// version it serves.
type secureServer struct {
	*httptest.Server
	mesh   *Mesh
	protos [3]atomic.Int64 // by r.ProtoMajor
}

func (s *secureServer) Addr() string { return strings.TrimPrefix(s.URL, "https://") }

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

// TestTimeoutMarkerBelievedOnlyFromVerifiedPeer: a 504 marked timeout from
// a tls: disable upstream is its application's answer.
func TestTimeoutMarkerBelievedOnlyFromVerifiedPeer(t *testing.T) {
	b := meshtest.NewBackend(t, "plain", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set(HeaderError, string(LayerTimeout))
		http.Error(w, "app says so", http.StatusGatewayTimeout)
	})
	m := newTestMesh(t, plainBilling(b.Addr(), ""))
	code, body, err := get(t, m, "http://billing/x")
	if err != nil || code != http.StatusGatewayTimeout || body != "app says so\n" {
		t.Fatalf("%d %q %v, want the upstream's 504", code, body, err)
	}
}
