package consul

import (
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/policy"
)

// answer is a KV list answer of n service keys under prefix "inmesh", the
// key of service 0 at modify index 1+v.
func answer(n, v int) api.KVPairs {
	pairs := api.KVPairs{
		{Key: "inmesh/", ModifyIndex: 1},
		{Key: "inmesh/mesh", Value: []byte("egress: allow"), ModifyIndex: 1},
		{Key: "inmesh/defaults", Value: []byte("timeout: 2s"), ModifyIndex: 1},
	}
	for i := range n {
		p := &api.KVPair{Key: fmt.Sprintf("inmesh/services/svc-%d", i), Value: []byte("timeout: 1s"), ModifyIndex: 1}
		if i == 0 {
			p.Value, p.ModifyIndex = fmt.Appendf(nil, "timeout: %dms", 100+v), uint64(1+v)
		}
		pairs = append(pairs, p)
	}
	return pairs
}

// testEntries returns a configEntries over a KV watch fed by hand, with a
// hub that knows no chain yet.
func testEntries() *configEntries {
	kv := newKVWatch(&api.Client{}, "inmesh", nil, nil)
	kv.unresolved = true
	h := &entryHub{chains: map[string]*chainPolicy{}, timeouts: map[string]time.Duration{}, subsets: map[string]map[string]compiledSubset{},
		found: map[string]bool{}}
	return &configEntries{hub: h, kv: kv, log: orDefault(nil), watched: map[string]*chainReady{}, present: map[string]*chainReady{}, selfKnown: true}
}

// feed applies an answer to c's KV watch and builds c's snapshot.
func (c *configEntries) feed(t *testing.T, pairs api.KVPairs, index uint64) *policy.Snapshot {
	t.Helper()
	c.kv.apply(pairs, index, func(ev policy.Event) {
		if ev.Err != nil {
			t.Fatal(ev.Err)
		}
		c.kvSnap = ev.Snapshot
	})
	snap, errs, _ := c.buildLocked()
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if snap == nil {
		t.Fatal("no snapshot built")
	}
	return snap
}

// A write of one key rebuilds that service alone: every other service
// keeps its resolved view, pointer for pointer, including one whose block
// is merged with its chain and one the KV policy has no block for; a
// changed chain gives a new view, and the view the last snapshot holds
// keeps its provenance.
func TestBuildKeepsUnchangedServices(t *testing.T) {
	c := testEntries()
	h := c.hub
	c.watched["dest"] = &chainReady{ch: make(chan struct{})}
	chain := &chainPolicy{block: policy.Service{Settings: policy.Settings{Timeout: policy.Duration(5e9)}},
		from: map[string]string{partTimeout: "service-router/dest"}}
	h.chains["dest"] = chain
	h.found["found"] = true

	pairs := append(answer(30, 0), &api.KVPair{Key: "inmesh/services/dest", Value: []byte("retry: {attempts: 2}"), ModifyIndex: 1})
	first := c.feed(t, pairs, 10)
	pairs2 := append(answer(30, 1), pairs[len(pairs)-1])
	second := c.feed(t, pairs2, 11)
	for name, rs := range second.Services {
		if reused := rs == first.Services[name]; reused != (name != "svc-0") {
			t.Errorf("%s: view reused = %v", name, reused)
		}
	}
	if got := second.Services["svc-0"].Effective.Timeout; got != 101e6 {
		t.Errorf("svc-0 timeout %v", got)
	}
	dest := second.Services["dest"]
	if dest.Effective.Timeout != 5e9 || dest.Effective.Attempts != 2 || dest.Provenance[partTimeout] != "service-router/dest" {
		t.Errorf("dest: %+v", dest)
	}
	if second.Services["found"] == nil {
		t.Error("found: no view")
	}

	// The chain changes: dest gets a new view; the last one is left as
	// it was.
	h.chains["dest"] = &chainPolicy{block: policy.Service{Settings: policy.Settings{ConnectTimeout: policy.Duration(1e9)}},
		from: map[string]string{partConnectTimeout: "service-resolver/dest"}}
	third := c.feed(t, pairs2, 11)
	if third.Services["dest"] == dest || third.Services["svc-1"] != first.Services["svc-1"] {
		t.Error("a changed chain: dest reused, or svc-1 not")
	}
	if !maps.Equal(dest.Provenance, map[string]string{partTimeout: "service-router/dest"}) {
		t.Errorf("the view in force changed: %v", dest.Provenance)
	}
	if p := third.Services["dest"].Provenance; !maps.Equal(p, map[string]string{partConnectTimeout: "service-resolver/dest"}) {
		t.Errorf("the new view's provenance: %v", p)
	}
}

