package consul

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/policy"
)

// target is a compiled chain's target of billing (or another service).
func target(service, subset, filter string) *api.DiscoveryTarget {
	return &api.DiscoveryTarget{ID: subset + "." + service + ".default.default.dc1", Service: service, ServiceSubset: subset,
		Subset: api.ServiceResolverSubset{Filter: filter}}
}

func resolverNode(tg *api.DiscoveryTarget, failover ...string) *api.DiscoveryGraphNode {
	n := &api.DiscoveryGraphNode{Type: api.DiscoveryGraphNodeTypeResolver, Name: tg.ID,
		Resolver: &api.DiscoveryResolver{Target: tg.ID, ConnectTimeout: 5 * time.Second}}
	if len(failover) > 0 {
		n.Resolver.Failover = &api.DiscoveryFailover{Targets: failover}
	}
	return n
}

func chainOf(start string, nodes map[string]*api.DiscoveryGraphNode, targets ...*api.DiscoveryTarget) *api.CompiledDiscoveryChain {
	c := &api.CompiledDiscoveryChain{ServiceName: "billing", Namespace: "default", Datacenter: "dc1", Protocol: "http",
		StartNode: start, Nodes: nodes, Targets: map[string]*api.DiscoveryTarget{}}
	for _, tg := range targets {
		c.Targets[tg.ID] = tg
	}
	return c
}

