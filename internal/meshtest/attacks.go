package meshtest

import (
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/core"
)

// HeaderError is mesh.HeaderError, the header that marks an answer of the
// destination's mesh; meshtest's own test checks the two agree.
const HeaderError = "Inmesh-Error"

// PathAttack is one request and whether billing must serve it.
type PathAttack struct {
	Name   string
	Path   string // as sent on the wire
	Header http.Header
	Served bool
}

// RawServer is an HTTPS server (HTTP/1.1 and HTTP/2) behind a mesh that
// counts the requests reaching its handler.
type RawServer struct {
	*httptest.Server
	Hits atomic.Int64
}

// NewRawServer starts a server whose handler, wrapped by wrap (a mesh's
// Handler), answers "served", with the mesh's server TLS configuration
// tlsConf. It is closed when t ends.
func NewRawServer(t testing.TB, wrap func(http.Handler) http.Handler, tlsConf *tls.Config) *RawServer {
	t.Helper()
	s := &RawServer{}
	s.Server = httptest.NewUnstartedServer(wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.Hits.Add(1)
		_, _ = io.WriteString(w, "served")
	})))
	s.EnableHTTP2 = true
	s.TLS = tlsConf
	s.TLS.NextProtos = []string{"h2", "http/1.1"}
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// RunAttacks sends each attack to srv, billing's server, as the caller
// whose credentials are caller, over HTTP/1.1 and HTTP/2, with the path
// exactly as written (Go's client does not clean it): the served ones must
// reach the handler, the others must be denied at layer authz without
// reaching it.
func RunAttacks(t *testing.T, srv *RawServer, caller identity.Source, attacks []PathAttack) {
	t.Helper()
	for _, h2 := range []bool{false, true} {
		var protos http.Protocols
		protos.SetHTTP1(!h2)
		protos.SetHTTP2(h2)
		tr := &http.Transport{TLSClientConfig: identity.ClientConfig(caller, "billing"), Protocols: &protos}
		t.Cleanup(tr.CloseIdleConnections)
		client := &http.Client{Transport: tr}
		for _, a := range attacks {
			req, err := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(a.Path) > 1 && a.Path[1] == '/' {
				req.URL.Path = a.Path // an Opaque "//x" would be sent as "https://x"
			} else {
				req.URL.Opaque = a.Path
			}
			for k, vs := range a.Header {
				req.Header[k] = vs
			}
			before := srv.Hits.Load()
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("%s (h2 %v): %v", a.Name, h2, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if wantMajor := map[bool]int{false: 1, true: 2}[h2]; resp.ProtoMajor != wantMajor {
				t.Fatalf("%s: HTTP/%d, want HTTP/%d", a.Name, resp.ProtoMajor, wantMajor)
			}
			served := srv.Hits.Load() != before
			switch {
			case a.Served && (!served || resp.StatusCode != http.StatusOK):
				t.Errorf("%s (HTTP/%d): GET %s %v: %d, want it served", a.Name, resp.ProtoMajor, a.Path, a.Header, resp.StatusCode)
			case !a.Served && (served || resp.StatusCode != http.StatusForbidden || resp.Header.Get(HeaderError) != string(core.LayerAuthz)):
				t.Errorf("%s (HTTP/%d): GET %s %v: %d %q, served %v, want an authz denial", a.Name, resp.ProtoMajor, a.Path, a.Header,
					resp.StatusCode, resp.Header.Get(HeaderError), served)
			}
		}
	}
}
