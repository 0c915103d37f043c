package policy

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestValidateLoadBalancer(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"every balancer", "services: {a: {load_balancer: round_robin}, b: {load_balancer: least_request}, c: {load_balancer: random}, d: {load_balancer: ring_hash}, e: {load_balancer: maglev}}", nil},
		{"unknown", "services: {b: {load_balancer: consistent}}", []string{`services.b.load_balancer: must be one of round_robin, least_request, random, ring_hash, maglev; got "consistent"`}},
		{"hash policies", "services: {b: {load_balancer: ring_hash, hash: [{header: x-user}, {cookie: session, terminal: true}, {query_parameter: user}, {source_ip: true}]}}", nil},
		{"hash with maglev", "services: {b: {load_balancer: maglev, hash: [{header: x-user}]}}", nil},
		{"hash alone", "services: {b: {hash: [{header: x-user}]}}", nil},
		{"hash in a route", "services: {b: {load_balancer: round_robin, routes: [{hash: [{header: x-user}]}]}}", nil},
		{"hash with round robin", "services: {b: {load_balancer: round_robin, hash: [{header: x-user}]}}", []string{`services.b.hash: needs load_balancer ring_hash or maglev, not "round_robin"`}},
		{"hash with least request in defaults", "defaults: {load_balancer: least_request, hash: [{header: x-user}]}", []string{`defaults.hash: needs load_balancer ring_hash or maglev, not "least_request"`}},
		{"hash with random in a route", "services: {b: {routes: [{load_balancer: random, hash: [{header: x-user}]}]}}", []string{`services.b.routes[0].hash: needs load_balancer ring_hash or maglev, not "random"`}},
		{"no input", "services: {b: {hash: [{terminal: true}]}}", []string{"services.b.hash[0]: must have exactly one of header, cookie, query_parameter, source_ip; got 0"}},
		{"two inputs", "services: {b: {hash: [{header: x-user}, {header: a, cookie: b}]}}", []string{"services.b.hash[1]: must have exactly one of header, cookie, query_parameter, source_ip; got 2"}},
		{"header name", "services: {b: {hash: [{header: 'x user'}]}}", []string{`services.b.hash[0].header: invalid header name "x user"`}},
		{"header name colon", "services: {b: {hash: [{header: ':authority'}]}}", []string{`services.b.hash[0].header: invalid header name ":authority"`}},
		{"cookie name", "services: {b: {hash: [{cookie: 'a;b'}]}}", []string{`services.b.hash[0].cookie: invalid cookie name "a;b"`}},
		{"query name", "services: {b: {hash: [{query_parameter: 'a=b'}]}}", []string{`services.b.hash[0].query_parameter: invalid query parameter name "a=b"`}},
		{"empty hash", "services: {b: {hash: []}}", []string{"services.b.hash: an empty list: give at least one hash policy, or leave hash out"}},
		{"too many", "services: {b: {hash: [" + strings.Repeat("{header: a}, ", 16) + "{header: a}]}}", []string{"services.b.hash: at most 16 hash policies, got 17"}},
		{"ring sizes", "services: {b: {load_balancer: ring_hash, ring_hash: {minimum_ring_size: 1, maximum_ring_size: 8388608}}}", nil},
		{"ring sizes alone", "services: {b: {ring_hash: {minimum_ring_size: 64}}}", nil},
		{"ring size zero", "services: {b: {ring_hash: {minimum_ring_size: 0}}}", []string{"services.b.ring_hash.minimum_ring_size: must be 1..8388608, got 0"}},
		{"ring size big", "services: {b: {ring_hash: {maximum_ring_size: 8388609}}}", []string{"services.b.ring_hash.maximum_ring_size: must be 1..8388608, got 8388609"}},
		{"ring size negative", "services: {b: {ring_hash: {minimum_ring_size: -1}}}", []string{"services.b.ring_hash.minimum_ring_size: must be 1..8388608, got -1"}},
		{"ring min above max", "services: {b: {ring_hash: {minimum_ring_size: 2048, maximum_ring_size: 1024}}}", []string{"services.b.ring_hash.minimum_ring_size: must be at most maximum_ring_size (1024), got 2048"}},
		{"ring with maglev", "services: {b: {load_balancer: maglev, ring_hash: {minimum_ring_size: 64}}}", []string{`services.b.ring_hash: needs load_balancer ring_hash, not "maglev"`}},
		// The mapping form.
		{"object", "services: {b: {load_balancer: {policy: maglev, hash: [{header: x-user}]}}}", nil},
		{"object one hash", "services: {b: {load_balancer: {hash: {header: x-user}}}}", nil},
		{"object bad hash", "services: {b: {load_balancer: {policy: random, hash: {header: x-user}}}}", []string{`services.b.hash: needs load_balancer ring_hash or maglev, not "random"`}},
		{"object unknown key", "services: {b: {load_balancer: {policy: maglev, table: 7}}}", []string{"services.b.load_balancer.table: unknown field (the load_balancer mapping has policy, hash and ring_hash)"}},
		{"object and flat", "services: {b: {load_balancer: {hash: {header: a}}, hash: [{header: b}]}}", []string{"services.b.load_balancer: hash and ring_hash go either in the load_balancer mapping or beside it, not both"}},
		{"flat then object", "services: {b: {ring_hash: {minimum_ring_size: 8}, load_balancer: {policy: ring_hash}}}", []string{"services.b.load_balancer: hash and ring_hash go either in the load_balancer mapping or beside it, not both"}},
		{"object hash type", "services: {b: {load_balancer: {hash: x-user}}}", []string{`services.b.load_balancer.hash: expected a list, got "x-user"`}},
		{"object policy type", "services: {b: {load_balancer: {policy: [maglev]}}}", []string{"services.b.load_balancer.policy: expected a string, got a list"}},
		{"object ring size zero", "services: {b: {load_balancer: {ring_hash: {minimum_ring_size: 0}}}}", []string{"services.b.ring_hash.minimum_ring_size: must be 1..8388608, got 0"}},
		{"object ring size zero in defaults", "defaults: {load_balancer: {ring_hash: {maximum_ring_size: 0}}}", []string{"defaults.ring_hash.maximum_ring_size: must be 1..8388608, got 0"}},
		{"object ring sizes", "services: {b: {routes: [{load_balancer: {ring_hash: {minimum_ring_size: 2, maximum_ring_size: 1}}}]}}", []string{"services.b.routes[0].ring_hash.minimum_ring_size: must be at most maximum_ring_size (1), got 2"}},
		{"object in a route", "services: {b: {routes: [{name: r, load_balancer: {hash: [{cookie: s}]}}]}}", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantProblems(t, tt.in, tt.want) })
	}
}