func TestTranslateChain(t *testing.T) {
	v1, v2 := target("billing", "v1", "Service.Meta.version == v1"), target("billing", "v2", "Service.Meta.version == v2")
	all := target("billing", "", "")
	other := target("payments", "blue", "")
	subsets := map[string]map[string]string{
		"v1": {SubsetLabel("v1"): "true"},
		"v2": {SubsetLabel("v2"): "true"},
	}
	for _, tc := range []struct {
		name  string
		chain *api.CompiledDiscoveryChain
		want  policy.Service
		from  map[string]string
	}{
		{
			name: "default chain",
			chain: chainOf("resolver:"+all.ID, map[string]*api.DiscoveryGraphNode{"resolver:" + all.ID: {Type: "resolver", Name: all.ID,
				Resolver: &api.DiscoveryResolver{Default: true, Target: all.ID, ConnectTimeout: 5 * time.Second}}}, all),
			from: map[string]string{},
		},
		{
			name: "splitter 90.5/9.5",
			chain: chainOf("splitter:billing.default.default", map[string]*api.DiscoveryGraphNode{
				"splitter:billing.default.default": {Type: "splitter", Name: "billing.default.default", Splits: []*api.DiscoverySplit{
					{Weight: 90.5, NextNode: "resolver:" + v1.ID}, {Weight: 9.5, NextNode: "resolver:" + v2.ID}}},
				"resolver:" + v1.ID: resolverNode(v1),
				"resolver:" + v2.ID: resolverNode(v2),
			}, v1, v2),
			want: policy.Service{Subsets: subsets, Settings: policy.Settings{ConnectTimeout: policy.Duration(5 * time.Second)},
				Routes: []policy.Route{{Name: "service-splitter/billing", Split: []policy.WeightedSubset{
					{Subset: "v1", Weight: 9050}, {Subset: "v2", Weight: 950}}}}},
			from: map[string]string{"routes": "service-splitter/billing", "split": "service-splitter/billing",
				"subsets": "service-resolver/billing", "connect_timeout": "service-resolver/billing"},
		},
		{
			name: "router with retries, timeout, rewrite, headers; the default route to all endpoints",
			chain: chainOf("router:billing.default.default", map[string]*api.DiscoveryGraphNode{
				"router:billing.default.default": {Type: "router", Name: "billing.default.default", Routes: []*api.DiscoveryRoute{
					{Definition: &api.ServiceRoute{
						Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathRegex: "/a.*", Methods: []string{"GET"},
							Header:     []api.ServiceRouteHTTPMatchHeader{{Name: "x-user", Prefix: "a", Invert: true}},
							QueryParam: []api.ServiceRouteHTTPMatchQueryParam{{Name: "q", Exact: "1"}}}},
						Destination: &api.ServiceRouteDestination{ServiceSubset: "v2", PrefixRewrite: "/b", RequestTimeout: time.Second,
							NumRetries: 2, RetryOnConnectFailure: true, RetryOnStatusCodes: []uint32{503, 429}, RetryOn: []string{"reset", "refused-stream"},
							RequestHeaders: &api.HTTPHeaderModifiers{Set: map[string]string{"x-a": "1"}}}},
						NextNode: "resolver:" + v2.ID},
					{Definition: &api.ServiceRoute{Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathPrefix: "/n"}},
						Destination: &api.ServiceRouteDestination{NumRetries: 3}}, NextNode: "resolver:" + all.ID},
					{Definition: &api.ServiceRoute{Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathPrefix: "/"}},
						Destination: &api.ServiceRouteDestination{Service: "billing"}}, NextNode: "resolver:" + all.ID},
				}},
				"resolver:" + v2.ID:  resolverNode(v2),
				"resolver:" + all.ID: resolverNode(all),
			}, v2, all),
			want: policy.Service{Subsets: map[string]map[string]string{"v2": subsets["v2"]},
				Settings: policy.Settings{ConnectTimeout: policy.Duration(5 * time.Second)},
				Routes: []policy.Route{
					{Name: "service-router/billing/0",
						Match: policy.Match{PathRegex: "/a.*", Methods: []string{"GET"},
							Header:     []policy.HeaderMatch{{Name: "x-user", Prefix: "a", Invert: true}},
							QueryParam: []policy.QueryParamMatch{{Name: "q", Exact: "1"}}},
						Split:          []policy.WeightedSubset{{Subset: "v2", Weight: 10000}},
						PrefixRewrite:  "/b",
						RequestHeaders: &policy.HeaderMutation{Set: map[string]string{"x-a": "1"}},
						Settings: policy.Settings{Timeout: policy.Duration(time.Second),
							Retry: &policy.Retry{Attempts: 3, RetryOn: []string{"connect-failure", "503", "429", "reset"}}}},
					{Name: "service-router/billing/1", Match: policy.Match{PathPrefix: "/n"},
						Settings: policy.Settings{Retry: &policy.Retry{Attempts: 4, RetryOn: []string{}}}},
					{Name: "service-router/billing/2", Match: policy.Match{PathPrefix: "/"}},
				}},
			from: map[string]string{"routes": "service-router/billing", "subsets": "service-resolver/billing",
				"timeout": "service-router/billing", "retry": "service-router/billing", "connect_timeout": "service-resolver/billing"},
		},
		{
			name: "resolver: default subset, failover to another service, hash load balancing",
			chain: func() *api.CompiledDiscoveryChain {
				n := resolverNode(v1, other.ID)
				n.LoadBalancer = &api.LoadBalancer{Policy: "ring_hash", RingHashConfig: &api.RingHashConfig{MinimumRingSize: 64},
					HashPolicies: []api.HashPolicy{{Field: "header", FieldValue: "x-user", Terminal: true}, {SourceIP: true}}}
				return chainOf("resolver:"+v1.ID, map[string]*api.DiscoveryGraphNode{"resolver:" + v1.ID: n}, v1, other)
			}(),
			want: policy.Service{Subsets: map[string]map[string]string{"v1": subsets["v1"]},
				Settings: policy.Settings{ConnectTimeout: policy.Duration(5 * time.Second), LoadBalancer: "ring_hash",
					RingHash: &policy.RingHash{MinimumRingSize: 64},
					Hash:     []policy.HashPolicy{{Header: "x-user", Terminal: true}, {SourceIP: true}}},
				Routes: []policy.Route{{Name: "service-resolver/billing", Split: []policy.WeightedSubset{
					{Subset: "v1", Weight: 10000, Failover: []policy.Target{{Service: "payments", Subset: "blue"}}}}}}},
			from: map[string]string{"routes": "service-resolver/billing", "subsets": "service-resolver/billing", "failover": "service-resolver/billing",
				"connect_timeout": "service-resolver/billing", "load_balancer": "service-resolver/billing"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp := translateChain("billing", tc.chain)
			if !reflect.DeepEqual(cp.block, tc.want) {
				got, _ := json.Marshal(cp.block)
				want, _ := json.Marshal(tc.want)
				t.Fatalf("block\n got %s\nwant %s", got, want)
			}
			if !reflect.DeepEqual(cp.from, tc.from) {
				t.Fatalf("from %v, want %v", cp.from, tc.from)
			}
		})
	}
}

