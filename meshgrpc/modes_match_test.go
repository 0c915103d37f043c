package meshgrpc

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/mesh"
)

// Route conditions (path_exact, path_regex, header, query_param) and route
// actions (prefix_rewrite, request_headers), in every protocol.

// conditionsPolicy sends to v2 the calls that meet one route's condition,
// and the others to v1. Each route but header and query also asks for
// its case in x-case, so that the cases do not overlap. gRPC calls Check,
// whose full method the path conditions name.
func conditionsPolicy(md mode) func(addrs ...string) string {
	exact, regex := "/x", "/v[0-9]+/x"
	head := "defaults: {tls: disable} # plain test backends\n"
	if md == modeGRPC {
		exact, regex = "/grpc.health.v1.Health/Check", `/grpc\.health\.v1\.Health/Ch.*`
	}
	if md != modeHTTP1 {
		head = "trust_domain: mesh.local\n"
	}
	return func(addrs ...string) string {
		return head + fmt.Sprintf(`services:
  billing:
    endpoints:
      - {address: %s, labels: {version: v1}}
      - {address: %s, labels: {version: v2}}
    subsets: {v1: {version: v1}, v2: {version: v2}}
    routes:
      - name: exact
        match: {path_exact: %q, header: [{name: x-case, exact: exact}]}
        split: [{subset: v2, weight: 1}]
      - name: regex
        match: {path_regex: %q, header: [{name: x-case, exact: regex}]}
        split: [{subset: v2, weight: 1}]
      - name: inverted
        match: {header: [{name: x-case, exact: invert}, {name: x-beta, invert: true}]}
        split: [{subset: v2, weight: 1}]
      - name: header
        match: {header: [{name: X-Env, prefix: st}]}
        split: [{subset: v2, weight: 1}]
      - name: query
        match: {query_param: [{name: debug, exact: "1"}]}
        split: [{subset: v2, weight: 1}]
      - name: default
        split: [{subset: v1, weight: 1}]
  enrollment: {}
`, addrs[0], addrs[1], exact, regex)
	}
}

// callWith makes a call of billing: HTTP GET of path with the headers hdr
// (name, value pairs, a name given twice has two values); gRPC Check with
// them as metadata (path unused: the method is Check's).
func (f *fleet) callWith(ctx context.Context, path string, hdr ...string) result {
	if f.md == modeGRPC {
		return f.call(ctx, hdr...)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://billing"+path, nil)
	if err != nil {
		return result{md: f.md, err: err}
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	return httpResult(f.md, f.client.HTTPClient(), req)
}

func TestRouteConditions(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		f := startFleetWith(t, md, fleetConfig{policyFor: conditionsPolicy(md), names: []string{"v1", "v2"}}, alwaysAnswer(ok), alwaysAnswer(ok))
		rpc := md == modeGRPC
		tests := []struct {
			name string
			path string
			hdr  []string
			want string // the backend, v1 or v2
		}{
			{"path_exact", "/x", []string{"x-case", "exact"}, "v2"},
			{"path_exact is no prefix", "/x/y", []string{"x-case", "exact"}, map[bool]string{false: "v1", true: "v2"}[rpc]},
			{"path_regex", "/v2/x", []string{"x-case", "regex"}, "v2"},
			{"path_regex is anchored", "/v2/xy", []string{"x-case", "regex"}, map[bool]string{false: "v1", true: "v2"}[rpc]},
			{"header prefix", "/a", []string{"x-env", "staging"}, "v2"},
			{"header prefix not", "/a", []string{"x-env", "prod"}, "v1"},
			{"header repeated", "/a", []string{"x-env", "prod", "x-env", "stable"}, "v2"},
			{"inverted, absent", "/a", []string{"x-case", "invert"}, "v2"},
			{"inverted, present", "/a", []string{"x-case", "invert", "x-beta", "1"}, "v1"},
			// An RPC has no query: its query condition never holds.
			{"query", "/a?b=2&debug=1", nil, map[bool]string{false: "v2", true: "v1"}[rpc]},
			{"query other value", "/a?debug=0", nil, "v1"},
			{"query escaped", "/a?de%62ug=%31", nil, map[bool]string{false: "v2", true: "v1"}[rpc]},
			{"none", "/a", nil, "v1"},
		}
		for _, tc := range tests {
			before := [2]int64{f.Hits[0](), f.Hits[1]()}
			const calls = 5
			for range calls {
				r := f.callWith(context.Background(), tc.path, tc.hdr...)
				if !r.ok() || r.from != tc.want {
					t.Fatalf("%s: answered by %q (%v), want %s", tc.name, r.from, r, tc.want)
				}
			}
			w := slices.Index(f.names, tc.want)
			if got := f.Hits[w]() - before[w]; got != calls {
				t.Fatalf("%s: %s saw %d calls, want %d", tc.name, tc.want, got, calls)
			}
			if other := f.Hits[1-w]() - before[1-w]; other != 0 {
				t.Fatalf("%s: %d calls leaked to %s", tc.name, other, f.names[1-w])
			}
		}
	}, allModes...)
}

