package core

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/telemetry"
)

func TestHasher(t *testing.T) {
	hs := discovery.HashString
	comb := discovery.CombineHash
	hdr := HTTPHeader{
		"X-User":   {"alice", "bob"},
		"X-Tenant": {"acme"},
		"Cookie":   {"theme=dark", ` session = "abc" ; lang=en`},
	}
	src := sourceAddress()
	tests := []struct {
		name   string
		hash   []policy.HashPolicy
		req    Request
		want   uint64
		ok     bool
		inputs []string
	}{
		{"header first value", []policy.HashPolicy{{Header: "x-user"}}, Request{Header: hdr}, hs("alice"), true, []string{"header x-user"}},
		{"header absent", []policy.HashPolicy{{Header: "x-none"}}, Request{Header: hdr}, 0, false, nil},
		{"no headers", []policy.HashPolicy{{Header: "x-user"}}, Request{}, 0, false, nil},
		{"combined", []policy.HashPolicy{{Header: "x-user"}, {Header: "x-tenant"}}, Request{Header: hdr}, comb(hs("alice"), hs("acme")), true, []string{"header x-user", "header x-tenant"}},
		{"terminal stops", []policy.HashPolicy{{Header: "x-user", Terminal: true}, {Header: "x-tenant"}}, Request{Header: hdr}, hs("alice"), true, []string{"header x-user"}},
		{"terminal without value goes on", []policy.HashPolicy{{Header: "x-none", Terminal: true}, {Header: "x-tenant"}}, Request{Header: hdr}, hs("acme"), true, []string{"header x-tenant"}},
		{"cookie in a later line, quoted", []policy.HashPolicy{{Cookie: "session"}}, Request{Header: hdr}, hs("abc"), true, []string{"cookie session"}},
		{"cookie first", []policy.HashPolicy{{Cookie: "theme"}}, Request{Header: hdr}, hs("dark"), true, []string{"cookie theme"}},
		{"cookie absent", []policy.HashPolicy{{Cookie: "sess"}}, Request{Header: hdr}, 0, false, nil},
		{"cookie never for gRPC", []policy.HashPolicy{{Cookie: "theme"}}, Request{Header: hdr, RPC: true}, 0, false, nil},
		{"query", []policy.HashPolicy{{QueryParameter: "u"}}, Request{RawQuery: "a=1&u=x%20y&u=2"}, hs("x%20y"), true, []string{"query_parameter u"}},
		{"query no value", []policy.HashPolicy{{QueryParameter: "u"}}, Request{RawQuery: "a=1&u"}, hs(""), true, []string{"query_parameter u"}},
		{"query prefix is not the name", []policy.HashPolicy{{QueryParameter: "u"}}, Request{RawQuery: "uu=1"}, 0, false, nil},
		{"query never for gRPC", []policy.HashPolicy{{QueryParameter: "u"}}, Request{RawQuery: "u=1", RPC: true}, 0, false, nil},
		{"source ip", []policy.HashPolicy{{Header: "x-none"}, {SourceIP: true}}, Request{}, hs(src), true, []string{"source_ip"}},
		{"gRPC header", []policy.HashPolicy{{Header: "X-User"}}, Request{Header: Metadata{"x-user": {"carol"}}, RPC: true}, hs("carol"), true, []string{"header x-user"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHasher(&policy.HashLB{Policies: tt.hash})
			got, ok := h.Hash(&tt.req)
			if got != tt.want || ok != tt.ok {
				t.Errorf("Hash = %#x, %v; want %#x, %v", got, ok, tt.want, tt.ok)
			}
			in := h.Inputs(&tt.req)
			if len(in) != len(tt.inputs) || (len(in) > 0 && in[0] != tt.inputs[0]) || len(in) > 1 && in[1] != tt.inputs[1] {
				t.Errorf("Inputs = %q, want %q", in, tt.inputs)
			}
		})
	}
	if NewHasher(nil) != nil || NewHasher(&policy.HashLB{}) != nil {
		t.Error("NewHasher without policies is not nil")
	}
}

func TestHasherAllocations(t *testing.T) {
	h := NewHasher(&policy.HashLB{Policies: []policy.HashPolicy{{Cookie: "session"}, {Header: "x-user"}, {QueryParameter: "u"}, {SourceIP: true}}})
	req := Request{Header: HTTPHeader{"X-User": {"alice"}, "Cookie": {"a=b; session=abc"}}, RawQuery: "x=1&u=2"}
	if n := testing.AllocsPerRun(100, func() { h.Hash(&req) }); n != 0 {
		t.Errorf("Hash allocates %v times", n)
	}
}