func TestMergePrecedence(t *testing.T) {
	kv := &policy.Service{
		Subsets:     map[string]map[string]string{"v1": {"version": "v1"}, "old": {"version": "old"}},
		Routes:      []policy.Route{{Name: "kv", Split: []policy.WeightedSubset{{Subset: "v1", Weight: 1}}}},
		Settings:    policy.Settings{Retry: &policy.Retry{Budget: &policy.Budget{}}, LoadBalancer: "random", ConnectTimeout: policy.Duration(time.Second)},
		Concurrency: &policy.Concurrency{Adaptive: &policy.AdaptiveConcurrency{}, MaxWait: policy.Duration(time.Second)},
	}
	cp := &chainPolicy{from: map[string]string{"routes": "service-splitter/billing", "subsets": "service-resolver/billing",
		"concurrency": "service-defaults/web upstream billing"}}
	cp.block.Routes = []policy.Route{{Name: "service-splitter/billing"}}
	cp.block.Subsets = map[string]map[string]string{"v1": {SubsetLabel("v1"): "true"}}
	cp.block.Concurrency = &policy.Concurrency{Max: 7}
	got, shadowed := merge("billing", kv, cp)
	if got.Routes[0].Name != "service-splitter/billing" || got.Subsets["v1"][SubsetLabel("v1")] != "true" || got.Subsets["old"] == nil {
		t.Fatalf("routes %v subsets %v", got.Routes, got.Subsets)
	}
	if got.Retry != kv.Retry || got.LoadBalancer != "random" || got.ConnectTimeout != policy.Duration(time.Second) {
		t.Fatalf("the KV's own fields: %+v", got.Settings)
	}
	if *got.Concurrency != (policy.Concurrency{Max: 7, MaxWait: policy.Duration(time.Second)}) {
		t.Fatalf("concurrency %+v", got.Concurrency)
	}
	want := []string{"services.billing.routes (service-splitter/billing)", "services.billing.subsets.v1 (service-resolver/billing)",
		"services.billing.concurrency (service-defaults/web upstream billing)"}
	if !reflect.DeepEqual(shadowed, want) {
		t.Fatalf("shadowed %q", shadowed)
	}
	if kv.Routes[0].Name != "kv" || kv.Subsets["v1"]["version"] != "v1" {
		t.Fatal("merge modified the KV block")
	}
}

func TestSubsetFilter(t *testing.T) {
	e := &api.ServiceEntry{Node: &api.Node{Node: "n1", Meta: map[string]string{"zone": "a"}},
		Service: &api.AgentService{Service: "billing", Tags: []string{"canary"}, Meta: map[string]string{"version": "v2"}}}
	h := &entryHub{subsets: map[string]map[string]compiledSubset{}, log: nil}
	cp := &chainPolicy{subsets: map[string]map[string]api.ServiceResolverSubset{"billing": {
		"v2":      {Filter: `Service.Meta.version == v2`},
		"v1":      {Filter: `Service.Meta.version == v1`},
		"canary":  {Filter: `"canary" in Service.Tags and Node.Meta.zone != b`},
		"passing": {OnlyPassing: true},
		"any":     {},
	}}}
	h.chains = map[string]*chainPolicy{}
	h.subs = map[*configEntries]bool{}
	h.setChain("billing", cp, 0)
	for _, tc := range []struct {
		status string
		want   map[string]string
	}{
		{api.HealthPassing, map[string]string{SubsetLabel("v2"): "true", SubsetLabel("canary"): "true", SubsetLabel("passing"): "true", SubsetLabel("any"): "true"}},
		{api.HealthWarning, map[string]string{SubsetLabel("v2"): "true", SubsetLabel("canary"): "true", SubsetLabel("any"): "true"}},
	} {
		if got := h.subsetLabels("billing", e, tc.status); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.status, got, tc.want)
		}
	}
}