func TestDecodeLoadBalancerObject(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Settings
	}{
		{"one hash, no policy", "load_balancer: {hash: {header: x-user}}",
			Settings{LoadBalancer: "ring_hash", Hash: []HashPolicy{{Header: "x-user"}}}},
		{"list", "load_balancer: {policy: maglev, hash: [{header: x-user, terminal: true}, {source_ip: true}]}",
			Settings{LoadBalancer: "maglev", Hash: []HashPolicy{{Header: "x-user", Terminal: true}, {SourceIP: true}}}},
		{"ring", "load_balancer: {policy: ring_hash, hash: [{cookie: s}], ring_hash: {minimum_ring_size: 16, maximum_ring_size: 64}}",
			Settings{LoadBalancer: "ring_hash", Hash: []HashPolicy{{Cookie: "s"}}, RingHash: &RingHash{MinimumRingSize: 16, MaximumRingSize: 64}}},
		{"block", "load_balancer:\n    policy: maglev\n    hash:\n      query_parameter: user",
			Settings{LoadBalancer: "maglev", Hash: []HashPolicy{{QueryParameter: "user"}}}},
		{"alias", "", Settings{}},
		{"string", "load_balancer: maglev", Settings{LoadBalancer: "maglev"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := "services:\n  b:\n    " + strings.ReplaceAll(tt.in, "\n", "\n    ")
			if tt.name == "alias" {
				// An alias to a mapping is the mapping.
				in = "services:\n  a: &a {load_balancer: {hash: {header: x-user}}}\n  b:\n    <<: *a"
				tt.want = Settings{LoadBalancer: "ring_hash", Hash: []HashPolicy{{Header: "x-user"}}}
			}
			doc := mustParse(t, in)
			got := doc.Services["b"].Settings
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Settings = %+v, want %+v", got, tt.want)
			}
			// The document marshals to the flat form, which parses back to
			// the same document.
			data, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			again := mustParse(t, string(data))
			if !reflect.DeepEqual(again, doc) {
				t.Errorf("re-parsed %s:\n%+v\nwant\n%+v", data, again.Services["b"].Settings, got)
			}
		})
	}
}

