package consul

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/policy"
)

// SubsetLabel is the label the endpoint source gives, with the value
// "true", to each instance of a service that belongs to the
// service-resolver subset called subset (its Filter holds for the instance
// and, with OnlyPassing, every check of the instance passes). The policy
// translated from a discovery chain selects the subset by this label.
func SubsetLabel(subset string) string { return "consul.subset/" + subset }

// The parts of a destination's policy that config entries decide, as the
// keys of ResolvedService.Provenance.
const (
	partRoutes         = "routes"
	partSplit          = "split"
	partSubsets        = "subsets"
	partTimeout        = "timeout"
	partRetry          = "retry"
	partConnectTimeout = "connect_timeout"
	partLoadBalancer   = "load_balancer"
	partFailover       = "failover"
	partConcurrency    = "concurrency"
	partOutlier        = "outlier_detection"
)

// chainPolicy is what config entries say about one destination, in the
// terms of the policy: the part of its block they decide, and which entry
// decided each part.
type chainPolicy struct {
	// block holds only what the entries say; nil fields are silent.
	block policy.Service
	// from maps a part (partRoutes, ...) to the config entry that decided
	// it ("service-router/billing").
	from map[string]string
	// subsets holds the resolver subsets of every service the chain's
	// targets name: service -> subset -> definition. The endpoint source
	// labels the instances by them (SubsetLabel).
	subsets map[string]map[string]api.ServiceResolverSubset
}

// speaks reports whether the entries say anything about the destination.
func (c *chainPolicy) speaks() bool { return c != nil && len(c.from) > 0 }

// translateChain turns the compiled discovery chain of service into a
// chainPolicy. A default chain (no router, splitter or resolver entry)
// says nothing. Subsets of another service (a redirect, a split or a
// failover to it) are returned in subsets, for that service's block.
func translateChain(service string, chain *api.CompiledDiscoveryChain) *chainPolicy {
	cp := &chainPolicy{from: map[string]string{}, subsets: map[string]map[string]api.ServiceResolverSubset{}}
	if chain == nil || chain.Nodes == nil {
		return cp
	}
	t := translator{service: service, chain: chain, cp: cp}
	start := chain.Nodes[chain.StartNode]
	if start == nil {
		return cp
	}
	switch start.Type {
	case api.DiscoveryGraphNodeTypeRouter:
		cp.block.Routes = t.routes(start)
		cp.from[partRoutes] = "service-router/" + t.entryName(start)
	case api.DiscoveryGraphNodeTypeSplitter:
		split, _ := t.split(chain.StartNode, 10000)
		name := "service-splitter/" + t.entryName(start)
		cp.block.Routes = []policy.Route{{Name: name, Split: split}}
		cp.from[partRoutes] = name
		cp.from[partSplit] = name
	case api.DiscoveryGraphNodeTypeResolver:
		if start.Resolver == nil {
			return cp
		}
		if start.Resolver.Default && t.targetService(start.Resolver.Target) == service {
			return cp // a default chain: nothing to say
		}
		// A resolver of its own, or the (default) resolver of the service
		// another service's resolver redirects to.
		split, _ := t.split(chain.StartNode, 10000)
		if len(split) > 0 {
			name := "service-resolver/" + service
			cp.block.Routes = []policy.Route{{Name: name, Split: split}}
			cp.from[partRoutes] = name
		}
	}
	t.serviceSettings()
	if len(cp.block.Subsets) > 0 {
		cp.from[partSubsets] = "service-resolver/" + service
	}
	return cp
}

type translator struct {
	service string
	chain   *api.CompiledDiscoveryChain
	cp      *chainPolicy
}

// entryName is the name of the config entry of a router or splitter node,
// whose name is the service's qualified by namespace, partition and
// datacenter.
func (t *translator) entryName(node *api.DiscoveryGraphNode) string {
	if node.Name == t.chain.ServiceName || strings.HasPrefix(node.Name, t.chain.ServiceName+".") {
		return t.chain.ServiceName
	}
	name, _, _ := strings.Cut(node.Name, ".")
	return name
}