// actionsPolicy rewrites /v1/ to /v2/ and /old to /new, and changes the
// headers of the calls to billing: x-tag gets a value more, x-env is
// replaced, x-debug removed. billing has one endpoint.
func actionsPolicy(md mode, addr string) string {
	head := "defaults: {tls: disable} # plain test backends\n"
	prefix := "/v1/"
	if md != modeHTTP1 {
		head = "trust_domain: mesh.local\n"
	}
	if md == modeGRPC {
		prefix = "/grpc.health.v1.Health/" // not rewritten: an RPC's method is sent as called
	}
	return head + fmt.Sprintf(`services:
  billing:
    endpoints: [{address: %s}]
    routes:
      - name: exact
        match: {path_exact: /old}
        prefix_rewrite: /new
      - name: rewrite
        match: {path_prefix: %s}
        prefix_rewrite: /v2/
        retry: {attempts: 2, backoff: {initial: 1ms, max: 2ms}, retry_on: [503, unavailable]}
        request_headers: {add: {X-Tag: added}, set: {x-env: set}, remove: [X-Debug]}
      - name: default
  enrollment: {}
`, addr, prefix)
}

// sawRequest is what a backend saw of a call.
type sawRequest struct {
	path, rawPath, query string
	header               map[string][]string // lower-case names; only those the test sets
}

// recorder keeps what a backend saw of its calls. The first call fails
// (HTTP 503, gRPC Unavailable), for a retry.
type recorder struct {
	mu    sync.Mutex
	last  sawRequest
	calls int
}

// saw records s and reports whether the call is to fail.
func (r *recorder) saw(s sawRequest) (fail bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last = s
	r.calls++
	return r.calls == 1
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

func (r *recorder) get() sawRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// testedHeaders are the headers the actions test looks at.
var testedHeaders = []string{"x-tag", "x-env", "x-debug", "x-other"}

// startRecorded starts billing's one backend, recording what it sees, and
// a client mesh (enrollment), on actionsPolicy.
func startRecorded(t *testing.T, md mode) (*recorder, *mesh.Mesh, healthpb.HealthClient) {
	t.Helper()
	rec := &recorder{}
	switch md {
	case modeHTTP1, modeHTTP2:
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s := sawRequest{path: r.URL.Path, rawPath: r.URL.RawPath, query: r.URL.RawQuery, header: map[string][]string{}}
			for _, h := range testedHeaders {
				if v := r.Header.Values(h); v != nil {
					s.header[h] = v
				}
			}
			if rec.saw(s) {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		}))
		pol := actionsPolicy(md, srv.Listener.Addr().String())
		if md == modeHTTP1 {
			srv.Start()
		} else {
			server := newTestMesh(t, pol, mesh.WithService("billing"))
			srv.Config.Handler = server.Handler(srv.Config.Handler)
			srv.TLS = server.ServerTLSConfig()
			srv.EnableHTTP2 = true
			srv.StartTLS()
		}
		t.Cleanup(srv.Close)
		return rec, newTestMesh(t, pol, mesh.WithService("enrollment")), nil
	}
	b := newGRPCBackend(t, "b0")
	b.onCheck(func(ctx context.Context, _ int64) (*healthpb.HealthCheckResponse, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		s := sawRequest{header: map[string][]string{}}
		for _, h := range testedHeaders {
			if v := md.Get(h); v != nil {
				s.header[h] = v
			}
		}
		if rec.saw(s) {
			return nil, grpcstatus.Error(codes.Unavailable, "first call")
		}
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
	})
	pol := actionsPolicy(md, b.Addr())
	b.serve(t, newTestMesh(t, pol, mesh.WithService("billing")))
	client := newTestMesh(t, pol, mesh.WithService("enrollment"))
	return rec, client, dial(t, client, "billing")
}