func TestResolveHash(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		route int
		lb    string
		want  *HashLB
	}{
		{"none", "services: {b: {}}", -1, "round_robin", nil},
		{"ring defaults", "services: {b: {load_balancer: ring_hash}}", -1, "ring_hash",
			&HashLB{MinimumRingSize: 1024, MaximumRingSize: 8388608}},
		{"maglev", "services: {b: {load_balancer: maglev, hash: [{header: x}]}}", -1, "maglev",
			&HashLB{Policies: []HashPolicy{{Header: "x"}}, TableSize: 65537}},
		{"hash alone is ring_hash", "services: {b: {hash: [{header: x}]}}", -1, "ring_hash",
			&HashLB{Policies: []HashPolicy{{Header: "x"}}, MinimumRingSize: 1024, MaximumRingSize: 8388608}},
		{"route hash over service round robin", "services: {b: {load_balancer: round_robin, routes: [{hash: [{header: x}]}]}}", 0, "ring_hash",
			&HashLB{Policies: []HashPolicy{{Header: "x"}}, MinimumRingSize: 1024, MaximumRingSize: 8388608}},
		{"route hash keeps service maglev", "services: {b: {load_balancer: maglev, routes: [{hash: [{header: x}]}]}}", 0, "maglev",
			&HashLB{Policies: []HashPolicy{{Header: "x"}}, TableSize: 65537}},
		{"route list replaces whole", "defaults: {hash: [{header: a}, {header: b}]}\nservices: {b: {routes: [{hash: [{cookie: c}]}]}}", 0, "ring_hash",
			&HashLB{Policies: []HashPolicy{{Cookie: "c"}}, MinimumRingSize: 1024, MaximumRingSize: 8388608}},
		{"service inherits defaults", "defaults: {load_balancer: maglev, hash: [{header: a}]}\nservices: {b: {}}", -1, "maglev",
			&HashLB{Policies: []HashPolicy{{Header: "a"}}, TableSize: 65537}},
		{"route round robin drops hash", "services: {b: {hash: [{header: x}], routes: [{load_balancer: round_robin}]}}", 0, "round_robin", nil},
		{"ring sizes replace whole", "defaults: {ring_hash: {minimum_ring_size: 10, maximum_ring_size: 20}}\nservices: {b: {load_balancer: ring_hash, ring_hash: {maximum_ring_size: 512}}}", -1, "ring_hash",
			&HashLB{MinimumRingSize: 512, MaximumRingSize: 512}},
		{"ring min only", "services: {b: {load_balancer: ring_hash, ring_hash: {minimum_ring_size: 4096}}}", -1, "ring_hash",
			&HashLB{MinimumRingSize: 4096, MaximumRingSize: 8388608}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap, err := NewSnapshot(mustParse(t, tt.in), "test")
			if err != nil {
				t.Fatal(err)
			}
			rs := snap.Services["b"]
			e := rs.Effective
			if tt.route >= 0 {
				e = rs.Routes[tt.route].Effective
			}
			if e.LoadBalancer != tt.lb || !reflect.DeepEqual(e.Hash, tt.want) {
				t.Errorf("load balancer %s, hash %+v; want %s, %+v", e.LoadBalancer, e.Hash, tt.lb, tt.want)
			}
		})
	}
}

func TestEffectiveJSONHash(t *testing.T) {
	snap, err := NewSnapshot(mustParse(t, "services: {b: {load_balancer: {hash: [{header: x-user, terminal: true}]}}}"), "test")
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(snap.Services["b"].Effective)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"load_balancer":"ring_hash"`, `"hash":{"policies":[{"header":"x-user","terminal":true}],"minimum_ring_size":1024,"maximum_ring_size":8388608}`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %s", b, want)
		}
	}
}