// routes translates the routes of a router node.
func (t *translator) routes(node *api.DiscoveryGraphNode) []policy.Route {
	out := make([]policy.Route, 0, len(node.Routes))
	for i, r := range node.Routes {
		route := policy.Route{Name: fmt.Sprintf("service-router/%s/%d", t.entryName(node), i)}
		if r.Definition != nil {
			if m := r.Definition.Match; m != nil && m.HTTP != nil {
				route.Match = matchOf(m.HTTP)
			}
			if d := r.Definition.Destination; d != nil {
				route.PrefixRewrite = d.PrefixRewrite
				if h := d.RequestHeaders; h != nil && (len(h.Add) > 0 || len(h.Set) > 0 || len(h.Remove) > 0) {
					route.RequestHeaders = &policy.HeaderMutation{Add: maps.Clone(h.Add), Set: maps.Clone(h.Set), Remove: slices.Clone(h.Remove)}
				}
				route.Timeout = policy.Duration(d.RequestTimeout)
				route.Retry = retryOf(d)
				if route.Timeout != 0 {
					t.cp.from[partTimeout] = "service-router/" + t.entryName(node)
				}
				if route.Retry != nil {
					t.cp.from[partRetry] = "service-router/" + t.entryName(node)
				}
			}
		}
		split, fromSplitter := t.split(r.NextNode, 10000)
		route.Split = split
		if fromSplitter != "" {
			t.cp.from[partSplit] = fromSplitter
		}
		out = append(out, route)
	}
	return out
}

// split returns the split entries reached from the node called name, with
// weights scaled to scale (10000 is 100%: Consul's weights have two
// decimals), and the splitter that decided it ("" when none). A split of
// one entry that is every endpoint of the destination is no split at all
// (nil).
func (t *translator) split(name string, scale float64) ([]policy.WeightedSubset, string) {
	var out []policy.WeightedSubset
	splitter := ""
	var walk func(name string, scale float64)
	walk = func(name string, scale float64) {
		node := t.chain.Nodes[name]
		if node == nil {
			return
		}
		switch node.Type {
		case api.DiscoveryGraphNodeTypeSplitter:
			if splitter == "" {
				splitter = "service-splitter/" + t.entryName(node)
			}
			for _, s := range node.Splits {
				walk(s.NextNode, scale*float64(s.Weight)/100)
			}
		case api.DiscoveryGraphNodeTypeResolver:
			if node.Resolver == nil {
				return
			}
			ws := t.entry(node.Resolver.Target)
			ws.Weight = int(math.Round(scale))
			if f := node.Resolver.Failover; f != nil {
				for _, id := range f.Targets {
					tg := t.entry(id)
					ws.Failover = append(ws.Failover, policy.Target{Service: tg.Service, Subset: tg.Subset})
				}
				if len(ws.Failover) > 0 {
					t.cp.from[partFailover] = "service-resolver/" + t.targetService(node.Resolver.Target)
				}
			}
			// Two paths to one target add up (a split entry appears once).
			if i := slices.IndexFunc(out, func(o policy.WeightedSubset) bool {
				return o.Service == ws.Service && o.Subset == ws.Subset
			}); i >= 0 {
				out[i].Weight += ws.Weight
				return
			}
			out = append(out, ws)
		}
	}
	walk(name, scale)
	if len(out) == 1 && out[0].Service == "" && out[0].Subset == "" && len(out[0].Failover) == 0 {
		return nil, splitter
	}
	return out, splitter
}

// entry is the split entry of a target: its service when it is not the
// destination, its subset, whose definition it records.
func (t *translator) entry(id string) policy.WeightedSubset {
	tg := t.chain.Targets[id]
	if tg == nil {
		return policy.WeightedSubset{}
	}
	var ws policy.WeightedSubset
	if tg.Service != t.service {
		ws.Service = tg.Service
	}
	if tg.ServiceSubset != "" {
		ws.Subset = tg.ServiceSubset
		if t.cp.subsets[tg.Service] == nil {
			t.cp.subsets[tg.Service] = map[string]api.ServiceResolverSubset{}
		}
		t.cp.subsets[tg.Service][tg.ServiceSubset] = tg.Subset
		if tg.Service == t.service {
			if t.cp.block.Subsets == nil {
				t.cp.block.Subsets = map[string]map[string]string{}
			}
			t.cp.block.Subsets[tg.ServiceSubset] = map[string]string{SubsetLabel(tg.ServiceSubset): "true"}
		}
	}
	return ws
}

