package mesh

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/inmesh/inmesh/policy"
)

const hashPolicyDoc = `
defaults: {tls: disable}
services:
  billing:
    endpoints: [{address: "10.0.0.1:80"}, {address: "10.0.0.2:80"}, {address: "10.0.0.3:80"}]
    load_balancer: round_robin
    routes:
      - name: users
        match: {path_prefix: /users}
        hash: [{header: x-user, terminal: true}, {cookie: session}]
      - name: tables
        match: {path_prefix: /tables}
        load_balancer: {policy: maglev}
      - name: rest
`

func TestExplainHash(t *testing.T) {
	m := newTestMesh(t, hashPolicyDoc)
	explain := func(path string, hdr ...string) *Explanation {
		t.Helper()
		req := httptest.NewRequest(http.MethodGet, "http://billing"+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		ex, err := m.Explain(req)
		if err != nil {
			t.Fatal(err)
		}
		return ex
	}

	ex := explain("/users/1", "X-User", "alice", "Cookie", "session=s1")
	if ex.LoadBalancer != "ring_hash" || ex.Hash == nil {
		t.Fatalf("load balancer %s, hash %+v", ex.LoadBalancer, ex.Hash)
	}
	if want := []policy.HashPolicy{{Header: "x-user", Terminal: true}, {Cookie: "session"}}; !slices.Equal(ex.Hash.Policies, want) {
		t.Errorf("policies %+v, want %+v", ex.Hash.Policies, want)
	}
	if ex.Hash.MinimumRingSize != 1024 || ex.Hash.MaximumRingSize != 8388608 {
		t.Errorf("ring sizes %d..%d", ex.Hash.MinimumRingSize, ex.Hash.MaximumRingSize)
	}
	if !slices.Equal(ex.Hash.Inputs, []string{"header x-user"}) || ex.Hash.Endpoint == "" {
		t.Errorf("inputs %q, endpoint %q", ex.Hash.Inputs, ex.Hash.Endpoint)
	}
	wantReason := "ring_hash: hash of route users (a hash without load_balancer means ring_hash); 2 hash policies of route users; this request hashes header x-user, which leads to " + ex.Hash.Endpoint
	if ex.Reasons.LoadBalancer != wantReason {
		t.Errorf("reason %q\nwant   %q", ex.Reasons.LoadBalancer, wantReason)
	}
	// The same user leads to the same endpoint; the cookie alone too.
	if again := explain("/users/2", "X-User", "alice"); again.Hash.Endpoint != ex.Hash.Endpoint {
		t.Errorf("alice leads to %s, then %s", ex.Hash.Endpoint, again.Hash.Endpoint)
	}
	if c := explain("/users/1", "Cookie", "a=b; session=s1"); !slices.Equal(c.Hash.Inputs, []string{"cookie session"}) || c.Hash.Endpoint == "" {
		t.Errorf("cookie only: inputs %q, endpoint %q", c.Hash.Inputs, c.Hash.Endpoint)
	}
	none := explain("/users/1")
	if len(none.Hash.Inputs) != 0 || none.Hash.Endpoint != "" || !strings.HasSuffix(none.Reasons.LoadBalancer, "none produced a value for this request: it is picked at random") {
		t.Errorf("no input: %+v, reason %q", none.Hash, none.Reasons.LoadBalancer)
	}

	mg := explain("/tables")
	if mg.LoadBalancer != "maglev" || mg.Hash == nil || mg.Hash.TableSize != 65537 ||
		mg.Reasons.LoadBalancer != "maglev: load_balancer of route tables; no hash policy: every request is picked at random" {
		t.Errorf("maglev: %s %+v %q", mg.LoadBalancer, mg.Hash, mg.Reasons.LoadBalancer)
	}
	rr := explain("/rest")
	if rr.LoadBalancer != "round_robin" || rr.Hash != nil || rr.Reasons.LoadBalancer != "round_robin: load_balancer of service billing" {
		t.Errorf("round robin: %s %+v %q", rr.LoadBalancer, rr.Hash, rr.Reasons.LoadBalancer)
	}

	// Its JSON, and /config.
	b, _ := json.Marshal(ex)
	if !strings.Contains(string(b), `"hash":{"policies":[{"header":"x-user","terminal":true},{"cookie":"session"}],"minimum_ring_size":1024,"maximum_ring_size":8388608,"inputs":["header x-user"],"endpoint":"`) {
		t.Errorf("Explanation JSON: %s", b)
	}
	rec := httptest.NewRecorder()
	m.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/config", nil))
	var compact bytes.Buffer
	if err := json.Compact(&compact, rec.Body.Bytes()); err != nil {
		t.Fatal(err)
	}
	if body := compact.String(); !strings.Contains(body, `"hash":{"policies":[{"header":"x-user","terminal":true},{"cookie":"session"}],"minimum_ring_size":1024,"maximum_ring_size":8388608}`) ||
		!strings.Contains(body, `"table_size":65537`) {
		t.Errorf("/config lacks the hash policies: %.2000s", body)
	}
}