func TestPoolPickHash(t *testing.T) {
	now := time.Now()
	var hosts []*discovery.Host
	for _, a := range []string{"a:1", "b:1", "c:1", "d:1"} {
		hosts = append(hosts, discovery.NewHost(discovery.Endpoint{Address: a}, nil))
	}
	for _, lb := range []string{discovery.RingHash, discovery.Maglev} {
		pk, err := discovery.NewPicker(lb, hosts)
		if err != nil {
			t.Fatal(err)
		}
		p := &Pool{Hosts: hosts, Picker: pk, Hash: pk.(*discovery.HashPicker)}
		for i := range 100 {
			key := discovery.HashString(string(rune('a' + i)))
			first := p.PickHash(key, nil, now)
			if again := p.PickHash(key, nil, now); again != first {
				t.Fatalf("%s: key %d picked %s, then %s", lb, i, first.Address, again.Address)
			}
			retry := p.PickHash(key, first, now)
			if retry == first {
				t.Fatalf("%s: the retry of key %d went to the same %s", lb, i, first.Address)
			}
			if again := p.PickHash(key, first, now); again != retry {
				t.Fatalf("%s: retries of key %d went to %s, then %s", lb, i, retry.Address, again.Address)
			}
			hedge := p.PickAvoidingHash(key, []*discovery.Host{first}, now)
			if hedge != retry {
				t.Fatalf("%s: the hedge of key %d went to %v, want the retry's host %s", lb, i, hedge, retry.Address)
			}
			if h := p.PickAvoidingHash(key, hosts, now); h != nil {
				t.Fatalf("%s: a hedge avoiding every host picked %s", lb, h.Address)
			}
		}
		prev := hosts[0]
		if n := testing.AllocsPerRun(100, func() { p.PickHash(7, prev, now) }); n != 0 {
			t.Errorf("%s: PickHash allocates %v times", lb, n)
		}
	}
}

func BenchmarkHashAndPick(b *testing.B) {
	var hosts []*discovery.Host
	for _, a := range []string{"a:1", "b:1", "c:1", "d:1", "e:1"} {
		hosts = append(hosts, discovery.NewHost(discovery.Endpoint{Address: a}, nil))
	}
	h := NewHasher(&policy.HashLB{Policies: []policy.HashPolicy{{Header: "x-user"}}})
	req := Request{Header: HTTPHeader{"X-User": {"alice@example.com"}}}
	now := time.Now()
	for _, lb := range []string{discovery.RingHash, discovery.Maglev} {
		pk, _ := discovery.NewPicker(lb, hosts)
		p := &Pool{Hosts: hosts, Picker: pk, Hash: pk.(*discovery.HashPicker)}
		b.Run(lb, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				k, _ := h.Hash(&req)
				p.PickHash(k, nil, now)
			}
		})
	}
}

// The pools of a compilation that have the same hosts and balancer share
// one hash picker, and a recompilation with the same endpoints keeps it;
// other endpoints or ring sizes get a new one.
func TestCompileSharesHashPickers(t *testing.T) {
	in, err := telemetry.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Close() })
	env := &Env{Clock: clocktest.NewFake(time.Unix(0, 0)), Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Instr: in}
	compile := func(old *Registry, doc string) (*Destination, *Registry) {
		t.Helper()
		d, err := policy.Parse([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		snap, err := policy.NewSnapshot(d, "test")
		if err != nil {
			t.Fatal(err)
		}
		dests, next := Compile(env, old, snap, discovery.StaticOf(snap))
		return dests["billing"], next
	}
	const doc = `
services:
  billing:
    endpoints: [{address: "10.0.0.1:80"}, {address: "10.0.0.2:80"}]
    load_balancer: maglev
    hash: [{header: x-user}]
    routes: [{name: a, match: {path_prefix: /a}}, {name: b}, {name: c, ring_hash: {minimum_ring_size: 8}, load_balancer: ring_hash}]
`
	d1, reg := compile(NewRegistry(), doc)
	a, b, c := d1.Routes[0].All.Hash, d1.Routes[1].All.Hash, d1.Routes[2].All.Hash
	if a == nil || a != b {
		t.Fatalf("routes a and b have pickers %p and %p, want one", a, b)
	}
	if c == nil || c == a || c.LoadBalancer() != discovery.RingHash || c.Size() != 8 {
		t.Fatalf("route c's picker %p (%v) should be its own 8-point ring", c, c)
	}
	if d1.Routes[0].Hash == nil {
		t.Fatal("route a has no hasher")
	}
	d2, reg := compile(reg, doc)
	if d2.Routes[0].All.Hash != a || d2.Routes[2].All.Hash != c {
		t.Error("a recompilation with the same endpoints built new pickers")
	}
	d3, _ := compile(reg, strings.Replace(doc, "10.0.0.2:80", "10.0.0.3:80", 1))
	if d3.Routes[0].All.Hash == a {
		t.Error("other endpoints kept the old picker")
	}
}