func (t *translator) targetService(id string) string {
	if tg := t.chain.Targets[id]; tg != nil {
		return tg.Service
	}
	return t.service
}

// serviceSettings sets the destination's connect timeout and load
// balancer from its own resolver: the resolver node of a target of the
// destination, when it is not the default resolver.
func (t *translator) serviceSettings() {
	for _, name := range slices.Sorted(maps.Keys(t.chain.Nodes)) {
		node := t.chain.Nodes[name]
		if node.Type != api.DiscoveryGraphNodeTypeResolver || node.Resolver == nil || node.Resolver.Default {
			continue
		}
		if t.targetService(node.Resolver.Target) != t.service {
			continue
		}
		from := "service-resolver/" + t.service
		if d := node.Resolver.ConnectTimeout; d > 0 {
			t.cp.block.ConnectTimeout = policy.Duration(d)
			t.cp.from[partConnectTimeout] = from
		}
		if lb := node.LoadBalancer; lb != nil && (lb.Policy != "" || len(lb.HashPolicies) > 0) {
			setLoadBalancer(&t.cp.block.Settings, lb)
			t.cp.from[partLoadBalancer] = from
		}
		return
	}
}

// setLoadBalancer translates a resolver's LoadBalancer.
func setLoadBalancer(s *policy.Settings, lb *api.LoadBalancer) {
	s.LoadBalancer = lb.Policy
	if rh := lb.RingHashConfig; rh != nil && (rh.MinimumRingSize > 0 || rh.MaximumRingSize > 0) {
		s.RingHash = &policy.RingHash{MinimumRingSize: clampInt(rh.MinimumRingSize), MaximumRingSize: clampInt(rh.MaximumRingSize)}
	}
	for _, h := range lb.HashPolicies {
		hp := policy.HashPolicy{SourceIP: h.SourceIP, Terminal: h.Terminal}
		switch h.Field {
		case "header":
			hp.Header = h.FieldValue
		case "cookie":
			hp.Cookie = h.FieldValue
		case "query_parameter":
			hp.QueryParameter = h.FieldValue
		}
		s.Hash = append(s.Hash, hp)
	}
}

func clampInt(v uint64) int {
	if v > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(v)
}

// matchOf translates a service-router route's HTTP match.
func matchOf(m *api.ServiceRouteHTTPMatch) policy.Match {
	out := policy.Match{PathExact: m.PathExact, PathPrefix: m.PathPrefix, PathRegex: m.PathRegex, Methods: slices.Clone(m.Methods)}
	for _, h := range m.Header {
		out.Header = append(out.Header, policy.HeaderMatch{Name: h.Name, Present: h.Present, Exact: h.Exact,
			Prefix: h.Prefix, Suffix: h.Suffix, Regex: h.Regex, Invert: h.Invert})
	}
	for _, q := range m.QueryParam {
		out.QueryParam = append(out.QueryParam, policy.QueryParamMatch{Name: q.Name, Present: q.Present, Exact: q.Exact, Regex: q.Regex})
	}
	return out
}

// maxAttempts is the policy's bound on retry.attempts.
const maxAttempts = 10

// retryOf translates a route destination's retries: NumRetries+1 attempts
// (Envoy's default of one retry when only conditions are given), on a
// connect failure with RetryOnConnectFailure, on the RetryOnStatusCodes,
// and on the RetryOn conditions the policy has a name for. With retries
// but nothing to retry on, nothing is retried, as with Envoy. nil: the
// route says nothing about retries.
func retryOf(d *api.ServiceRouteDestination) *policy.Retry {
	if d.NumRetries == 0 && !d.RetryOnConnectFailure && len(d.RetryOnStatusCodes) == 0 && len(d.RetryOn) == 0 {
		return nil
	}
	attempts := 2 // Envoy retries once when the count is not given
	if d.NumRetries > 0 {
		attempts = int(min(d.NumRetries, maxAttempts-1)) + 1
	}
	on := []string{}
	add := func(name string) {
		if !slices.Contains(on, name) {
			on = append(on, name)
		}
	}
	if d.RetryOnConnectFailure {
		add("connect-failure")
	}
	for _, code := range d.RetryOnStatusCodes {
		if code >= 100 && code <= 599 {
			add(strconv.FormatUint(uint64(code), 10))
		}
	}
	for _, name := range d.RetryOn {
		if mapped, ok := retryOnNames[name]; ok && mapped != "" {
			add(mapped)
		}
	}
	return &policy.Retry{Attempts: attempts, RetryOn: on}
}

