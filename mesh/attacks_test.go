package mesh

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/inmesh/inmesh/identity"
)

// pathAttack is one request and whether billing must serve it.
type pathAttack struct {
	name   string
	path   string // as sent on the wire
	header http.Header
	served bool
}

// rawTestServer is an HTTPS server (HTTP/1.1 and HTTP/2) behind a mesh.
type rawTestServer struct {
	*httptest.Server
	hits atomic.Int64
}

func newRawTestServer(t *testing.T, m *Mesh) *rawTestServer {
	t.Helper()
	s := &rawTestServer{}
	s.Server = httptest.NewUnstartedServer(m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		_, _ = io.WriteString(w, "served")
	})))
	s.EnableHTTP2 = true
	s.TLS = m.ServerTLSConfig()
	s.TLS.NextProtos = []string{"h2", "http/1.1"}
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// runAttacks sends each attack to srv, billing's server, as caller, over HTTP/1.1 and HTTP/2,
// with the path exactly as written (Go's client does not clean it): the
// served ones must reach the handler, the others must be denied at layer
// authz without reaching it.
func runAttacks(t *testing.T, srv *rawTestServer, caller *Mesh, attacks []pathAttack) {
	t.Helper()
	for _, h2 := range []bool{false, true} {
		var protos http.Protocols
		protos.SetHTTP1(!h2)
		protos.SetHTTP2(h2)
		tr := &http.Transport{TLSClientConfig: identity.ClientConfig(caller.identity, "billing"), Protocols: &protos}
		t.Cleanup(tr.CloseIdleConnections)
		client := &http.Client{Transport: tr}
		for _, a := range attacks {
			req, err := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(a.path) > 1 && a.path[1] == '/' {
				req.URL.Path = a.path // an Opaque "//x" would be sent as "https://x"
			} else {
				req.URL.Opaque = a.path
			}
			for k, vs := range a.header {
				req.Header[k] = vs
			}
			before := srv.hits.Load()
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("%s (h2 %v): %v", a.name, h2, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if wantMajor := map[bool]int{false: 1, true: 2}[h2]; resp.ProtoMajor != wantMajor {
				t.Fatalf("%s: HTTP/%d, want HTTP/%d", a.name, resp.ProtoMajor, wantMajor)
			}
			served := srv.hits.Load() != before
			switch {
			case a.served && (!served || resp.StatusCode != http.StatusOK):
				t.Errorf("%s (HTTP/%d): GET %s %v: %d, want it served", a.name, resp.ProtoMajor, a.path, a.header, resp.StatusCode)
			case !a.served && (served || resp.StatusCode != http.StatusForbidden || resp.Header.Get(HeaderError) != string(LayerAuthz)):
				t.Errorf("%s (HTTP/%d): GET %s %v: %d %q, served %v, want an authz denial", a.name, resp.ProtoMajor, a.path, a.header,
					resp.StatusCode, resp.Header.Get(HeaderError), served)
			}
		}
	}
}
