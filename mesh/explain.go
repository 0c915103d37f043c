package mesh

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/policy"
)

// WeightedSubset is one entry of a route's split.
type WeightedSubset = policy.WeightedSubset

// Explanation says what the mesh would do with a request, without sending
// it: the route that matches, the split, the endpoints the route may use,
// the deadlines and retries, the breaker's state and the TLS mode, under
// which policy version.
type Explanation struct {
	Service       string           `json:"service"`
	Protocol      string           `json:"protocol"`              // http, or grpc for a request explained as an RPC
	Passthrough   bool             `json:"passthrough,omitempty"` // the host is no service of the policy: sent untouched
	Egress        string           `json:"egress,omitempty"`      // for a host that is no service: the policy's egress, allow or deny
	Route         string           `json:"route"`
	Split         []WeightedSubset `json:"split"`
	Endpoints     []string         `json:"endpoints"` // host:port, " (ejected)" appended to ejected ones
	Hosts         []EndpointState  `json:"hosts"`     // the same endpoints with their subsets and live state
	Timeout       time.Duration    `json:"timeout"`   // whole call; 0 means only the caller's context
	PerTryTimeout time.Duration    `json:"per_try_timeout"`
	Attempts      int              `json:"attempts"` // for this request: 1 when its method or body forbids retries (never for an RPC)
	RetryOn       []string         `json:"retry_on"`
	LoadBalancer  string           `json:"load_balancer"`
	Breaker       string           `json:"breaker"` // closed, open or half-open; closed when no breaker is configured (see HasBreaker)
	HasBreaker    bool             `json:"has_breaker"`
	TLS           string           `json:"tls"` // strict or disable
	// The protections in force for this request (nil when off): this
	// process's concurrency limit toward the service, the route's hedging
	// and fault injection, and the rate limit the service's own mesh puts
	// on its callers.
	Concurrency *ConcurrencyState `json:"concurrency,omitempty"`
	Hedge       *policy.Hedge     `json:"hedge,omitempty"`
	Fault       *policy.Fault     `json:"fault,omitempty"`
	RateLimit   *policy.RateLimit `json:"rate_limit,omitempty"`
	// Authorization is what the destination's authorization block, as
	// this policy has it, decides for this caller: "allowed by rules[0]",
	// "denied by deny[0] (deny 0)", with " (mode audit: logged, let
	// through)" under audit. "" when a control plane decides instead (with
	// Consul, its intentions).
	Authorization string `json:"authorization,omitempty"`
	PolicyVersion string `json:"policy_version"`
	Layer         Layer  `json:"layer,omitempty"` // set when the mesh would fail the request
	Error         string `json:"error,omitempty"`
}

// explanationJSON is an Explanation as JSON: its fields, with the
// durations shadowed by policy.Duration, which writes and reads them as Go
// duration strings ("250ms") rather than nanoseconds.
type explanationJSON struct {
	plainExplanation
	Timeout       policy.Duration `json:"timeout"`
	PerTryTimeout policy.Duration `json:"per_try_timeout"`
}

// plainExplanation has Explanation's fields without its JSON methods.
type plainExplanation Explanation