// retryOnNames maps Consul's (Envoy's) RetryOn conditions to the policy's
// retry_on names; "" marks the conditions the policy has no equivalent for
// (refused-stream, envoy-ratelimited, retriable-headers), which are
// dropped, and retriable-status-codes, which RetryOnStatusCodes gives.
var retryOnNames = map[string]string{
	"5xx":                    "5xx",
	"gateway-error":          "gateway-error",
	"reset":                  "reset",
	"connect-failure":        "connect-failure",
	"retriable-4xx":          "retriable-4xx",
	"refused-stream":         "",
	"envoy-ratelimited":      "",
	"retriable-status-codes": "",
	"retriable-headers":      "",
	"cancelled":              "cancelled",
	"deadline-exceeded":      "deadline-exceeded",
	"internal":               "internal",
	"resource-exhausted":     "resource-exhausted",
	"unavailable":            "unavailable",
}

// upstreamOf returns what this workload's service-defaults entry says
// about its calls to service: UpstreamConfig.Overrides for service, else
// UpstreamConfig.Defaults. Limits.MaxConcurrentRequests becomes
// concurrency.max; PassiveHealthCheck becomes outlier_detection
// (MaxFailures, BaseEjectionTime, MaxEjectionPercent; its Interval has no
// equivalent, since ejection counts consecutive failures as they happen).
func upstreamOf(self *api.ServiceConfigEntry, service string, cp *chainPolicy) {
	if self == nil || self.UpstreamConfig == nil {
		return
	}
	uc := self.UpstreamConfig.Defaults
	where := "service-defaults/" + self.Name + " upstream defaults"
	for _, o := range self.UpstreamConfig.Overrides {
		if o != nil && o.Name == service {
			uc, where = o, "service-defaults/"+self.Name+" upstream "+service
			break
		}
	}
	if uc == nil {
		return
	}
	if l := uc.Limits; l != nil && l.MaxConcurrentRequests != nil && *l.MaxConcurrentRequests > 0 {
		cp.block.Concurrency = &policy.Concurrency{Max: *l.MaxConcurrentRequests}
		cp.from[partConcurrency] = where
	}
	if p := uc.PassiveHealthCheck; p != nil && p.MaxFailures > 0 {
		od := &policy.OutlierDetection{ConsecutiveFailures: int(min(p.MaxFailures, math.MaxInt32))}
		if p.BaseEjectionTime != nil && *p.BaseEjectionTime > 0 {
			od.BaseEjection = policy.Duration(min(*p.BaseEjectionTime, 365*24*time.Hour))
		}
		if p.MaxEjectionPercent != nil {
			od.MaxEjectionPercent = int(min(*p.MaxEjectionPercent, 100))
		}
		cp.block.OutlierDetection = od
		cp.from[partOutlier] = where
	}
}