func TestRouteActions(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		rec, client, grpcClient := startRecorded(t, md)
		hdr := map[string][]string{"x-tag": {"orig"}, "x-env": {"a", "b"}, "x-debug": {"1"}, "x-other": {"kept"}}
		want := map[string][]string{"x-tag": {"orig", "added"}, "x-env": {"set"}, "x-other": {"kept"}}

		if md == modeGRPC {
			ctx := context.Background()
			for _, k := range testedHeaders {
				for _, v := range hdr[k] {
					ctx = metadata.AppendToOutgoingContext(ctx, k, v)
				}
			}
			if _, err := check(ctx, grpcClient); err != nil {
				t.Fatalf("Check (not rewritten): %v", err)
			}
			if n := rec.count(); n != 2 {
				t.Fatalf("backend saw %d calls, want 2 (a retry)", n)
			}
			if got := rec.get().header; !reflect.DeepEqual(got, want) {
				t.Errorf("backend saw metadata %v, want %v", got, want)
			}
			if md, _ := metadata.FromOutgoingContext(ctx); !reflect.DeepEqual(map[string][]string(md), hdr) {
				t.Errorf("the caller's metadata changed: %v", md)
			}
			return
		}

		tests := []struct {
			name, url            string
			path, rawPath, query string
			header               map[string][]string
		}{
			{"prefix, retried", "http://billing/v1/charge?id=7", "/v2/charge", "", "id=7", want},
			{"prefix alone", "http://billing/v1/", "/v2/", "", "", want},
			{"escaped rest kept", "http://billing/v1/a%2Fb", "/v2/a/b", "/v2/a%2Fb", "", want},
			{"escaped in the prefix", "http://billing/v%31/a%2Fb", "/v2/a/b", "/v2/a%2Fb", "", want},
			{"exact", "http://billing/old?x=1", "/new", "", "x=1", hdr},
			{"no rewrite", "http://billing/other", "/other", "", "", hdr},
		}
		for i, tc := range tests {
			req, err := http.NewRequest(http.MethodGet, tc.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, vs := range hdr {
				for _, v := range vs {
					req.Header.Add(k, v)
				}
			}
			origURL := *req.URL
			origHeader := req.Header.Clone()
			resp, err := client.HTTPClient().Do(req)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: status %d", tc.name, resp.StatusCode)
			}
			got := rec.get()
			if got.path != tc.path || got.rawPath != tc.rawPath || got.query != tc.query {
				t.Errorf("%s: backend saw path %q raw %q query %q, want %q %q %q", tc.name, got.path, got.rawPath, got.query, tc.path, tc.rawPath, tc.query)
			}
			if !reflect.DeepEqual(got.header, tc.header) {
				t.Errorf("%s: backend saw headers %v, want %v", tc.name, got.header, tc.header)
			}
			if *req.URL != origURL || !reflect.DeepEqual(req.Header, origHeader) {
				t.Errorf("%s: the caller's request changed: %v %v", tc.name, req.URL, req.Header)
			}
			if i == 0 && rec.count() != 2 {
				t.Fatalf("%s: backend saw %d calls, want 2 (a retry, with the same changes)", tc.name, rec.count())
			}
		}
	}, allModes...)
}