// Applying an answer costs allocations that do not grow with its keys
// when the keys are unchanged.
func TestKVApplyAllocations(t *testing.T) {
	allocs := func(n int) float64 {
		c := testEntries()
		pairs := answer(n, 0)
		emit := func(ev policy.Event) {
			if ev.Err != nil {
				t.Fatal(ev.Err)
			}
		}
		c.kv.apply(pairs, 1, emit)
		return testing.AllocsPerRun(20, func() { c.kv.apply(pairs, 2, emit) })
	}
	small, large := allocs(10), allocs(200)
	if large > small+8 { // Assemble's copy of the services map grows by a few allocations
		t.Errorf("apply: %v allocations for 10 keys, %v for 200", small, large)
	}
}

// BenchmarkKVWrite applies a KV answer of 500 service keys of which one
// changed, and builds the snapshot of it, as a mesh does at each write:
// kvWatch.apply, then configEntries.buildLocked, with one followed chain.
func BenchmarkKVWrite(b *testing.B) {
	c := testEntries()
	c.watched["dest"] = &chainReady{ch: make(chan struct{})}
	c.hub.chains["dest"] = &chainPolicy{block: policy.Service{Settings: policy.Settings{Timeout: policy.Duration(5e9)}},
		from: map[string]string{partTimeout: "service-router/dest"}}
	emit := func(ev policy.Event) {
		if ev.Err != nil {
			b.Fatal(ev.Err)
		}
		c.kvSnap = ev.Snapshot
	}
	answers := [2]api.KVPairs{answer(500, 1), answer(500, 2)}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c.kv.apply(answers[i%2], uint64(10+i), emit)
		if snap, errs, _ := c.buildLocked(); snap == nil || len(errs) > 0 {
			b.Fatal("no snapshot", errs)
		}
	}
}

// An unchanged key keeps its parsed block; a key whose value changed
// under the same ModifyIndex, as a restored Consul that starts its
// indexes again writes it, is parsed again, whatever else it shares with
// the last value; a key the answer lacks is dropped.
func TestKVParseOnChange(t *testing.T) {
	const key = "inmesh/services/svc-0"
	tests := []struct {
		name   string
		pair   api.KVPair
		reused bool
	}{
		{"the same", api.KVPair{Value: []byte("timeout: 101ms"), ModifyIndex: 2, CreateIndex: 1}, true},
		{"a value of the same length", api.KVPair{Value: []byte("timeout: 102ms"), ModifyIndex: 2, CreateIndex: 1}, false},
		{"a longer value", api.KVPair{Value: []byte("timeout: 1010ms"), ModifyIndex: 2, CreateIndex: 1}, false},
		{"another create index", api.KVPair{Value: []byte("timeout: 101ms"), ModifyIndex: 2, CreateIndex: 2}, false},
		{"another modify index", api.KVPair{Value: []byte("timeout: 101ms"), ModifyIndex: 3, CreateIndex: 1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testEntries()
			pairs := answer(3, 1)
			pairs[3].CreateIndex = 1
			c.feed(t, pairs, 10)
			before := c.kv.keys[key].block
			next := answer(3, 1)
			p := tt.pair
			p.Key = key
			next[3] = &p
			c.kv.apply(next, 11, func(ev policy.Event) { c.kvSnap = ev.Snapshot })
			if _, errs, _ := c.buildLocked(); len(errs) > 0 {
				t.Fatal(errs)
			}
			snap := c.prevSnap // nil from buildLocked when the same
			after := c.kv.keys[key].block
			if (after == before) != tt.reused {
				t.Errorf("block reused = %v", after == before)
			}
			want, err := policy.ParseService(p.Value, "services.svc-0")
			if err != nil {
				t.Fatal(err)
			}
			if got := snap.Services["svc-0"].Effective.Timeout; got != time.Duration(want.Timeout) {
				t.Errorf("timeout %v; want %v", got, want.Timeout)
			}
			// A key removed from the answer is dropped.
			c.feed(t, next[:len(next)-1], 12)
			if _, ok := c.kv.keys["inmesh/services/svc-2"]; ok || len(c.kv.keys) != 4 {
				t.Errorf("keys after a deletion: %d", len(c.kv.keys))
			}
		})
	}
}