// MarshalJSON writes e with its durations as Go duration strings.
func (e Explanation) MarshalJSON() ([]byte, error) {
	return json.Marshal(explanationJSON{plainExplanation(e), policy.Duration(e.Timeout), policy.Duration(e.PerTryTimeout)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (e *Explanation) UnmarshalJSON(b []byte) error {
	var v explanationJSON
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*e = Explanation(v.plainExplanation)
	e.Timeout, e.PerTryTimeout = v.Timeout.Std(), v.PerTryTimeout.Std()
	return nil
}

// ConcurrencyState is a concurrency limit toward a destination, as
// Explain and the admin handler show it: the policy's block and the
// limiter's live state.
type ConcurrencyState struct {
	Max      int                         `json:"max,omitempty"`      // the fixed limit
	Adaptive *policy.AdaptiveConcurrency `json:"adaptive,omitempty"` // the bounds of a learned limit
	MaxWait  policy.Duration             `json:"max_wait"`           // how long a call may queue; 0: refused at once
	Limit    int                         `json:"limit"`              // the limit now (for adaptive, what it learned)
	InFlight int                         `json:"in_flight"`          // attempts holding a slot now
	Waiting  int                         `json:"waiting"`            // calls queued for a slot now
	Shed     int64                       `json:"shed"`               // attempts refused so far (layer overload)
}

// EndpointState is one endpoint as the admin page and Explain show it.
type EndpointState struct {
	Address      string            `json:"address"`
	Labels       map[string]string `json:"labels,omitempty"`
	Subsets      []string          `json:"subsets,omitempty"`
	Ejected      bool              `json:"ejected"`
	EjectedUntil *time.Time        `json:"ejected_until,omitempty"`
	InFlight     int64             `json:"in_flight"`
}

// Explain says what the mesh would do with req, without sending it. A
// request the mesh would fail before sending (no route, no endpoints, a
// known service without a valid policy, an outside host under egress: deny)
// returns the Explanation, filled as far as the mesh got, together with the
// *CallError the call would return. Explain does not modify req.
//
// A request whose Content-Type is application/grpc (or application/grpc+...)
// or whose URL scheme is "grpc" is explained as a gRPC call through
// meshgrpc.DialOptions: the URL path is the full method
// ("grpc://billing/billing.Billing/Charge"), the headers are its metadata,
// every RPC is retried up to the route's attempts, and TLS is the service's
// mode, which gRPC connections share.
func (m *Mesh) Explain(req *http.Request) (*Explanation, error) {
	if req == nil || req.URL == nil {
		return nil, errors.New("mesh: Explain needs a request with a URL")
	}
	st := m.state.Load()
	name := core.ServiceOf(req.URL.Host)
	rpc := isRPC(req)
	ex := &Explanation{Service: name, Protocol: "http", PolicyVersion: st.policy.Version}
	if rpc {
		ex.Protocol = "grpc"
	}
	d := st.services[name]
	if d == nil {
		if _, known := st.policy.Rejected[name]; !known {
			ex.Egress = policy.EgressAllow
			if st.egressDeny {
				ex.Egress = policy.EgressDeny
			}
		}
		if ce := st.outside(name); ce != nil {
			ex.Layer, ex.Error = ce.Layer, ce.Err.Error()
			return ex, ce
		}
		ex.Passthrough = true
		return ex, nil
	}
	creq := httpRequest(req)
	if rpc {
		creq = core.Request{Path: req.URL.Path, Method: http.MethodPost, Header: rpcMetadata(req.Header), RPC: true,
			Replayable: true, Idempotent: true}
	}
	rt := d.Lookup(&creq)
	if rt == nil {
		what := req.Method + " " + req.URL.Path
		if rpc {
			what = "RPC " + req.URL.Path
		}
		ce := &CallError{Layer: LayerRoute, Service: name, PolicyVersion: d.Version,
			Err: fmt.Errorf("no route of service %q matches %s", name, what)}
		ex.Layer, ex.Error = ce.Layer, ce.Err.Error()
		return ex, ce
	}
	eff := rt.Eff
	ex.Route = rt.Name
	ex.Timeout = eff.Timeout
	ex.PerTryTimeout = eff.PerTryTimeout
	ex.Attempts = rt.MaxAttempts(&creq)
	if eff.Attempts > 1 {
		ex.RetryOn = eff.RetryOn
	}
	ex.LoadBalancer = eff.LoadBalancer
	ex.TLS = core.TLSMode(eff)
	if rpc {
		ex.TLS = d.TLS
	}
	if rs := st.policy.Services[name]; rs != nil {
		ex.Concurrency = concurrencyState(d, rs.Concurrency)
		ex.RateLimit = rs.RateLimit
		if _, local := m.plane.(*localPlane); local {
			ex.Authorization = m.explainAuthz(rs, &creq, req)
		}
	}
	ex.Hedge, ex.Fault = eff.Hedge, eff.Fault
	// Without a breaker the circuit is, in effect, always closed.
	ex.Breaker = "closed"
	if rt.Breaker != nil {
		ex.HasBreaker = true
		ex.Breaker = rt.Breaker.State()
	}
	now := m.clock.Now()
	var pools []*core.Pool
	if len(rt.Split) == 0 {
		pools = []*core.Pool{rt.All}
	}
	for _, e := range rt.Split {
		ex.Split = append(ex.Split, WeightedSubset{Subset: e.Subset, Weight: e.Weight})
		if e.Weight > 0 {
			pools = append(pools, e.Pool)
		}
	}
	ex.Hosts = hostStates(pools, now)
	for _, h := range ex.Hosts {
		if h.Ejected {
			ex.Endpoints = append(ex.Endpoints, h.Address+" (ejected)")
		} else {
			ex.Endpoints = append(ex.Endpoints, h.Address)
		}
	}
	if len(ex.Hosts) == 0 {
		ce := &CallError{Layer: LayerDiscovery, Service: name, Route: rt.Name, PolicyVersion: d.Version,
			Err: core.NoEndpoints(name, "")}
		ex.Layer, ex.Error = ce.Layer, ce.Err.Error()
		return ex, ce
	}
	return ex, nil
}

// explainAuthz says what the authorization block of rs decides for this
// mesh's service calling creq (req as sent: its path as spelled).
func (m *Mesh) explainAuthz(rs *policy.ResolvedService, creq *core.Request, req *http.Request) string {
	if !rs.HasAuthorization {
		return "no authorization block: every caller of the trust domain"
	}
	path := req.URL.EscapedPath()
	if req.URL.RawPath != "" {
		path = req.URL.RawPath
	}
	method := creq.Method
	if method == "" {
		method = http.MethodGet
	}
	az := identity.NewAuthorizer(rs.Authorization)
	d := az.Authorize(m.cfg.service, method, path)
	out := "allowed by " + d.Name
	if !d.Allow {
		out = "denied by " + d.Name + " (" + d.Reason + ")"
		if az.Audit() {
			out += " (mode audit: logged, let through)"
		}
	}
	return out
}

// concurrencyState is the concurrency limit c of d, nil when c is.
func concurrencyState(d *core.Destination, c *policy.Concurrency) *ConcurrencyState {
	if c == nil {
		return nil
	}
	cs := &ConcurrencyState{Max: c.Max, Adaptive: c.Adaptive, MaxWait: c.MaxWait}
	if l := d.Limiter; l != nil {
		cs.Limit, cs.InFlight, cs.Waiting = l.Limit(), l.InFlight(), l.Waiting()
	}
	cs.Shed = d.Shed.Load()
	return cs
}

// hostStates lists the hosts of pools once each, in address order, with the
// subsets that hold them.
func hostStates(pools []*core.Pool, now time.Time) []EndpointState {
	idx := map[*discovery.Host]int{}
	var out []EndpointState
	for _, p := range pools {
		for _, h := range p.Hosts {
			i, ok := idx[h]
			if !ok {
				i = len(out)
				idx[h] = i
				out = append(out, hostState(h, now))
			}
			if p.Subset != "" {
				out[i].Subsets = append(out[i].Subsets, p.Subset)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out
}

func hostState(h *discovery.Host, now time.Time) EndpointState {
	s := EndpointState{Address: h.Address, Labels: h.Labels, InFlight: h.InFlight()}
	if hh := core.Health(h); hh != nil && !hh.Available(now) {
		s.Ejected = true
		until := hh.EjectedUntil()
		s.EjectedUntil = &until
	}
	return s
}