// merge returns the block of service in force: kv (the inmesh KV block,
// nil when none) where the config entries of cp are silent, the entries
// where they speak, and the KV fields they shadow, by path. kv is not
// modified.
func merge(service string, kv *policy.Service, cp *chainPolicy) (*policy.Service, []string) {
	var out policy.Service
	if kv != nil {
		out = *kv
	}
	if !cp.speaks() {
		return &out, nil
	}
	var shadowed []string
	path := policy.ServicePath(service)
	shadow := func(field, part string) {
		shadowed = append(shadowed, fmt.Sprintf("%s.%s (%s)", path, field, cp.from[part]))
	}
	b := &cp.block
	if b.Routes != nil {
		if len(out.Routes) > 0 {
			shadow("routes", partRoutes)
		}
		out.Routes = b.Routes
	}
	if len(b.Subsets) > 0 {
		subsets := maps.Clone(out.Subsets)
		if subsets == nil {
			subsets = map[string]map[string]string{}
		}
		for name, sel := range b.Subsets {
			if _, ok := subsets[name]; ok {
				shadow("subsets."+name, partSubsets)
			}
			subsets[name] = sel
		}
		out.Subsets = subsets
	}
	if b.Timeout != 0 {
		if out.Timeout != 0 {
			shadow("timeout", partTimeout)
		}
		out.Timeout = b.Timeout
	}
	if b.ConnectTimeout != 0 {
		if out.ConnectTimeout != 0 {
			shadow("connect_timeout", partConnectTimeout)
		}
		out.ConnectTimeout = b.ConnectTimeout
	}
	if _, ok := cp.from[partLoadBalancer]; ok {
		if out.LoadBalancer != "" || out.Hash != nil || out.RingHash != nil {
			shadow("load_balancer", partLoadBalancer)
		}
		out.LoadBalancer, out.Hash, out.RingHash = b.LoadBalancer, b.Hash, b.RingHash
	}
	if b.Concurrency != nil {
		c := &policy.Concurrency{Max: b.Concurrency.Max}
		if kv != nil && kv.Concurrency != nil {
			c.MaxWait = kv.Concurrency.MaxWait // entries have no wait
			if kv.Concurrency.Max != 0 || kv.Concurrency.Adaptive != nil {
				shadow("concurrency", partConcurrency)
			}
		}
		out.Concurrency = c
	}
	if b.OutlierDetection != nil {
		if out.OutlierDetection != nil {
			shadow("outlier_detection", partOutlier)
		}
		out.OutlierDetection = b.OutlierDetection
	}
	return &out, shadowed
}

// Shadowed returns the fields of doc's service blocks that Consul's config
// entries override, by path, each with the entry that overrides it
// ("services.billing.routes (service-router/billing)"), as a mesh of the
// service self would apply them: the compiled discovery chain of each
// service of doc, and self's service-defaults UpstreamConfig ("" for
// none). `inmesh validate --consul` warns with them.
func Shadowed(ctx context.Context, client *api.Client, doc *policy.Document, self string) ([]string, error) {
	if client == nil {
		return nil, errNoClient
	}
	if doc == nil {
		return nil, nil
	}
	q := (&api.QueryOptions{}).WithContext(ctx)
	var selfDefaults *api.ServiceConfigEntry
	if self != "" {
		e, _, err := client.ConfigEntries().Get(api.ServiceDefaults, self, q)
		var se api.StatusError
		switch {
		case errors.As(err, &se) && se.Code == http.StatusNotFound:
		case err != nil:
			return nil, fmt.Errorf("consul: reading service-defaults/%s: %w", self, err)
		default:
			selfDefaults, _ = e.(*api.ServiceConfigEntry)
		}
	}
	var out []string
	for _, name := range slices.Sorted(maps.Keys(doc.Services)) {
		resp, _, err := client.DiscoveryChain().Get(name, nil, q)
		if err != nil {
			return nil, fmt.Errorf("consul: reading the discovery chain of %s: %w", name, err)
		}
		cp := translateChain(name, resp.Chain)
		if cp.speaks() {
			e, _, err := client.ConfigEntries().Get(api.ServiceResolver, name, q)
			var se api.StatusError
			switch {
			case errors.As(err, &se) && se.Code == http.StatusNotFound:
			case err != nil:
				return nil, fmt.Errorf("consul: reading service-resolver/%s: %w", name, err)
			default:
				if r, ok := e.(*api.ServiceResolverConfigEntry); ok && r.RequestTimeout > 0 {
					cp.block.Timeout = policy.Duration(r.RequestTimeout)
					if _, ok := cp.from[partTimeout]; !ok {
						cp.from[partTimeout] = "service-resolver/" + name
					}
				}
			}
		}
		upstreamOf(selfDefaults, name, cp)
		_, sh := merge(name, doc.Services[name], cp)
		slices.Sort(sh)
		out = append(out, sh...)
	}
	return out, nil
}
